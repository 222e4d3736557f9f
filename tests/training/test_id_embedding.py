"""Our normal-only method: machine-id classes, ArcFace training, embedding scores, outputs, resume."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from pump_keras.cli import evaluate as evaluate_cli, train as train_cli
from pump_keras.config import SyntheticConfig, load_config, replace
from pump_keras.data.index import ClipRecord
from pump_keras.data.split import read_manifest
from pump_keras.deploy.export import export_run
from pump_keras.deploy.tflite import TFLiteScorer, image_for_file, write_tflite
from pump_keras.errors import ExportError, TrainingError
from pump_keras.evaluation.dcase_results import clip_names
from pump_keras.training import id_embedding
from pump_keras.training.loop import train

pytestmark = pytest.mark.slow


def small_config(tmp_path, *overrides):
    """The normal_only preset at test size: 64 x 32 images, 2 epochs, 1-second clips of two pumps."""
    config = load_config("normal_only", overrides=[
        "train.epochs=2", "train.verbose=0", "data.batch_size=8", "features.image_size=64", "features.image_width=32",
        "data.split_ratios=[0.5,0.3,0.2]", *overrides])
    return replace(config, run_dir=str(tmp_path / "run"),
                   synthetic=SyntheticConfig(clips_per_class=14, abnormal_clips_per_id=4, seconds=1.0,
                                             machine_ids=("00", "02"), channels=1))


def assert_served_decisions_are_the_runs(run, model_dir, machine="pump/id_02"):
    """Exports `machine`'s scorer and checks it flags each test clip exactly as the run's threshold does."""
    served = tf.saved_model.load(export_run(str(run), str(model_dir), machine=machine))
    threshold = json.loads((run / "threshold.json").read_text())["machines"][machine]["threshold_score"]
    rows = (run / "report" / "dcase" / f"anomaly_score_{machine.replace('/', '_')}.csv").read_text().splitlines()
    scores = {name: float(score) for name, score in (line.split(",") for line in rows)}
    test = sorted(r.path for r in read_manifest(run / "split.csv")["test"] if machine.endswith(r.machine_id))
    assert sorted(scores) == sorted(clip_names(test))
    for path, name in zip(test, clip_names(test)):
        outputs = served.signatures["serving_default"](wav_bytes=tf.constant([open(path, "rb").read()]))
        assert bool(outputs["is_anomaly"].numpy()[0]) == (scores[name] >= threshold), path
    return test


def test_run_scores_every_machine_writes_its_files_and_resumes(tmp_path):
    result = train(small_config(tmp_path, "normal_only.score=knn"), log=lambda line: None)
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["classes"] == ["pump/id_00", "pump/id_02"] and metrics["protocol"] == "normal_only"
    assert metrics["score"] == id_embedding.SCORE_NAMES["knn"]
    assert 0.0 <= metrics["test"]["auc"] <= 1.0 and set(metrics["test_per_machine_id"]) == set(metrics["classes"])
    assert set(json.loads((run / "threshold.json").read_text())["machines"]) == set(metrics["classes"])
    references = np.load(run / "reference_embeddings.npz")
    assert references["embeddings"].shape[1] == 128 and len(references["machines"]) == len(references["embeddings"])
    assert (run / "report" / "dcase" / "result.csv").read_text().startswith("pump\n")
    assert (run / "embedder.keras").exists() and not (run / "backup").exists()
    assert result.epochs_run == 2 and len((run / "history.csv").read_text().splitlines()) == 1 + 2
    lines = []
    again = train(small_config(tmp_path, "normal_only.score=knn"), log=lines.append)
    assert again.epochs_run == 0 and any("not trained again" in line for line in lines)
    assert again.metrics["test"] == pytest.approx(metrics["test"])

    # The SavedModel of one machine: WAV bytes in, flagged exactly where the run's threshold flags.
    with pytest.raises(ExportError, match="scores 2 machines .*set export.machine"):
        export_run(str(run), str(tmp_path / "saved"))
    test = assert_served_decisions_are_the_runs(run, tmp_path / "saved")
    # The same scorer as a float32 TFLite model (the edge): the same logits, up to float32 kernels (the
    # logit divides a distance by the small spread of normal distances, which magnifies their last bits).
    scorer, _ = id_embedding.machine_scorer(str(run), "pump/id_02")
    tflite_path = write_tflite(scorer, "float32", str(tmp_path / "scorer.tflite"))
    images = np.stack([image_for_file(path, small_config(tmp_path).features) for path in test[:3]])
    np.testing.assert_allclose(TFLiteScorer(tflite_path).logits(images),
                               keras.ops.convert_to_numpy(scorer(images)).reshape(-1), rtol=1e-2, atol=1e-2)


def test_feature_gaussian_score_exports_its_decisions_and_evaluates_per_machine(tmp_path, capsys):
    result = train(small_config(tmp_path, "train.epochs=1"), log=lambda line: None)  # the preset's score
    assert result.metrics["score"] == id_embedding.SCORE_NAMES["feature_gaussian"]
    statistics = np.load(tmp_path / "run" / "feature_statistics.npz")
    assert list(statistics["machines"]) == ["pump/id_00", "pump/id_02"]
    # The quick network at 64 rows: the stride-4 map has 16 rows and 24 channels; mean and std per (row, channel).
    assert statistics["mean"].shape == statistics["scale"].shape == (2, 2 * 16 * 24)
    assert_served_decisions_are_the_runs(tmp_path / "run", tmp_path / "saved", machine="pump/id_00")
    assert evaluate_cli.main(["--run-dir", str(tmp_path / "run"), "--bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    assert "normal-only run" in out and "pump/id_00" in out and "pump/id_02" in out
    report = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "(normal-only)" in report and "![roc_pump_id_02.png](roc_pump_id_02.png)" in report


def test_neg_log_prob_score_with_mixup_exports_its_decisions(tmp_path):
    result = train(small_config(tmp_path, "normal_only.score=neg_log_prob", "train.mixup_alpha=0.2", "train.epochs=1"),
                   log=lambda line: None)
    assert result.metrics["score"] == id_embedding.SCORE_NAMES["neg_log_prob"]
    assert np.isfinite(result.metrics["test"]["auc"])
    assert_served_decisions_are_the_runs(tmp_path / "run", tmp_path / "saved")


def test_real_dcase_clips_in_the_official_layout(tmp_path, real_dcase_dev_data):
    """The real DCASE 2020 clips (ids 04 and 06) in their official layout: a file-format check, not a measurement."""
    config = small_config(tmp_path, "train.epochs=1", "evaluation.threshold_criterion=fpr", "evaluation.target_fpr=0.1",
                          "data.split_ratios=[0.5,0.5,0.0]", f"data.data_dir={real_dcase_dev_data}")
    result = train(config, log=lambda line: None)
    assert result.metrics["classes"] == ["pump/id_04", "pump/id_06"]
    rows = (tmp_path / "run" / "report" / "dcase" / "anomaly_score_pump_id_06.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows] == [
        "anomaly_id_06_00000010.wav", "anomaly_id_06_00000013.wav", "normal_id_06_00000011.wav"]


def test_one_machine_cannot_be_told_apart(tmp_path):
    config = small_config(tmp_path)
    config = replace(config, synthetic=replace(config.synthetic, machine_ids=("00",)))
    with pytest.raises(TrainingError, match="needs at least two"):
        train(config, log=lambda line: None)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["synthetic"]  # nothing recorded


def test_knn_score_is_the_cosine_distance_to_the_nearest_references():
    references = np.array([[1.0, 0.0], [0.0, 1.0]])
    embeddings = np.array([[2.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])
    np.testing.assert_allclose(id_embedding.knn_scores(embeddings, references, k=1), [0.0, 1 - 2 ** -0.5, 1.0],
                               atol=1e-6)
    np.testing.assert_allclose(id_embedding.knn_scores(embeddings, references, k=5)[0], 0.5, atol=1e-6)


def test_neg_log_prob_sums_the_classes_of_the_clips_machine():
    names = ["pump/id_00/source/a", "pump/id_00/target/b", "pump/id_02"]
    logits = np.log(np.array([[0.2, 0.3, 0.5]]))
    np.testing.assert_allclose(id_embedding.neg_log_prob_scores(logits, names, ["pump/id_00"]), [-np.log(0.5)])


def test_class_names_with_attributes():
    record = ClipRecord(path="/x.wav", label=0, machine="pump", machine_id="01", snr_db=None, clip_key="k",
                        domain="target", attributes="vel_6", id_kind="section")
    assert id_embedding.class_name(record, "machine") == "pump/section_01"
    assert id_embedding.class_name(record, "machine_attributes") == "pump/section_01/target/vel_6"


def test_training_refuses_to_export_a_normal_only_run_without_a_machine(tmp_path, capsys):
    status = train_cli.main(["--preset", "normal_only", "--run-dir", str(tmp_path / "run"),
                             "--set", "export.enabled=true"])
    assert status == 2 and "serves one machine: set export.machine" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
