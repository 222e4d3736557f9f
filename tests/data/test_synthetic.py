"""Tests of the synthetic MIMII-layout pump recordings."""

import collections
import os
import struct

import numpy as np
import pytest
from scipy.io import wavfile as scipy_wavfile

from pump_keras.audio.wavfile import WAVE_FORMAT_EXTENSIBLE, WAVE_FORMAT_PCM, read_wav_header
from pump_keras.cli import synthetic as synthetic_cli
from pump_keras.config import SyntheticConfig
from pump_keras.data import synthetic, synthetic_layouts
from pump_keras.data.index import index_dataset
from pump_keras.data.split import split_normal_only

SMALL = SyntheticConfig(clips_per_class=2, seconds=0.5, snr_db=(0.0, -6.0), seed=7)


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory):
    """The small config written once; (root, returned paths)."""
    root = tmp_path_factory.mktemp("synthetic")
    return str(root), synthetic.generate_dataset(str(root), SMALL)


def synthetic_config(**changes):
    """SMALL with `changes`."""
    fields = dict(clips_per_class=SMALL.clips_per_class, seconds=SMALL.seconds,
                  snr_db=SMALL.snr_db, seed=SMALL.seed, machine_ids=SMALL.machine_ids)
    fields.update(changes)
    return SyntheticConfig(**fields)


def _read(path):
    """(sample rate, int16 [frames, channels]) via scipy."""
    return scipy_wavfile.read(path)


def _bytes(path):
    with open(path, "rb") as f:
        return f.read()


def _all_files(root):
    found = []
    for folder, _, names in os.walk(root):
        found.extend(os.path.join(folder, n) for n in names)
    return sorted(found)


def test_layout_and_file_names(small_tree):
    root, paths = small_tree
    assert paths == sorted(paths)
    assert paths == _all_files(root)
    expected = {
        os.path.join(root, snr, "pump", f"id_{mid}", label, f"{i:08d}.wav")
        for snr in ("0_dB_pump", "-6_dB_pump")
        for mid in ("00", "02", "04", "06")
        for label in ("normal", "abnormal")
        for i in range(2)
    }
    assert set(paths) == expected
    assert len(paths) == 32
    assert sorted(os.listdir(root)) == ["-6_dB_pump", "0_dB_pump"]


def test_snr_folder_names():
    assert synthetic.snr_folder_name(0) == "0_dB_pump"
    assert synthetic.snr_folder_name(-0.0) == "0_dB_pump"
    assert synthetic.snr_folder_name(6.0) == "6_dB_pump"
    assert synthetic.snr_folder_name(-6) == "-6_dB_pump"
    assert synthetic.snr_folder_name(2.5) == "2.5_dB_pump"


def test_files_are_mimii_style_extensible(small_tree):
    _, paths = small_tree
    frames = synthetic.clip_frames(SMALL)
    for path in paths[:3]:
        raw = _bytes(path)
        assert raw[:4] == b"RIFF" and raw[8:12] == b"WAVE"
        assert struct.unpack("<I", raw[4:8])[0] == len(raw) - 8
        assert raw[12:16] == b"fmt " and struct.unpack("<I", raw[16:20])[0] == 40
        tag, channels, rate, byte_rate, align, bits = struct.unpack("<HHIIHH", raw[20:36])
        assert (tag, channels, rate, bits, align) == (WAVE_FORMAT_EXTENSIBLE, 8, 16000, 16, 16)
        assert byte_rate == 16000 * 16
        assert struct.unpack("<H", raw[44:46])[0] == WAVE_FORMAT_PCM
        assert raw[60:64] == b"fact" and struct.unpack("<II", raw[64:72]) == (4, frames)
        assert raw[72:76] == b"data" and struct.unpack("<I", raw[76:80])[0] == frames * 16
        header = read_wav_header(path)
        assert (header.channels, header.sample_rate, header.frames) == (8, 16000, frames)


def test_read_back_equals_synthesis(small_tree):
    root, _ = small_tree
    for snr, mid, label, index in [(0.0, "00", "normal", 0), (-6.0, "04", "abnormal", 1)]:
        rate, data = _read(synthetic.clip_path(root, snr, mid, label, index))
        clip = synthetic.synthesize_clip(mid, label, index, SMALL, snr)
        assert rate == 16000 and data.dtype == np.int16
        assert clip.dtype == np.float32 and clip.shape == (8000, 8)
        np.testing.assert_array_equal(data, synthetic.to_int16(clip))


def test_deterministic_and_seed_dependent(small_tree, tmp_path):
    root, paths = small_tree
    again = synthetic.generate_dataset(str(tmp_path / "again"), SMALL)
    other = synthetic.generate_dataset(str(tmp_path / "other"), synthetic_config(seed=8))
    for a, b, c in zip(paths, again, other):
        assert os.path.relpath(a, root) == os.path.relpath(b, tmp_path / "again")
        assert _bytes(a) == _bytes(b)
        assert _bytes(a) != _bytes(c)
    # Rewriting into an existing tree leaves it byte-identical.
    before = {p: _bytes(p) for p in paths}
    assert synthetic.generate_dataset(root, SMALL) == paths
    assert {p: _bytes(p) for p in paths} == before


def test_same_recording_across_snr_folders(small_tree):
    root, _ = small_tree
    key = ("02", "abnormal", 1)
    x0 = _read(synthetic.clip_path(root, 0.0, *key))[1].astype(np.float64)
    x6 = _read(synthetic.clip_path(root, -6.0, *key))[1].astype(np.float64)
    other = _read(synthetic.clip_path(root, 0.0, "02", "abnormal", 0))[1].astype(np.float64)
    assert np.corrcoef(x0.ravel(), x6.ravel())[0, 1] > 0.9
    assert abs(np.corrcoef(x0.ravel(), other.ravel())[0, 1]) < 0.5

    # The files are pump + g * background: recover both and measure the SNR,
    # the folder's nominal SNR plus this recording's own offset.
    offset = synthetic.draw_clip_params(*key, SMALL).snr_offset_db
    assert abs(offset) <= synthetic.BACKGROUND.snr_jitter_db
    g = 10.0 ** (6.0 / 20.0)
    background = (x6 - x0) / (g - 1.0)
    pump = x0 - background
    measured = 10 * np.log10(np.mean(pump ** 2) / np.mean(background ** 2))
    assert abs(measured - (0.0 + offset)) < 0.5

    for snr in (0.0, -6.0, 6.0):
        pump, background = synthetic.synthesize_parts(*key, SMALL, snr)
        measured = 10 * np.log10(np.mean(pump.astype(np.float64) ** 2)
                                 / np.mean(background.astype(np.float64) ** 2))
        assert abs(measured - (snr + offset)) < 0.05
    offsets = [synthetic.draw_clip_params("00", "normal", i, SMALL).snr_offset_db for i in range(20)]
    assert np.ptp(offsets) > synthetic.BACKGROUND.snr_jitter_db  # recordings differ
    pump_0, _ = synthetic.synthesize_parts(*key, SMALL, 0.0)
    pump_6, _ = synthetic.synthesize_parts(*key, SMALL, -6.0)
    np.testing.assert_array_equal(pump_0, pump_6)


def test_cli_writes_the_tree(tmp_path, capsys):
    out = tmp_path / "cli"
    code = synthetic_cli.main(["--out", str(out), "--clips-per-class", "1", "--seconds", "0.25",
                           "--snr-db", "6", "-6", "--seed", "3", "--machine-ids", "00", "4"])
    assert code == 0
    files = _all_files(out)
    assert len(files) == 8
    assert os.path.join(str(out), "6_dB_pump", "pump", "id_04", "abnormal", "00000000.wav") in files
    assert os.path.join(str(out), "-6_dB_pump", "pump", "id_00", "normal", "00000000.wav") in files
    *progress, line = capsys.readouterr().out.strip().splitlines()
    assert "8 files" in line and str(out) in line
    assert [p.split(" (")[0] for p in progress] == [  # one progress line per machine id
        "Synthetic recordings: id_00 done, 4/8 files", "Synthetic recordings: id_04 done, 8/8 files"]
    with pytest.raises(SystemExit):
        synthetic_cli.main(["--out", str(out), "--machine-ids", "01"])


def test_invalid_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="Unknown machine ids"):
        synthetic.generate_dataset(str(tmp_path), synthetic_config(machine_ids=("01",)))
    with pytest.raises(ValueError, match="duplicates"):
        synthetic.generate_dataset(str(tmp_path), synthetic_config(snr_db=(0.0, -0.0)))
    with pytest.raises(ValueError, match="seconds"):
        synthetic.generate_dataset(str(tmp_path), synthetic_config(seconds=0.001))
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        synthetic.generate_dataset(str(a_file), SMALL)
    with pytest.raises(ValueError, match="label"):
        synthetic.synthesize_clip("00", "broken", 0, SMALL, 0.0)
    assert _all_files(tmp_path) == [str(a_file)]


def test_faults_and_normal_variation():
    config = synthetic_config(seconds=1.0)
    abnormal = [synthetic.draw_clip_params("00", "abnormal", i, config) for i in range(40)]
    normal = [synthetic.draw_clip_params("00", "normal", i, config) for i in range(10)]
    assert {p.fault_type for p in abnormal} == set(synthetic.FAULT_TYPES)
    for p in abnormal:
        low, high = synthetic.FAULT_SEVERITY[p.fault_type]
        assert low <= p.severity <= high
    assert all(p.fault_type is None and p.severity is None for p in normal)
    nominal = synthetic.PUMPS["00"].shaft_hz
    speeds = np.array([p.shaft_hz for p in normal])
    assert np.all(np.abs(speeds / nominal - 1) <= synthetic.NORMAL_VARIATION.speed_jitter)
    assert np.ptp(speeds) > 0
    assert synthetic.draw_clip_params("00", "abnormal", 3, config) == abnormal[3]
    # Faults never change the loudness: the pump sits at its drawn level.
    for label, index in (("normal", 0), ("abnormal", 0), ("abnormal", 1)):
        params = synthetic.draw_clip_params("06", label, index, config)
        pump, _ = synthetic.synthesize_parts("06", label, index, config, 0.0)
        rms_db = 10 * np.log10(np.mean(pump.astype(np.float64) ** 2))
        assert abs(rms_db - params.level_dbfs) < 0.01


def test_no_clipping(small_tree):
    _, paths = small_tree
    peaks = [np.abs(_read(p)[1].astype(np.int32)).max() for p in paths]
    assert max(peaks) < 32767 / 2  # below -6 dBFS
    ceiling = 10.0 ** (synthetic.LEVELS.peak_ceiling_dbfs / 20.0)
    loud = synthetic.synthesize_clip("00", "abnormal", 0, SMALL, -30.0)
    assert np.abs(loud).max() <= ceiling * (1 + 1e-6)
    assert np.abs(synthetic.to_int16(loud).astype(np.int32)).max() < 32767


def test_pumps_differ_in_level_and_clips_in_count():
    config = synthetic_config(seconds=0.5, abnormal_clips_per_id=1, clips_per_class=3)
    levels = {mid: np.mean([synthetic.draw_clip_params(mid, "normal", i, config).level_dbfs for i in range(3)])
              for mid in ("02", "04")}
    assert levels["02"] - levels["04"] > 4.0  # +5 dB against -4 dB, jitter +-3 dB
    assert synthetic.clips_of_class(config, "normal") == 3
    assert synthetic.clips_of_class(config, "abnormal") == 1
    assert synthetic.clips_of_class(synthetic_config(), "abnormal") == synthetic_config().clips_per_class


def test_ten_second_clip_shape():
    config = synthetic_config(seconds=10.0)
    clip = synthetic.synthesize_clip("04", "abnormal", 2, config, 6.0)
    assert clip.shape == (160000, 8) and clip.dtype == np.float32
    assert np.all(np.isfinite(clip))


def _auc(labels, scores):
    """Area under the ROC curve (Mann-Whitney, ties counted half)."""
    labels, scores = np.asarray(labels, bool), np.asarray(scores, float)
    pos, neg = scores[labels], scores[~labels]
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return greater / (pos.size * neg.size)


def test_abnormal_is_learnable_but_loudness_is_not_enough():
    librosa = pytest.importorskip("librosa")
    sklearn_lm = pytest.importorskip("sklearn.linear_model")
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    config = SyntheticConfig(clips_per_class=20, seconds=1.0, machine_ids=("00", "02"), seed=0)
    features, labels, rms = [], [], []
    for mid in config.machine_ids:
        for label in synthetic.LABELS:
            for index in range(config.clips_per_class):
                x = synthetic.synthesize_clip(mid, label, index, config, 0.0)[:, 0]
                mel = librosa.feature.melspectrogram(y=x, sr=16000, n_fft=1024, hop_length=512, n_mels=64)
                features.append(np.log(mel + 1e-10).mean(axis=1))
                labels.append(label == "abnormal")
                rms.append(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    model = make_pipeline(StandardScaler(), sklearn_lm.LogisticRegression(C=0.1, max_iter=2000))
    scores = cross_val_predict(model, np.array(features), np.array(labels),
                               cv=StratifiedKFold(5, shuffle=True, random_state=0),
                               method="decision_function")
    # Default-strength faults under a varying background: learnable, not easy.
    assert _auc(labels, scores) > 0.65
    assert abs(_auc(labels, rms) - 0.5) < 0.25


def test_dcase2020_tree_keeps_anomalies_out_of_train(tmp_path):
    config = SyntheticConfig(clips_per_class=8, abnormal_clips_per_id=3, seconds=0.25, machine_ids=("00", "02"),
                             layout="dcase2020")
    paths = synthetic.generate_dataset(str(tmp_path), config)
    records = index_dataset(tmp_path)
    assert len(paths) == len(records) == 2 * (8 + 3)
    counts = collections.Counter((r.subset, r.label) for r in records)
    assert counts == {("train", 0): 2 * 5, ("test", 0): 2 * 3, ("test", 1): 2 * 3}
    assert {read_wav_header(p).channels for p in paths} == {1}
    assert os.path.relpath(paths[0], tmp_path) == os.path.join("dev_data", "pump", "test",
                                                               "anomaly_id_00_00000000.wav")


def test_dcase2021_tree_has_a_speed_shifted_target_domain(tmp_path):
    config = SyntheticConfig(clips_per_class=8, abnormal_clips_per_id=3, seconds=0.25, machine_ids=("00", "02"),
                             layout="dcase2021", target_speed_shift=0.2, target_train_clips=2)
    synthetic.generate_dataset(str(tmp_path), config)
    records = index_dataset(tmp_path)
    counts = collections.Counter((r.machine_id, r.subset, r.domain, r.label) for r in records)
    assert counts[("01", "train", "source", 0)] == 5 and counts[("01", "train", "target", 0)] == 2
    assert counts[("01", "test", "target", 1)] == 3 and counts[("00", "test", "source", 0)] == 3
    assert {r.attributes for r in records if r.domain == "target"} == {"speed_1.20"}
    factors = {job.speed_factor for job in synthetic_layouts.dcase2021_jobs(str(tmp_path), config)}
    assert factors == {1.0, 1.2}
    # The target pump is another recording, and its shaft runs 20 % faster.
    source = synthetic.draw_clip_params("00", "normal", 0, config)
    target = synthetic.draw_clip_params("00", "normal", synthetic_layouts.TARGET_INDEX_OFFSET, config)
    assert source.shaft_hz != target.shaft_hz
    splits = split_normal_only(records, (0.8, 0.2, 0.0))
    assert {r.domain for r in splits["test"]} == {"source", "target"} and {r.label for r in splits["train"]} == {0}


@pytest.mark.parametrize("options, pattern", [({"layout": "dcase2023"}, "layout must be one of"),
                                              ({"layout": "dcase2020", "snr_db": (0.0, 6.0)}, "give one snr_db")])
def test_dcase_layout_settings_are_checked(options, pattern):
    with pytest.raises(ValueError, match=pattern):
        SyntheticConfig(**options)


def test_cli_writes_a_dcase_tree(tmp_path, capsys):
    assert synthetic_cli.main(["--out", str(tmp_path), "--clips-per-class", "4", "--seconds", "0.25",
                               "--machine-ids", "00", "--layout", "dcase2021"]) == 0
    assert (tmp_path / "dcase2021" / "pump" / "target_test").is_dir()
