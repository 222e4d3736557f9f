"""The learning benchmark's set-up (`benchmarks/learning.py`): who trains on what, without training."""

import importlib.util
import os

import pytest

from pump_keras.config import SyntheticConfig, load_config, preset
from pump_keras.data.index import ClipRecord
from pump_keras.data.synthetic import FAULT_TYPES, draw_clip_params
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow  # trains models or runs commands end to end


@pytest.fixture(scope="module")
def learning():
    spec = importlib.util.spec_from_file_location("learning", os.path.join(REPO_ROOT, "benchmarks", "learning.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_plain_cnn_gets_ours_images_and_its_own_recipe(learning):
    user_set = ["features.image_width=64", "train.epochs=7", "train.learning_rate=0.01"]
    ours = load_config("quick", None, learning.network_overrides("ours", user_set, []))
    cnn = load_config("quick", None, learning.network_overrides("plain_cnn", user_set, []))
    se = load_config("quick", None, learning.network_overrides("se", user_set, []))
    assert cnn.features == ours.features and ours.features.image_width == 64
    assert cnn.model.name == "plain_cnn" and cnn.model.builder_options() == {"dropout_rate": 0.2}
    assert (se.model.efficientnetv2_s.attention, ours.model.efficientnetv2_s.attention) == ("se", "improved_cbam")
    assert (cnn.train.optimizer, cnn.train.mixup_alpha, cnn.train.label_smoothing) == ("adamw", 0.0, 0.0)
    assert cnn.train.pseudo_anomaly_fraction == 0.0 and cnn.train.weight_decay == 1e-4
    assert cnn.train.learning_rate == 0.001 < ours.train.learning_rate == 0.01  # its own, whatever ours is
    assert cnn.train.checkpoint_metric == ours.train.checkpoint_metric == "last"
    assert cnn.train.time_roll and ours.train.time_roll  # the free augmentation for both
    assert cnn.train.epochs == 60 and ours.train.epochs == se.train.epochs == 7  # --set reaches ours and se only


def test_recordings_and_split_are_the_quick_presets(learning):
    quick = preset("quick")
    assert learning.SPLIT_RATIOS == quick.data.split_ratios
    assert learning.SYNTHETIC["clips_per_class"] == quick.synthetic.clips_per_class
    assert learning.SYNTHETIC["abnormal_clips_per_id"] == quick.synthetic.abnormal_clips_per_id


def test_the_unseen_fault_split_holds_one_fault_type_out_of_training(learning, tmp_path):
    seed = 1
    config = SyntheticConfig(**learning.SYNTHETIC, seed=seed)
    records = []
    for machine_id in ("00", "02"):
        for label, count in ((0, 20), (1, 15)):
            folder = "abnormal" if label else "normal"
            records += [ClipRecord(path=str(tmp_path / machine_id / folder / f"{index:08d}.wav"), label=label,
                                   machine="pump", machine_id=machine_id, snr_db=0.0,
                                   clip_key=f"{machine_id}/{folder}/{index:08d}") for index in range(count)]
    splits, held_out = learning.unseen_fault_split(records, seed)
    assert held_out == FAULT_TYPES[seed % len(FAULT_TYPES)]

    def faults(name):
        return {draw_clip_params(r.machine_id, "abnormal", int(os.path.basename(r.path)[:8]), config).fault_type
                for r in splits[name] if r.label == 1}

    assert faults("test") == {held_out}
    assert held_out not in faults("train") | faults("val") and faults("train")
    assert {r.label for r in splits["test"]} == {0, 1}
    assert not {r.path for r in splits["test"]} & {r.path for name in ("train", "val") for r in splits[name]}


def test_the_margin_and_the_seeds_won_compare_ours_with_the_best_baseline(learning):
    def runs(*aucs):
        return [{"auc": auc, "pauc": auc / 2} for auc in aucs]

    result = {"ours": runs(0.9, 0.8, 0.7), "plain_cnn": runs(0.85, 0.85, 0.85), "logreg": runs(0.6, 0.95, 0.6)}
    assert learning.margin(result) == pytest.approx(0.8 - 0.85)
    assert learning.seeds_won(result) == (1, 3)  # against plain_cnn, the best mean
    text = learning.table({"snr0": result}, ["ours", "plain_cnn", "logreg"], ["snr0"])
    assert text.splitlines()[-1].endswith("| -0.050 | 1 of 3 |")
    assert learning.table({"snr0": result}, ["ours"], ["snr0"]).splitlines()[-1].endswith("| - | - |")
