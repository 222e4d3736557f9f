"""Run directories: claiming, refusing another config, atomic files, checkpoint restore."""

import os

import keras
import numpy as np
import pytest

from pump_keras.config import config_to_json, preset, replace
from pump_keras.run_dir import RunDirectory, RunDirError, check_manifest_paths, config_differences
from pump_keras.training import recipe
from pump_keras.training.loop import TrainingError, check_splits, improves, restore_checkpoint


def config_in(path):
    return replace(preset("quick"), run_dir=str(path))


def test_claim_then_resume_then_refuse_another_config(tmp_path):
    run = RunDirectory(tmp_path / "run")
    config = config_in(run.path)
    assert run.claim(config) is False
    saved = open(run.file("config.json")).read()
    assert saved == config_to_json(config)
    # Display, export and allocator settings do not change a run's result.
    shown = replace(config, train=replace(config.train, verbose=0, cpu_allocator="default"),
                    export=replace(config.export, version=3))
    assert run.claim(shown) is True
    other = replace(config, train=replace(config.train, epochs=3))
    with pytest.raises(RunDirError, match=r"train.epochs: 60 -> 3"):
        run.claim(other)
    assert open(run.file("config.json")).read() == saved


def test_a_folder_with_foreign_files_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="not empty and holds no config.json"):
        RunDirectory(tmp_path).claim(config_in(tmp_path))
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_config_differences_lists_each_setting():
    config = preset("quick")
    network = replace(config.model.efficientnetv2_s, reduction=8)
    changed = replace(config, features=replace(config.features, image_size=96),
                      model=replace(config.model, efficientnetv2_s=network))
    assert config_differences(config, changed) == [
        "features.image_size: 128 -> 96", "model.efficientnetv2_s.reduction: 16 -> 8"]


def test_history_and_json_are_written_whole(tmp_path):
    run = RunDirectory(tmp_path)
    run.write_history([{"epoch": 1, "loss": 0.5, "val_loss": 0.7}, {"epoch": 2, "loss": 0.4, "val_loss": 0.6}])
    assert open(run.file("history.csv")).read().splitlines() == [
        "epoch,loss,val_loss", "1,0.5,0.7", "2,0.4,0.6"]
    run.write_json("state.json", {"epochs_completed": 2})
    assert run.read_state() == {"epochs_completed": 2}
    assert sorted(os.listdir(tmp_path)) == ["history.csv", "state.json"]


def tiny_model():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    recipe.compile_model(model, preset("quick").train, steps_per_epoch=1)
    return model


def test_restore_picks_the_checkpoint_matching_the_state(tmp_path):
    run = RunDirectory(tmp_path)
    model = tiny_model()
    x, y = np.ones((4, 3), "float32"), np.ones((4, 1), "float32")
    model.fit(x, y, epochs=1, verbose=0)          # 1 step
    run.save_model(model, RunDirectory.LAST)
    model.fit(x, y, epochs=1, verbose=0)          # 2 steps: written, but the state was not
    run.save_model(model, RunDirectory.LAST_PENDING)
    expected = [w.copy() for w in tiny_model().get_weights()]
    restored = tiny_model()
    restore_checkpoint(restored, run, iterations=1)
    assert int(restored.optimizer.iterations) == 1
    assert not any(np.array_equal(a, b) for a, b in zip(restored.get_weights(), expected))
    # The state recorded the pending epoch: the pending checkpoint is used and put in place.
    restore_checkpoint(restored, run, iterations=2)
    assert int(restored.optimizer.iterations) == 2 and not run.exists(RunDirectory.LAST_PENDING)
    with pytest.raises(TrainingError, match="no checkpoint matches the saved state"):
        restore_checkpoint(restored, run, iterations=5)


class Clip:
    def __init__(self, label):
        self.label = label


def test_splits_need_both_classes_and_a_full_batch():
    both = [Clip(0), Clip(1)]
    check_splits({"train": both * 4, "val": both}, batch_size=8)
    with pytest.raises(TrainingError, match="The val split has no abnormal clips"):
        check_splits({"train": both * 4, "val": [Clip(0)]}, batch_size=8)
    with pytest.raises(TrainingError, match="batch_size 16 is larger than the training split \\(8 clips\\)"):
        check_splits({"train": both * 4, "val": both}, batch_size=16)


def test_atomic_writes_get_the_usual_permissions(tmp_path):
    from pump_keras.files import atomic_write_bytes

    old = os.umask(0o022)
    try:
        atomic_write_bytes(str(tmp_path / "report.md"), b"# report\n")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "report.md").st_mode & 0o777 == 0o644
    assert os.listdir(tmp_path) == ["report.md"]


def test_checkpoint_rules_rank_epochs_as_documented():
    row = {"val_loss": 0.5, "val_auc": 0.8}
    assert improves(row, None, "val_loss") and improves(row, None, "val_auc")
    assert improves(row, 0.6, "val_loss") and not improves(row, 0.5, "val_loss")  # a tie keeps the earlier
    assert improves(row, 0.7, "val_auc") and not improves(row, 0.8, "val_auc")
    # "last" keeps every new epoch, however its validation figures compare.
    assert improves({"val_loss": 9.0, "val_auc": 0.1}, 3, "last")
    with pytest.raises(ValueError, match="checkpoint_metric"):
        replace(preset("quick").train, checkpoint_metric="best")


class Record:
    def __init__(self, path):
        self.path = str(path)


def test_a_manifest_may_only_list_files_inside_the_data_folder(tmp_path):
    data, elsewhere = tmp_path / "data", tmp_path / "disk2"
    elsewhere.mkdir()
    data.mkdir()
    (data / "linked").symlink_to(elsewhere)  # a data folder may link to another disk
    inside = {"train": [Record(data / "a.wav"), Record(data / "linked" / "b.wav")], "val": [], "test": []}
    check_manifest_paths(inside, str(data), "split.csv")
    check_manifest_paths({"train": [Record(elsewhere / "c.wav")]}, None, "split.csv")  # no folder to keep to
    for escaping in (data / ".." / "disk2" / "c.wav", elsewhere / "c.wav", tmp_path / "data2" / "d.wav"):
        with pytest.raises(RunDirError, match=r"split.csv lists .* \(val split\), which is outside the data folder"):
            check_manifest_paths({"train": inside["train"], "val": [Record(escaping)]}, str(data), "split.csv")


def test_the_normal_only_section_matters_to_normal_only_runs_only():
    supervised = preset("quick")
    knn = replace(supervised, normal_only=replace(supervised.normal_only, score="knn"))
    assert config_differences(knn, supervised) == []  # a supervised run of an older default still resumes
    normal_only = preset("normal_only")
    assert config_differences(replace(normal_only, normal_only=replace(normal_only.normal_only, score="knn")),
                              normal_only) == ["normal_only.score: 'knn' -> 'feature_gaussian'"]
