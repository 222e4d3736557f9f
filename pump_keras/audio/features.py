"""The paper's four spectrogram features and the image step, as TensorFlow ops.

The paper (Table 6) names four inputs without defining them. Its names are
those of librosa's `specshow` gallery, where "linear-frequency" and
"log-frequency power spectrogram" are one STFT in dB drawn on two axes. A CNN
sees pixels, not axes, so here each kind is a concrete array:

`spectrogram`
    Log-magnitude STFT, `20 * log10(max(|X|, 1e-5))`, referenced to full scale
    (a sample of 1.0). Linear frequency axis, `n_fft // 2 + 1` rows. Absolute
    level is kept, so a louder pump looks brighter. (librosa:
    `amplitude_to_db(abs(stft(y)), ref=1.0, amin=1e-5, top_db=None)`.)
`mel`
    Log-mel power, `10 * log10(max(M, 1e-10))` with `M = |X|^2 @ mel_filters`,
    `n_mels` Slaney-scale, area-normalised triangular filters from 0 Hz to
    Nyquist, referenced to full scale. (librosa: `power_to_db(
    melspectrogram(S=abs(stft(y))**2, sr, n_mels), ref=1.0, top_db=None)`.)
`linear_frequency`
    The gallery's linear-frequency power spectrogram: power `|X|^2` in dB
    relative to the clip's own peak and clipped `top_db` below it. Unlike
    `spectrogram`, the absolute level is discarded: every clip's loudest
    bin is 0 dB. (librosa: `power_to_db(abs(stft(y))**2, ref=np.max,
    top_db=80)`.)
`log_frequency`
    The same relative power, on a log-frequency axis made real: the power
    spectrum is linearly interpolated at `n_log_bins` geometrically spaced
    frequencies from `log_fmin` to Nyquist, then taken to dB relative to the
    clip's peak, clipped `top_db` below. Low frequencies (shaft harmonics)
    get many rows; high frequencies (cavitation, bearings) fewer.

The STFT is librosa's default: periodic Hann window of `n_fft`, frames
centred by padding `n_fft // 2` zeros on both sides, hop `hop_length`.

The image: the dB array is mapped onto [0, 1] (`normalize_db`: through a
fixed dB window, so level differences between clips survive, or through a
window of standard deviations about the clip's own mean, so they do not),
transposed to frequency x time with low frequencies at the bottom, resized
bilinearly with antialiasing to `image_shape` (rows x columns: when
shrinking, every STFT bin and frame contributes), and repeated to
`image_channels` channels, the last of which can carry the frequency
position instead (`to_backbone_channels`). Silent input gives finite values
(the floors above), never NaN or -inf.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf

from pump_keras.audio.decode import check, check_finite, decode_wav
from pump_keras.config import FeatureConfig

AMPLITUDE_FLOOR = 1e-5  # floor of |X| before 20*log10 (-100 dB)
POWER_FLOOR = 1e-10  # floor of power before 10*log10 (-100 dB)


# --- fixed frequency mappings (NumPy, built once into the graph as constants)

def _hz_to_mel(hz):
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = hz / f_sp
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    log_region = hz >= min_log_hz
    mels = np.where(log_region, min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep, mels)
    return mels


def _mel_to_hz(mels):
    """Inverse of `_hz_to_mel`."""
    mels = np.asarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), f_sp * mels)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Slaney-normalised triangular mel filters, `[n_fft // 2 + 1, n_mels]` float32."""
    fft_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges_hz = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2))
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    return weights.T.astype(np.float32)


def log_frequency_matrix(sample_rate: int, n_fft: int, n_bins: int, fmin: float) -> np.ndarray:
    """Linear interpolation of STFT bins at log-spaced frequencies, `[n_fft // 2 + 1, n_bins]`."""
    n_fft_bins = n_fft // 2 + 1
    target_hz = np.geomspace(fmin, sample_rate / 2, n_bins)
    position = target_hz / (sample_rate / n_fft)
    lower = np.minimum(np.floor(position).astype(int), n_fft_bins - 2)
    fraction = position - lower
    weights = np.zeros((n_fft_bins, n_bins), dtype=np.float64)
    columns = np.arange(n_bins)
    weights[lower, columns] = 1.0 - fraction
    weights[lower + 1, columns] += fraction
    return weights.astype(np.float32)


# --- features

def stft_power(waveform: tf.Tensor, n_fft: int, hop_length: int) -> tf.Tensor:
    """`|STFT|^2` of a 1-D waveform as `[frames, n_fft // 2 + 1]`, librosa's centred framing."""
    padded = tf.pad(waveform, [[n_fft // 2, n_fft // 2]])
    stft = tf.signal.stft(
        padded, frame_length=n_fft, frame_step=hop_length, fft_length=n_fft,
        window_fn=tf.signal.hann_window, pad_end=False,
    )
    # |X|^2 as X * conj(X) is several times cheaper than tf.abs (a hypot).
    return tf.math.real(stft * tf.math.conj(stft))


def _db(values: tf.Tensor, floor: float, factor: float) -> tf.Tensor:
    """`factor * log10(max(values, floor))`."""
    return factor * tf.math.log(tf.maximum(values, floor)) / np.log(10.0).astype(np.float32)


def _relative_db(power: tf.Tensor, top_db: float) -> tf.Tensor:
    """Power in dB relative to its own peak, clipped `top_db` below the peak."""
    db = _db(power, POWER_FLOOR, 10.0) - _db(tf.reduce_max(power), POWER_FLOOR, 10.0)
    return tf.maximum(db, tf.reduce_max(db) - top_db)


def compute_feature(waveform: tf.Tensor, config: FeatureConfig) -> tf.Tensor:
    """The feature of `config.kind` for a 1-D float waveform: `[frames, rows]` in dB."""
    power = stft_power(waveform, config.n_fft, config.hop_length)
    if config.kind == "spectrogram":
        # 20 * log10(max(|X|, a)) == 10 * log10(max(|X|^2, a^2))
        return _db(power, AMPLITUDE_FLOOR**2, 10.0)
    if config.kind == "mel":
        filters = mel_filterbank(config.sample_rate, config.n_fft, config.n_mels)
        return _db(tf.matmul(power, filters), POWER_FLOOR, 10.0)
    if config.kind == "linear_frequency":
        return _relative_db(power, config.top_db)
    if config.kind == "log_frequency":
        interpolation = log_frequency_matrix(
            config.sample_rate, config.n_fft, config.n_log_bins, config.log_fmin)
        return _relative_db(tf.matmul(power, interpolation), config.top_db)
    raise ValueError(f"Unknown feature kind {config.kind!r}.")


def normalize_db(feature: tf.Tensor, config: FeatureConfig) -> tf.Tensor:
    """dB values to pixel values in [0, 1] by `config.normalization`.

    `"fixed_db"`: the fixed window `resolved_db_range`. `"clip"`: standard
    deviations from the clip's own mean dB, window `clip_z_range`.
    """
    if config.normalization == "clip":
        mean = tf.reduce_mean(feature)
        std = tf.maximum(tf.math.reduce_std(feature), 1e-3)  # a silent clip has std 0
        low, high = config.clip_z_range
        feature, low, high = (feature - mean) / std, low, high
    else:
        low, high = config.resolved_db_range
    return tf.clip_by_value((feature - low) / (high - low), 0.0, 1.0)


def feature_to_image(feature: tf.Tensor, config: FeatureConfig) -> tf.Tensor:
    """A `[frames, rows]` dB feature as a one-channel `[rows, columns, 1]` image in [0, 1].

    Low frequencies end up at the bottom row, time runs left to right; the
    size is `config.image_shape`.
    """
    scaled = normalize_db(feature, config)
    picture = tf.reverse(tf.transpose(scaled), axis=[0])[..., tf.newaxis]
    # Antialiased: shrinking 513 STFT rows to 64 averages them all; plain
    # bilinear would sample two of every eight and lose lines between them.
    return tf.image.resize(picture, list(config.image_shape), method="bilinear", antialias=True)


def frequency_position(config: FeatureConfig) -> np.ndarray:
    """`[rows, 1, 1]` float32: each image row's place on the frequency axis, 0 at the bottom, 1 at the top."""
    rows = config.image_size
    return np.linspace(1.0, 0.0, rows, dtype=np.float32).reshape(rows, 1, 1)


def to_backbone_channels(images: tf.Tensor, config: FeatureConfig) -> tf.Tensor:
    """One-channel images `[B, rows, columns, 1]` as the backbone's `image_channels` channels.

    The plane is repeated; with `config.frequency_channel` the last channel
    is the rows' frequency position instead.
    """
    if config.image_channels == 1:
        return images
    planes = config.image_channels - int(config.frequency_channel)
    shape = tf.concat([tf.shape(images)[:-1], [planes]], axis=0)
    repeated = tf.broadcast_to(images, shape)  # faster than tf.repeat or tf.tile
    if not config.frequency_channel:
        return repeated
    position = tf.broadcast_to(frequency_position(config), tf.concat([tf.shape(images)[:-1], [1]], axis=0))
    return tf.concat([repeated, position], axis=-1)


def waveform_to_image(
    waveform: tf.Tensor, config: FeatureConfig, source: Optional[tf.Tensor] = None
) -> tf.Tensor:
    """A 1-D waveform at `config.sample_rate` as a one-channel `[rows, columns, 1]` image.

    A waveform holding NaN or Inf, or shorter than one STFT frame
    (`config.n_fft` samples), raises `InvalidArgumentError` naming `source`
    (default "waveform"): its image would be NaN, or all padding.
    """
    source = tf.constant("waveform") if source is None else tf.convert_to_tensor(source, tf.string)
    samples = tf.shape(waveform)[0]
    long_enough = check(source, [(
        samples >= config.n_fft,
        lambda: tf.strings.format(
            "clip of {} samples is shorter than one STFT frame (n_fft {})", (samples, config.n_fft)),
    )])
    with tf.control_dependencies([long_enough, check_finite(waveform, source)]):
        return feature_to_image(compute_feature(waveform, config), config)


def wav_bytes_to_waveform(
    contents: tf.Tensor, config: FeatureConfig, source: Optional[tf.Tensor] = None
) -> tf.Tensor:
    """Decodes WAV bytes to the 1-D waveform of `config.channel`, checking the rate."""
    source = tf.constant("WAV bytes") if source is None else tf.convert_to_tensor(source, tf.string)
    audio, sample_rate = decode_wav(contents, channel=config.channel, source=source)
    rate_ok = check(source, [(
        tf.equal(sample_rate, config.sample_rate),
        lambda: tf.strings.format(
            "sample rate {} Hz, but the features expect {} Hz (convert with python -m "
            "pump_keras.data.resample FILE_OR_FOLDER OUT --rate {}, or set FeatureConfig.sample_rate)",
            (sample_rate, config.sample_rate, config.sample_rate)),
    )])
    with tf.control_dependencies([rate_ok]):
        return tf.identity(audio[:, 0])


def wav_bytes_to_image(
    contents: tf.Tensor, config: FeatureConfig, source: Optional[tf.Tensor] = None
) -> tf.Tensor:
    """WAV file bytes to the one-channel `[rows, columns, 1]` image (decode, feature, image)."""
    return waveform_to_image(wav_bytes_to_waveform(contents, config, source), config, source)
