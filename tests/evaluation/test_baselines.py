"""Baselines: log-mel statistics on real clips, the cache, majority and logistic regression."""

import os
import re

import numpy as np
import pytest
import soundfile

from pump_keras.audio.wavfile import write_wav
from pump_keras.config import FeatureConfig, SyntheticConfig
from pump_keras.data.index import ClipRecord, index_dataset
from pump_keras.data.split import split_records
from pump_keras.data.synthetic import generate_dataset
from pump_keras.evaluation import baselines
from pump_keras.evaluation.metrics import partial_auc, roc_auc
from tests.conftest import DCASE_DIR, MIMII_DIR, real_wav_files

SMALL = FeatureConfig(kind="mel", n_mels=32)


def first_wav(folder):
    return sorted(folder.rglob("*.wav"))[0]


@pytest.mark.parametrize("path", real_wav_files(), ids=lambda p: p.name)
def test_statistics_on_real_clips_have_two_values_per_band(path):
    features = baselines.clip_logmel_statistics(path, SMALL)
    assert features.shape == (2 * SMALL.n_mels,)
    assert np.isfinite(features).all()
    means, stds = features[:SMALL.n_mels], features[SMALL.n_mels:]
    assert (stds > 0).all()  # real audio varies over time in every band
    assert -120 < means.min() and means.max() < 40  # dB re full scale, not raw power


def test_real_clips_cover_mimii_extensible_and_dcase_mono():
    channels = {soundfile.info(str(p)).channels for p in real_wav_files()}
    assert {1, 8} <= channels
    assert soundfile.info(str(first_wav(MIMII_DIR))).channels == 8
    assert soundfile.info(str(first_wav(DCASE_DIR))).channels == 1


def test_statistics_match_the_training_mel_feature():
    """Same microphone, scaling and log-mel as the CNN's in-graph `mel` feature."""
    import tensorflow as tf

    from pump_keras.audio.features import compute_feature, wav_bytes_to_waveform

    path = str(first_wav(MIMII_DIR))
    config = FeatureConfig(kind="mel", channel=3, n_mels=32)
    waveform = wav_bytes_to_waveform(tf.io.read_file(path), config)
    log_mel = compute_feature(waveform, config).numpy()  # [frames, n_mels]
    expected = np.concatenate([log_mel.mean(axis=0), log_mel.std(axis=0)])
    np.testing.assert_allclose(baselines.clip_logmel_statistics(path, config), expected, atol=0.02)


def test_channel_choice_matters_on_mimii():
    path = first_wav(MIMII_DIR)
    first = baselines.clip_logmel_statistics(path, SMALL)
    mean = baselines.clip_logmel_statistics(path, FeatureConfig(kind="mel", n_mels=32, channel="mean"))
    other = baselines.clip_logmel_statistics(path, FeatureConfig(kind="mel", n_mels=32, channel=5))
    assert np.abs(first - mean).max() > 0.5
    assert np.abs(first - other).max() > 0.1


def test_mean_of_a_mono_clip_is_its_only_channel():
    path = first_wav(DCASE_DIR)
    mean = baselines.clip_logmel_statistics(path, FeatureConfig(kind="mel", n_mels=32, channel="mean"))
    np.testing.assert_allclose(mean, baselines.clip_logmel_statistics(path, SMALL), atol=1e-4)


def test_missing_channel_is_an_error_naming_the_file():
    path = first_wav(DCASE_DIR)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*1 channel"):
        baselines.clip_logmel_statistics(path, FeatureConfig(channel=1))


def test_wrong_sample_rate_is_an_error_naming_the_file():
    path = first_wav(MIMII_DIR)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*16000 Hz.*22050 Hz"):
        baselines.clip_logmel_statistics(path, FeatureConfig(sample_rate=22050))


def test_non_finite_samples_are_an_error_naming_the_file(tmp_path):
    samples = np.zeros((4096, 2), np.float32)
    samples[5, 1] = np.nan
    path = tmp_path / "nan.wav"
    soundfile.write(str(path), samples, 16000, subtype="FLOAT")
    with pytest.raises(ValueError, match=re.escape(str(path)) + r": non-finite samples \(NaN or Inf\)"):
        baselines.read_channel(path, 0)


@pytest.mark.parametrize("bits", [24, 40, 64])
def test_channels_are_read_as_the_training_pipeline_reads_them(bits, tmp_path):
    import tensorflow as tf

    from pump_keras.audio.decode import decode_wav
    from tests.wav_bytes import make_wav

    values = np.random.default_rng(bits).integers(-2**(bits - 1), 2**(bits - 1), (3000, 3), dtype=np.int64)
    contents = make_wav(values, bits=bits)
    path = tmp_path / "x.wav"
    path.write_bytes(contents)
    for channel in (2, "mean"):
        expected, _ = decode_wav(tf.constant(contents), channel=channel)
        waveform, rate = baselines.read_channel(path, channel)
        assert rate == 16000
        np.testing.assert_array_equal(waveform, expected.numpy()[:, 0])


def test_clip_shorter_than_one_stft_frame_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "short.wav"
    write_wav(str(path), np.ones((1000, 1), np.int16), 16000)
    with pytest.raises(ValueError, match=re.escape(str(path)) + r": clip of 1000 samples is shorter "
                                         r"than one STFT frame \(n_fft 1024\)"):
        baselines.clip_logmel_statistics(path, SMALL)


# --- the feature cache

def noise_clip(path, seed, scale=3000):
    samples = np.random.default_rng(seed).normal(0, scale, size=(4000, 2))
    write_wav(str(path), samples.astype(np.int16), 16000)


@pytest.fixture
def noise_records(tmp_path):
    records = []
    for i in range(3):
        path = tmp_path / "clips" / f"{i}.wav"
        noise_clip(path, seed=i)
        records.append(ClipRecord(str(path), i % 2, "pump", "00", None, f"clip{i}"))
    return records


@pytest.fixture
def counted(monkeypatch):
    """Counts calls of the per-clip feature function."""
    calls = []
    original = baselines.clip_logmel_statistics

    def counting(path, feature_config):
        calls.append(os.fspath(path))
        return original(path, feature_config)

    monkeypatch.setattr(baselines, "clip_logmel_statistics", counting)
    return calls


def test_features_stack_in_record_order(noise_records):
    stacked = baselines.logmel_features(noise_records, SMALL)
    assert stacked.shape == (3, 2 * SMALL.n_mels)
    for row, record in zip(stacked, noise_records):
        np.testing.assert_array_equal(row, baselines.clip_logmel_statistics(record.path, SMALL))
    assert baselines.logmel_features([], SMALL).shape == (0, 2 * SMALL.n_mels)


def test_cache_is_reused_when_nothing_changed(noise_records, counted, tmp_path):
    cache = tmp_path / "cache" / "train.npz"
    first = baselines.logmel_features(noise_records, SMALL, cache)
    assert len(counted) == 3 and cache.exists()
    again = baselines.logmel_features(noise_records, SMALL, cache)
    assert len(counted) == 3
    np.testing.assert_array_equal(again, first)
    assert [p.name for p in cache.parent.iterdir()] == ["train.npz"]  # no temporary left


def test_cache_is_recomputed_when_a_file_changes(noise_records, counted, tmp_path):
    cache = tmp_path / "train.npz"
    first = baselines.logmel_features(noise_records, SMALL, cache)
    changed = noise_records[1].path
    noise_clip(changed, seed=1, scale=300)  # same size, 20 dB quieter
    stat = os.stat(changed)
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    second = baselines.logmel_features(noise_records, SMALL, cache)
    assert len(counted) == 6
    np.testing.assert_array_equal(second[[0, 2]], first[[0, 2]])
    assert second[1, :SMALL.n_mels].mean() < first[1, :SMALL.n_mels].mean() - 15


def test_cache_is_recomputed_for_other_settings_or_records(noise_records, counted, tmp_path):
    cache = tmp_path / "train.npz"
    baselines.logmel_features(noise_records, SMALL, cache)
    other = baselines.logmel_features(noise_records, FeatureConfig(n_mels=16), cache)
    assert len(counted) == 6 and other.shape == (3, 32)
    baselines.logmel_features(noise_records, FeatureConfig(n_mels=16, channel="mean"), cache)
    assert len(counted) == 9
    baselines.logmel_features(noise_records[:2], FeatureConfig(n_mels=16, channel="mean"), cache)
    assert len(counted) == 11


def test_unreadable_cache_is_recomputed(noise_records, counted, tmp_path):
    cache = tmp_path / "train.npz"
    cache.write_bytes(b"not an npz")
    features = baselines.logmel_features(noise_records, SMALL, cache)
    assert len(counted) == 3
    np.testing.assert_array_equal(baselines.logmel_features(noise_records, SMALL, cache), features)
    assert len(counted) == 3


# --- the baselines

def test_majority_scores_are_the_constant_majority_label():
    labels = np.array([0] * 8 + [1] * 2)
    scores = baselines.majority_baseline(labels, 5)
    np.testing.assert_array_equal(scores, np.zeros(5))
    np.testing.assert_array_equal(baselines.majority_baseline([1, 1, 0], 3), np.ones(3))
    np.testing.assert_array_equal(baselines.majority_baseline([0, 1], 2), np.zeros(2))
    test_labels = np.array([0, 0, 0, 1, 1])
    assert roc_auc(test_labels, scores) == 0.5
    assert partial_auc(test_labels, scores, max_fpr=0.1) == pytest.approx(0.05)
    predicted = scores >= baselines.MAJORITY_THRESHOLD
    assert not predicted.any()  # everyone "normal": accuracy = share of normal clips


def separable_problem(n, seed):
    """Abnormal clips (15 %) shifted 2 sd in three of 20 columns of very different scales."""
    scales = np.geomspace(0.1, 100, 20)
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.15).astype(int)
    features = rng.normal(size=(n, 20)) * scales
    features[:, [1, 9, 17]] += 2.0 * labels[:, None] * scales[[1, 9, 17]]
    return features, labels


def test_logistic_regression_separates_an_easy_problem():
    train_x, train_y = separable_problem(300, seed=0)
    test_x, test_y = separable_problem(200, seed=1)
    scores = baselines.logistic_regression_baseline(train_x, train_y, test_x)
    assert scores.shape == (200,)
    assert roc_auc(test_y, scores) > 0.9  # higher = more abnormal
    np.testing.assert_array_equal(
        scores, baselines.logistic_regression_baseline(train_x, train_y, test_x, seed=0))


def test_logistic_regression_needs_both_classes():
    with pytest.raises(ValueError, match="normal and abnormal"):
        baselines.logistic_regression_baseline(np.ones((4, 2)), [0, 0, 0, 0], np.ones((1, 2)))


@pytest.fixture(scope="module")
def synthetic_splits(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    generate_dataset(str(out), SyntheticConfig(
        clips_per_class=10, seconds=0.5, fault_boost_db=20, machine_ids=("00",)))
    return split_records(index_dataset(out))


def test_run_baselines_scores_align_with_the_splits(synthetic_splits, tmp_path):
    splits = synthetic_splits
    result = baselines.run_baselines(splits, SMALL, cache_dir=tmp_path / "cache")
    assert set(result) == {"majority", "logistic_regression", "logistic_regression_val"}
    assert result["majority"].shape == (len(splits["test"]),)
    assert result["logistic_regression"].shape == (len(splits["test"]),)
    assert result["logistic_regression_val"].shape == (len(splits["val"]),)
    assert sorted(os.listdir(tmp_path / "cache")) == ["logmel_test.npz", "logmel_train.npz",
                                                       "logmel_val.npz"]
    # Score k belongs to clip k: reversing a split reverses its scores.
    flipped = dict(splits, test=splits["test"][::-1], val=splits["val"][::-1])
    again = baselines.run_baselines(flipped, SMALL)
    np.testing.assert_allclose(again["logistic_regression"], result["logistic_regression"][::-1],
                               rtol=1e-6)
    np.testing.assert_allclose(again["logistic_regression_val"],
                               result["logistic_regression_val"][::-1], rtol=1e-6)
    # Boosted faults are easy: abnormal clips of val and test score above normal ones.
    labels = [r.label for r in splits["val"] + splits["test"]]
    scores = np.concatenate([result["logistic_regression_val"], result["logistic_regression"]])
    assert roc_auc(labels, scores) > 0.9


def test_run_baselines_can_evaluate_on_val(synthetic_splits):
    result = baselines.run_baselines(synthetic_splits, SMALL, eval_split="val")
    np.testing.assert_allclose(result["logistic_regression"], result["logistic_regression_val"])
    assert result["majority"].shape == (len(synthetic_splits["val"]),)
    with pytest.raises(ValueError, match="'holdout'"):
        baselines.run_baselines(synthetic_splits, SMALL, eval_split="holdout")


def test_normal_gaussian_baseline_scores_each_clip_against_its_own_machine():
    train = np.array([[0.0], [2.0], [10.0], [14.0]])
    machines = np.array(["pump/id_00", "pump/id_00", "pump/id_02", "pump/id_02"])
    scores = baselines.normal_gaussian_baseline(train, machines, np.array([[1.0], [12.0], [1.0]]),
                                                ["pump/id_00", "pump/id_02", "pump/id_02"])
    # id_00: mean 1, std 1 (+ the floor); id_02: mean 12, std 2. A clip of id_02 at id_00's mean is far off.
    np.testing.assert_allclose(scores[:2], [0.0, 0.0], atol=1e-9)
    assert scores[2] == pytest.approx((11.0 / 2.001) ** 2)
    with pytest.raises(ValueError, match="pump/id_04 has no training clip"):
        baselines.normal_gaussian_baseline(train, machines, np.array([[1.0]]), ["pump/id_04"])
