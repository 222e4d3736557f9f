"""The DCASE 2020 baseline's features, checked against its own recipe in librosa on real clips."""

import sys

import librosa
import numpy as np
import pytest
import tensorflow as tf

from pump_keras.audio import frames
from tests.conftest import DCASE_DIR, MIMII_DIR

# float32 FFTs differ in the last bits; where the mel power is tiny the dB
# value shows it most.
MAX_DB_ERROR = 0.02
P999_DB_ERROR = 2e-3


def official_vectors(y, sr, n_mels=128, frames_=5, n_fft=1024, hop_length=512, power=2.0):
    """`common.file_to_vector_array` of the DCASE 2020 Task 2 baseline, on librosa 0.7's framing.

    librosa 0.7 padded centred frames by reflection; later versions pad
    with zeros unless asked, so the padding is named here.
    """
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
                                         power=power, pad_mode="reflect")
    log_mel = 20.0 / power * np.log10(mel + sys.float_info.epsilon)
    size = log_mel.shape[1] - frames_ + 1
    vectors = np.zeros((size, n_mels * frames_))
    for t in range(frames_):
        vectors[:, n_mels * t: n_mels * (t + 1)] = log_mel[:, t: t + size].T
    return vectors


@pytest.mark.parametrize("path", [DCASE_DIR / "normal_id_02_00000000.wav", DCASE_DIR / "anomaly_id_06_00000013.wav",
                                  MIMII_DIR / "0_dB_pump/pump/id_04/normal/00000000.wav"], ids=lambda p: p.name)
def test_vectors_equal_the_official_recipe(path):
    y, sr = librosa.load(path, sr=None, mono=False)
    y = y[0] if y.ndim == 2 else y  # MIMII: the first microphone
    expected = official_vectors(y, sr)
    ours = frames.waveform_to_vectors(tf.constant(y), sr).numpy()
    assert ours.shape == expected.shape == (313 - 4, 640)
    error = np.abs(ours - expected)
    assert error.max() < MAX_DB_ERROR, error.max()
    assert np.percentile(error, 99.9) < P999_DB_ERROR


def test_reflect_padding_is_what_makes_the_first_frames_match():
    y = np.random.default_rng(0).normal(scale=0.1, size=16000).astype(np.float32)
    zero_padded = librosa.feature.melspectrogram(y=y, sr=16000, n_fft=1024, hop_length=512, n_mels=128)
    ours = 10 ** (frames.dcase_log_mel(tf.constant(y), 16000).numpy() / 10)
    assert not np.allclose(ours[0], zero_padded[:, 0], rtol=1e-3)
    assert np.allclose(ours[5], zero_padded[:, 5], rtol=1e-3)


def test_stacked_frames_are_consecutive_rows_first_row_first():
    log_mel = tf.reshape(tf.range(12, dtype=tf.float32), [6, 2])
    stacked = frames.stack_frames(log_mel, 3).numpy()
    assert stacked.shape == (4, 6)
    np.testing.assert_array_equal(stacked[1], [2, 3, 4, 5, 6, 7])
    assert frames.stack_frames(log_mel[:2], 3).numpy().shape == (0, 6)
