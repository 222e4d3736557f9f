"""The four features against librosa, the image step, and edge cases."""

import librosa
import numpy as np
import pytest
import tensorflow as tf

from pump_keras.audio import features
from pump_keras.config import DEFAULT_DB_RANGES, FEATURE_KINDS, FeatureConfig
from tests.conftest import DCASE_DIR, MIMII_DIR
from tests.wav_bytes import make_wav

# Largest |ours - librosa| in dB. float32 FFTs differ in the last bits; in
# bins 90+ dB below the peak that shows as up to a few thousandths of a dB.
MAX_DB_ERROR = 0.02
# ... and almost everywhere it is far smaller.
P999_DB_ERROR = 1e-3

REAL_CLIPS = [
    MIMII_DIR / "0_dB_pump/pump/id_00/abnormal/00000000.wav",
    MIMII_DIR / "0_dB_pump/pump/id_06/normal/00000000.wav",
    DCASE_DIR / "anomaly_id_04_00000005.wav",
]


def librosa_reference(y, sr, config: FeatureConfig) -> np.ndarray:
    """What each documented feature is, in librosa terms: `[rows, frames]` dB."""
    magnitude = np.abs(librosa.stft(y, n_fft=config.n_fft, hop_length=config.hop_length))
    power = magnitude**2
    if config.kind == "spectrogram":
        return librosa.amplitude_to_db(magnitude, ref=1.0, amin=1e-5, top_db=None)
    if config.kind == "mel":
        mel = librosa.feature.melspectrogram(S=power, sr=sr, n_mels=config.n_mels)
        return librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)
    if config.kind == "linear_frequency":
        return librosa.power_to_db(power, ref=np.max, amin=1e-10, top_db=config.top_db)
    fft_hz = librosa.fft_frequencies(sr=sr, n_fft=config.n_fft)
    target_hz = np.geomspace(config.log_fmin, sr / 2, config.n_log_bins)
    log_power = np.stack([np.interp(target_hz, fft_hz, frame) for frame in power.T], axis=1)
    return librosa.power_to_db(log_power, ref=np.max, amin=1e-10, top_db=config.top_db)


@pytest.mark.parametrize("kind", FEATURE_KINDS)
@pytest.mark.parametrize("path", REAL_CLIPS, ids=lambda p: p.name)
def test_features_match_librosa_on_real_clips(kind, path):
    y, sr = librosa.load(path, sr=None, mono=False)
    y = y[0] if y.ndim == 2 else y
    config = FeatureConfig(kind=kind)
    expected = librosa_reference(y, sr, config)
    ours = features.compute_feature(tf.constant(y), config).numpy().T
    assert ours.shape == expected.shape
    error = np.abs(ours - expected)
    assert error.max() < MAX_DB_ERROR, (kind, error.max())
    assert np.percentile(error, 99.9) < P999_DB_ERROR


def test_feature_shapes_follow_config():
    wave = tf.random.normal([8000], stddev=0.1, seed=1)
    frames = 1 + 8000 // 256
    rows = {"spectrogram": 257, "mel": 40, "linear_frequency": 257, "log_frequency": 64}
    for kind in FEATURE_KINDS:
        config = FeatureConfig(kind=kind, n_fft=512, hop_length=256, n_mels=40, n_log_bins=64)
        assert features.compute_feature(wave, config).shape == (frames, rows[kind])


def test_mel_filterbank_equals_librosa():
    for sr, n_fft, n_mels in [(16000, 1024, 128), (22050, 2048, 64), (16000, 512, 40)]:
        np.testing.assert_allclose(
            features.mel_filterbank(sr, n_fft, n_mels),
            librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels).T,
            atol=1e-7,
        )


def test_log_frequency_rows_are_log_spaced_interpolation():
    matrix = features.log_frequency_matrix(16000, 1024, 256, 20.0)
    assert matrix.shape == (513, 256)
    np.testing.assert_allclose(matrix.sum(axis=0), 1.0, atol=1e-6)
    bin_hz = 16000 / 1024
    centres = (matrix * np.arange(513)[:, None]).sum(axis=0) * bin_hz
    np.testing.assert_allclose(centres, np.geomspace(20.0, 8000.0, 256), rtol=1e-5)


def test_image_is_square_in_unit_range_with_low_frequencies_at_the_bottom():
    t = np.arange(16000) / 16000
    low_tone = tf.constant(0.5 * np.sin(2 * np.pi * 200 * t), tf.float32)
    config = FeatureConfig(image_size=64)
    image = features.waveform_to_image(low_tone, config).numpy()
    assert image.shape == (64, 64, 1)
    assert image.min() >= 0.0 and image.max() <= 1.0
    row_energy = image[..., 0].mean(axis=1)
    assert row_energy.argmax() > 56  # 200 Hz sits near the bottom row
    tiled = features.to_backbone_channels(image[None], config).numpy()
    assert tiled.shape == (1, 64, 64, 3)
    np.testing.assert_array_equal(tiled[..., 0], tiled[..., 2])


def test_shrinking_keeps_every_frequency_bin():
    # 513 STFT rows into 32: a tone must show whichever bin it falls in.
    t = np.arange(16000) / 16000
    config = FeatureConfig(image_size=32)
    peaks = []
    for k in range(200, 216):  # 16 neighbouring bins, one image row's worth and more
        tone = 0.1 * np.sin(2 * np.pi * k * 16000 / 1024 * t)
        image = features.waveform_to_image(tf.constant(tone, tf.float32), config).numpy()
        peaks.append(image[..., 0].mean(axis=1).max())
    assert min(peaks) > 0.5 * max(peaks), np.round(peaks, 3)  # plain bilinear: under 0.1


def test_db_window_is_fixed_not_per_clip():
    noise = np.random.default_rng(0).standard_normal(16000) * 0.01
    config = FeatureConfig(image_size=32)
    low, high = DEFAULT_DB_RANGES["spectrogram"]
    assert config.resolved_db_range == (low, high)
    quiet = features.waveform_to_image(tf.constant(noise, tf.float32), config).numpy()
    loud = features.waveform_to_image(tf.constant(noise * 10, tf.float32), config).numpy()
    # +20 dB moves every unclipped pixel of an absolute kind up by 20 / (high - low)
    np.testing.assert_allclose(np.median(loud - quiet), 20 / (high - low), atol=0.01)
    relative = FeatureConfig(kind="linear_frequency", image_size=32)
    quiet = features.waveform_to_image(tf.constant(noise, tf.float32), relative).numpy()
    loud = features.waveform_to_image(tf.constant(noise * 10, tf.float32), relative).numpy()
    np.testing.assert_allclose(loud, quiet, atol=1e-4)  # the relative kinds drop the level


def test_clip_normalization_drops_the_level_and_keeps_the_shape():
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    hum = 0.002 * rng.standard_normal(16000) + 0.01 * np.sin(2 * np.pi * 300 * t)
    config = FeatureConfig(kind="mel", image_size=32, normalization="clip")
    quiet = features.waveform_to_image(tf.constant(hum, tf.float32), config).numpy()
    loud = features.waveform_to_image(tf.constant(hum * 30, tf.float32), config).numpy()
    np.testing.assert_allclose(loud, quiet, atol=1e-4)  # +30 dB changes nothing
    assert 0.0 <= quiet.min() and quiet.max() <= 1.0
    # The tone's rows stand out of the clip's own distribution.
    rows = quiet[..., 0].mean(axis=1)
    assert rows.max() - np.median(rows) > 0.2
    silence = features.waveform_to_image(tf.zeros([16000]), config).numpy()
    assert np.isfinite(silence).all()


def test_non_square_images_and_the_frequency_channel():
    t = np.arange(16000) / 16000
    tone = tf.constant(0.5 * np.sin(2 * np.pi * 200 * t), tf.float32)
    config = FeatureConfig(kind="mel", image_size=48, image_width=16, frequency_channel=True)
    assert config.image_shape == (48, 16) and config.input_shape == (48, 16, 3)
    image = features.waveform_to_image(tone, config).numpy()
    assert image.shape == (48, 16, 1)
    channels = features.to_backbone_channels(image[None], config).numpy()
    assert channels.shape == (1, 48, 16, 3)
    np.testing.assert_array_equal(channels[0, ..., 0], image[..., 0])
    np.testing.assert_array_equal(channels[0, ..., 1], image[..., 0])
    # The last channel is the row's frequency position: 1 at the top, 0 at the bottom.
    np.testing.assert_allclose(channels[0, :, 5, 2], np.linspace(1, 0, 48), atol=1e-6)
    assert np.all(channels[0, :, :, 2] == channels[0, :, :1, 2])


@pytest.mark.parametrize("kind", FEATURE_KINDS)
def test_silent_clip_gives_finite_features(kind):
    config = FeatureConfig(kind=kind, image_size=32)
    silence = tf.zeros([16000])
    feature = features.compute_feature(silence, config).numpy()
    image = features.waveform_to_image(silence, config).numpy()
    assert np.isfinite(feature).all() and np.isfinite(image).all()
    contents = make_wav(np.zeros((16000, 8), np.int16))
    image = features.wav_bytes_to_image(tf.constant(contents), config).numpy()
    assert np.isfinite(image).all()


def test_wav_bytes_to_image_uses_the_configured_channel():
    rng = np.random.default_rng(0)
    samples = (rng.standard_normal((16000, 4)) * 3000).astype(np.int16)
    samples[:, 2] = 0
    contents = tf.constant(make_wav(samples))
    config = FeatureConfig(image_size=32)
    silent = features.wav_bytes_to_image(contents, FeatureConfig(image_size=32, channel=2))
    noisy = features.wav_bytes_to_image(contents, config)
    assert float(tf.reduce_max(silent)) == 0.0
    assert float(tf.reduce_mean(noisy)) > 0.2
    mean = features.wav_bytes_to_image(contents, FeatureConfig(image_size=32, channel="mean"))
    assert 0.0 < float(tf.reduce_mean(mean)) < float(tf.reduce_mean(noisy))


def test_wrong_sample_rate_is_an_error_naming_the_file():
    contents = tf.constant(make_wav(np.zeros((800, 1), np.int16), sample_rate=8000))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"id_00/x\.wav: sample rate 8000 Hz"):
        features.wav_bytes_to_image(contents, FeatureConfig(), source=tf.constant("id_00/x.wav"))


@pytest.mark.parametrize("changes,match", [
    ({"kind": "mfcc"}, "Unknown feature kind"),
    ({"channel": "left"}, "channel must be"),
    ({"channel": -1}, "channel must be"),
    ({"n_fft": 1023}, "n_fft must be even"),
    ({"image_size": 0}, "image_size must be positive"),
    ({"db_range": (10, -10)}, "low < high"),
    ({"log_fmin": 9000}, "log_fmin"),
    ({"normalization": "minmax"}, "normalization must be"),
    ({"clip_z_range": (2, 1)}, "clip_z_range"),
    ({"image_width": 0}, "image_width must be positive"),
    ({"frequency_channel": True, "image_channels": 1}, "frequency_channel needs"),
])
def test_feature_config_validation(changes, match):
    with pytest.raises(ValueError, match=match):
        FeatureConfig(**changes)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_waveform_is_refused(bad):
    waveform = np.zeros(4096, np.float32)
    waveform[100] = bad
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"waveform: non-finite samples \(NaN or Inf\)"):
        features.waveform_to_image(tf.constant(waveform), FeatureConfig(image_size=32))


def test_non_finite_wav_file_is_an_error_naming_the_file():
    samples = np.zeros((4096, 1), np.float32)
    samples[7] = np.nan
    contents = tf.constant(make_wav(samples, format_tag=3, bits=32))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"id_00/x\.wav: non-finite samples"):
        features.wav_bytes_to_image(contents, FeatureConfig(), source=tf.constant("id_00/x.wav"))


@pytest.mark.parametrize("samples", [0, 1, 100, 1023])
def test_clip_shorter_than_one_stft_frame_is_refused(samples):
    config = FeatureConfig(image_size=32)  # n_fft 1024
    short = f"clip of {samples} samples is shorter than one STFT frame \\(n_fft 1024\\)"
    with pytest.raises(tf.errors.InvalidArgumentError, match="waveform: " + short):
        features.waveform_to_image(tf.zeros([samples]), config)
    if samples:
        contents = tf.constant(make_wav(np.ones((samples, 2), np.int16)))
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"id_00/x\.wav: " + short):
            features.wav_bytes_to_image(contents, config, source=tf.constant("id_00/x.wav"))


def test_clip_of_exactly_one_stft_frame_is_accepted():
    config = FeatureConfig(image_size=32, n_fft=256, hop_length=128)
    image = features.wav_bytes_to_image(tf.constant(make_wav(np.ones((256, 1), np.int16))), config)
    assert image.shape == (32, 32, 1)
