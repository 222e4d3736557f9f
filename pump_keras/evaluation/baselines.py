"""Baselines every evaluation report shows beside the CNN, on the same split.

`majority`
    Predicts the training split's majority class for every clip. On MIMII
    pump (~11 % abnormal) that is "normal" and scores ~0.89 accuracy, the
    floor any detector must clear.
`logistic_regression`
    A standardised, class-balanced logistic regression on per-clip log-mel
    statistics (the mean and standard deviation of each mel band over time).
    On real MIMII pump at -6 dB it reaches ~0.97 AUC: a CNN has to beat it.

Clips are decoded as the training pipeline decodes them (`read_channel`),
and features are computed on the host with librosa from the same
microphone (`FeatureConfig.channel`) and the same log-mel power as the
CNN's `mel` feature: Slaney mel filters, centred periodic-Hann STFT,
`10 log10(max(M, 1e-10))` referenced to full scale, no `top_db` clipping.
Scores follow `pump_keras.evaluation.metrics`: higher means more abnormal.
"""

from __future__ import annotations

import io
import json
import os
import time
import zipfile
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import librosa
import numpy as np
import tensorflow as tf
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from pump_keras.audio.decode import decode_samples, decoder_name
from pump_keras.audio.wavfile import read_wav_header
from pump_keras.config import FeatureConfig
from pump_keras.data.index import ClipRecord
from pump_keras.errors import WavFormatError
from pump_keras.files import atomic_write_bytes
from pump_keras.layers.feature_statistics import machine_distances, machine_statistics

# Bump when `clip_logmel_statistics` changes, so old caches are not reused.
FEATURE_VERSION = "logmel-mean-std-1"
# Majority scores are the predicted label (0.0 normal, 1.0 abnormal); threshold
# them at 0.5. A threshold chosen on validation means nothing for a constant
# score: `metrics.best_threshold` returns that score, which flags every clip.
MAJORITY_THRESHOLD = 0.5
LOGISTIC_MAX_ITER = 2000


def read_channel(path, channel) -> Tuple[np.ndarray, int]:
    """`(waveform, sample_rate)`: one microphone (int) or the mean of all ("mean").

    Decoded as the training pipeline decodes (header read here, samples by
    `pump_keras.audio.decode.decode_samples`), so every encoding it reads is read
    here, scaled alike. Raises `WavFormatError` naming the file for what it
    refuses, NaN or Inf samples included.
    """
    header = read_wav_header(path)
    if channel != "mean" and not 0 <= int(channel) < header.channels:
        raise ValueError(
            f"{path}: channel {channel} requested but the file has {header.channels} channel(s).")
    with open(path, "rb") as f:
        contents = tf.constant(f.read())
    try:
        audio = decode_samples(
            contents, header.data_offset, header.frames * header.block_align, header.channels,
            decoder_name(header), channel if channel == "mean" else int(channel))
    except tf.errors.InvalidArgumentError as error:  # the one check decode_samples makes
        raise WavFormatError(
            f"{path}: non-finite samples (NaN or Inf); the recording is corrupt.") from error
    return audio.numpy()[:, 0], header.sample_rate


def clip_logmel_statistics(path, feature_config: FeatureConfig) -> np.ndarray:
    """Per-band mean then standard deviation over time of a clip's log-mel power, `[2 * n_mels]`."""
    waveform, sample_rate = read_channel(path, feature_config.channel)
    if sample_rate != feature_config.sample_rate:
        raise ValueError(
            f"{path}: sample rate {sample_rate} Hz, but the features expect "
            f"{feature_config.sample_rate} Hz (resample the data or set FeatureConfig.sample_rate).")
    if len(waveform) < feature_config.n_fft:
        raise ValueError(
            f"{path}: clip of {len(waveform)} samples is shorter than one STFT frame "
            f"(n_fft {feature_config.n_fft}).")
    mel = librosa.feature.melspectrogram(
        y=waveform, sr=sample_rate, n_fft=feature_config.n_fft,
        hop_length=feature_config.hop_length, n_mels=feature_config.n_mels)
    log_mel = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)
    return np.concatenate([log_mel.mean(axis=1), log_mel.std(axis=1)]).astype(np.float32)


def _cache_key(records: Sequence[ClipRecord], feature_config: FeatureConfig) -> str:
    """What the features depend on: files (path, size, mtime) and settings, as JSON."""
    files = []
    for record in records:
        stat = os.stat(record.path)
        files.append([os.fspath(record.path), stat.st_size, stat.st_mtime_ns])
    settings = {name: getattr(feature_config, name)
                for name in ("sample_rate", "channel", "n_fft", "hop_length", "n_mels")}
    return json.dumps({"version": FEATURE_VERSION, "settings": settings, "files": files})


def _load_cache(cache_path, key: str) -> Optional[np.ndarray]:
    """The cached features when `cache_path` holds them for `key`, else None."""
    try:
        with np.load(cache_path, allow_pickle=False) as cached:
            if str(cached["key"]) == key:
                return cached["features"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        pass
    return None


def logmel_features(records: Sequence[ClipRecord], feature_config: FeatureConfig,
                    cache_path=None, log: Optional[Callable[[str], None]] = None,
                    name: str = "") -> np.ndarray:
    """`[len(records), 2 * n_mels]` features in record order, optionally cached in an .npz.

    The cache is reused only when paths, sizes, modification times and
    feature settings all match; otherwise it is recomputed and replaced.
    With `log`, a line when computing starts and one when it ends (`name`
    says which clips).
    """
    key = _cache_key(records, feature_config) if cache_path is not None else None
    if cache_path is not None:
        cached = _load_cache(cache_path, key)
        if cached is not None:
            return cached
    started = time.perf_counter()
    clips = f"{len(records)} {name} clips" if name else f"{len(records)} clips"
    if log is not None:
        log(f"Baseline log-mel features of {clips}...")
    features = np.zeros((len(records), 2 * feature_config.n_mels), dtype=np.float32)
    for row, record in enumerate(records):
        features[row] = clip_logmel_statistics(record.path, feature_config)
    if log is not None:
        log(f"Baseline log-mel features of {clips} done ({time.perf_counter() - started:.1f} s).")
    if cache_path is not None:
        buffer = io.BytesIO()
        np.savez(buffer, key=np.array(key), features=features)
        atomic_write_bytes(os.fspath(cache_path), buffer.getvalue())
    return features


def majority_baseline(train_labels, n: int) -> np.ndarray:
    """`n` constant scores: the training majority label (ties go to normal, 0.0).

    Constant scores rank no clip above another, so AUC is 0.5 and the DCASE
    pAUC is max_fpr / 2; threshold them at `MAJORITY_THRESHOLD`.
    """
    labels = np.asarray(train_labels)
    if labels.size == 0:
        raise ValueError("majority_baseline needs at least one training label.")
    majority = 1.0 if labels.sum() * 2 > labels.size else 0.0
    return np.full(int(n), majority, dtype=np.float64)


def logistic_regression_baseline(train_features, train_labels, features_to_score,
                                 seed: int = 0, C: float = 1.0) -> np.ndarray:
    """Decision-function scores (higher = more abnormal) of a balanced logistic regression."""
    labels = np.asarray(train_labels)
    if np.unique(labels).size != 2:
        raise ValueError(
            f"logistic_regression_baseline needs normal and abnormal training clips; "
            f"got labels {sorted(set(labels.tolist()))}.")
    model = Pipeline([
        ("scale", StandardScaler()),
        ("classify", LogisticRegression(
            max_iter=LOGISTIC_MAX_ITER, class_weight="balanced", C=C, random_state=seed)),
    ])
    model.fit(np.asarray(train_features, dtype=np.float64), labels)
    return model.decision_function(np.asarray(features_to_score, dtype=np.float64))


def normal_gaussian_baseline(train_features, train_machines, features_to_score, machines) -> np.ndarray:
    """Normal-only scores: each clip's mean squared z-score under its machine's diagonal Gaussian.

    The Gaussian is fitted to the features of the machine's training clips
    (normal only); the score is `GaussianDistanceLogit`'s distance, so this is
    the normal-only method's `feature_gaussian` score on log-mel statistics
    instead of learnt feature maps.

    Raises:
        ValueError: a clip's machine has no training clip.
    """
    statistics = machine_statistics(np.asarray(train_features), train_machines)
    try:
        return machine_distances(features_to_score, machines, statistics)
    except ValueError as error:
        raise ValueError(f"normal_gaussian_baseline: {error}") from error


def run_baselines(splits: Mapping[str, Sequence[ClipRecord]], feature_config: FeatureConfig,
                  eval_split: str = "test", cache_dir=None,
                  log: Optional[Callable[[str], None]] = None) -> Dict[str, np.ndarray]:
    """Every baseline trained on "train", scored on `eval_split` (and "val" for thresholds).

    Returns `{"majority", "logistic_regression", "logistic_regression_val"}`,
    arrays aligned with `splits[eval_split]` and (the last) `splits["val"]`.
    With `cache_dir`, features are cached as `cache_dir/logmel_<split>.npz`.
    With `log`, progress lines for the features of each split not cached.
    """
    for name in ("train", "val", eval_split):
        if name not in splits:
            raise ValueError(f"run_baselines needs a {name!r} split; got {sorted(splits)}.")
    features = {}
    for name in dict.fromkeys(("train", "val", eval_split)):
        cache_path = None if cache_dir is None else os.path.join(cache_dir, f"logmel_{name}.npz")
        features[name] = logmel_features(splits[name], feature_config, cache_path, log=log, name=name)
    train_labels = [record.label for record in splits["train"]]
    n_eval = len(splits[eval_split])
    # One fit scores both splits.
    scores = logistic_regression_baseline(
        features["train"], train_labels, np.concatenate([features[eval_split], features["val"]]))
    return {
        "majority": majority_baseline(train_labels, n_eval),
        "logistic_regression": scores[:n_eval],
        "logistic_regression_val": scores[n_eval:],
    }


__all__ = [
    "FEATURE_VERSION",
    "normal_gaussian_baseline",
    "MAJORITY_THRESHOLD",
    "read_channel",
    "clip_logmel_statistics",
    "logmel_features",
    "majority_baseline",
    "logistic_regression_baseline",
    "run_baselines",
]
