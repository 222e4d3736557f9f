"""The DCASE 2020 Task 2 baseline's features: log-mel frames stacked with their neighbours.

The official baseline (`common.file_to_vector_array`) computes, with librosa
0.7:

    mel = librosa.feature.melspectrogram(y, sr, n_fft=1024, hop_length=512, n_mels=128, power=2.0)
    log_mel = 20.0 / power * np.log10(mel + sys.float_info.epsilon)

and turns each run of `frames` consecutive log-mel columns into one vector
(`frames * n_mels` long, the first column first). librosa 0.7 centres its
frames with *reflect* padding (later versions pad with zeros), the Hann
window is periodic and the mel filters are Slaney's with Slaney
normalisation. The functions here compute the same numbers in the
TensorFlow graph, so training, evaluation and a served model share them;
`tests/audio/test_frames.py` checks them against librosa.
"""

from __future__ import annotations

import sys

import tensorflow as tf

from pump_keras.audio.features import mel_filterbank

LOG_EPSILON = sys.float_info.epsilon  # the baseline adds Python's float epsilon before log10


def dcase_log_mel(waveform: tf.Tensor, sample_rate: int, n_fft: int = 1024, hop_length: int = 512,
                  n_mels: int = 128, power: float = 2.0) -> tf.Tensor:
    """librosa 0.7's `melspectrogram` in decibels as the DCASE baseline takes it: `[frames, n_mels]`.

    Args:
        waveform: 1-D float waveform in [-1, 1], longer than `n_fft // 2`.
        sample_rate: its rate in Hz.
        n_fft, hop_length, n_mels, power: as the baseline's `file_to_vector_array`.
    """
    waveform = tf.convert_to_tensor(waveform, tf.float32)
    half = n_fft // 2
    padded = tf.pad(waveform[None, :], [[0, 0], [half, half]], mode="REFLECT")[0]
    stft = tf.signal.stft(padded, frame_length=n_fft, frame_step=hop_length, fft_length=n_fft,
                          window_fn=tf.signal.hann_window, pad_end=False)
    spectrum = tf.abs(stft) ** power
    mel = tf.matmul(spectrum, tf.constant(mel_filterbank(sample_rate, n_fft, n_mels)))
    return (20.0 / power) * tf.math.log(mel + LOG_EPSILON) / tf.math.log(10.0)


def stack_frames(log_mel: tf.Tensor, frames: int = 5) -> tf.Tensor:
    """Each run of `frames` consecutive rows of `[T, n_mels]` as one vector: `[T - frames + 1, frames * n_mels]`.

    Row `t` is `log_mel[t], log_mel[t + 1], ..., log_mel[t + frames - 1]`
    concatenated, the baseline's order. A clip shorter than `frames` rows
    gives no vector.
    """
    log_mel = tf.convert_to_tensor(log_mel)
    n_mels = log_mel.shape[-1]
    windows = tf.signal.frame(log_mel, frames, 1, pad_end=False, axis=0)
    return tf.reshape(windows, [-1, frames * n_mels])


def waveform_to_vectors(waveform: tf.Tensor, sample_rate: int, n_fft: int = 1024, hop_length: int = 512,
                        n_mels: int = 128, frames: int = 5, power: float = 2.0) -> tf.Tensor:
    """The baseline's feature vectors of one waveform (`dcase_log_mel`, then `stack_frames`)."""
    return stack_frames(dcase_log_mel(waveform, sample_rate, n_fft, hop_length, n_mels, power), frames)


__all__ = ["LOG_EPSILON", "dcase_log_mel", "stack_frames", "waveform_to_vectors"]
