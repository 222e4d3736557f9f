"""In-graph WAV decoding: bit-exact on the real clips, every header layout, clear errors."""

import io
import re

import numpy as np
import pytest
import scipy.io.wavfile
import tensorflow as tf

from pump_keras.audio import decode_wav, parse_wav_header
from tests.conftest import real_wav_files
from tests.wav_bytes import make_wav


def scipy_reference(contents: bytes):
    """(float32 [frames, channels], rate) from scipy, scaled by 2**(bits-1) for integers."""
    rate, data = scipy.io.wavfile.read(io.BytesIO(contents))
    data = data.reshape(data.shape[0], -1)
    if data.dtype == np.int16:
        return data.astype(np.float32) / 2**15, rate
    if data.dtype == np.int32:  # 24-bit arrives left-justified in int32, like 32-bit
        return data.astype(np.float32) / 2**31, rate
    return data.astype(np.float32), rate


@pytest.mark.parametrize("path", real_wav_files(), ids=lambda p: "/".join(p.parts[-4:]))
def test_real_files_bit_exact_against_scipy(path):
    contents = path.read_bytes()
    expected, rate = scipy_reference(contents)
    audio, sample_rate = decode_wav(tf.constant(contents))
    assert int(sample_rate) == rate == 16000
    assert audio.dtype == tf.float32
    np.testing.assert_array_equal(audio.numpy(), expected)

    last = expected.shape[1] - 1
    one, _ = decode_wav(tf.constant(contents), channel=last)
    np.testing.assert_array_equal(one.numpy()[:, 0], expected[:, last])
    mean, _ = decode_wav(tf.constant(contents), channel="mean")
    np.testing.assert_allclose(mean.numpy()[:, 0], expected.mean(axis=1), atol=1e-7)


def test_real_mimii_file_is_what_tf_audio_rejects(real_files):
    mimii = [p for p in real_files if "mimii" in str(p)][0]
    contents = mimii.read_bytes()
    assert contents[20:22] == b"\xfe\xff" and b"fact" in contents[:100]
    with pytest.raises(tf.errors.InvalidArgumentError):
        tf.audio.decode_wav(contents)
    audio, _ = decode_wav(tf.constant(contents))
    assert audio.shape == (160000, 8)


def test_plain_pcm_matches_tf_audio_decode_wav(real_files):
    dcase = [p for p in real_files if "dcase" in str(p)][0]
    contents = dcase.read_bytes()
    ours, rate = decode_wav(tf.constant(contents))
    theirs, their_rate = tf.audio.decode_wav(contents)
    assert int(rate) == int(their_rate)
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def _samples(rng, frames, channels, bits, floating=False):
    if floating:
        return rng.uniform(-1, 1, (frames, channels)).astype(np.float32)
    top = 2 ** (bits - 1)
    values = rng.integers(-top, top, (frames, channels), dtype=np.int64)
    values[0, 0], values[1, 0] = -top, top - 1  # the extremes decode exactly too
    return values


@pytest.mark.parametrize("layout", ["plain", "cb", "extensible"])
@pytest.mark.parametrize("format_tag,bits", [(1, 16), (1, 24), (1, 32), (3, 32)])
@pytest.mark.parametrize("channels", [1, 3])
def test_encodings_and_layouts_match_scipy(layout, format_tag, bits, channels):
    rng = np.random.default_rng(bits * 10 + channels)
    samples = _samples(rng, 257, channels, bits, floating=format_tag == 3)
    contents = make_wav(samples, sample_rate=22050, format_tag=format_tag, bits=bits,
                        layout=layout, after_fmt=[(b"fact", b"\x01\x01\0\0")])
    expected, rate = scipy_reference(contents)
    audio, sample_rate = decode_wav(tf.constant(contents))
    assert int(sample_rate) == rate == 22050
    np.testing.assert_array_equal(audio.numpy(), expected)
    if bits != 32 or format_tag == 3:
        # 16/24-bit integers and floats are exact in float32: check the scaling too
        scale = 1.0 if format_tag == 3 else 2.0 ** (bits - 1)
        np.testing.assert_array_equal(audio.numpy(), (samples / scale).astype(np.float32))


def test_unknown_and_odd_sized_chunks_are_skipped():
    samples = np.arange(-50, 50, dtype=np.int16).reshape(-1, 2) * 300
    contents = make_wav(
        samples,
        before_fmt=[(b"JUNK", b"x" * 7)],  # odd size: one pad byte follows
        after_fmt=[(b"LIST", b"INFOISFT\x05\0\0\0test\0"), (b"fact", b"\x32\0\0\0")],
        layout="extensible",
    )
    audio, _ = decode_wav(tf.constant(contents))
    np.testing.assert_array_equal(audio.numpy(), samples / 32768.0)


def test_decodes_inside_tf_data_and_a_saved_model(tmp_path, real_files):
    mimii = str([p for p in real_files if "mimii" in str(p)][0])
    expected, _ = scipy_reference(open(mimii, "rb").read())

    dataset = tf.data.Dataset.from_tensor_slices([mimii]).map(
        lambda path: decode_wav(tf.io.read_file(path), channel=2, source=path)[0])
    np.testing.assert_array_equal(next(iter(dataset)).numpy()[:, 0], expected[:, 2])

    class Decoder(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
        def __call__(self, contents):
            audio, rate = decode_wav(contents, channel=0)
            return {"audio": audio, "sample_rate": rate}

    tf.saved_model.save(Decoder(), str(tmp_path / "decoder"))
    restored = tf.saved_model.load(str(tmp_path / "decoder"))
    out = restored(tf.io.read_file(mimii))
    np.testing.assert_array_equal(out["audio"].numpy()[:, 0], expected[:, 0])
    assert int(out["sample_rate"]) == 16000


def test_header_fields(real_files):
    mimii = [p for p in real_files if "mimii" in str(p)][0]
    header = parse_wav_header(tf.constant(mimii.read_bytes()))
    assert int(header["format_tag"]) == 1  # EXTENSIBLE's PCM subformat
    assert int(header["channels"]) == 8
    assert int(header["bits_per_sample"]) == 16
    assert int(header["data_bytes"]) == 160000 * 16


def _decode_error(contents, channel=None) -> str:
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        decode_wav(tf.constant(contents), channel=channel, source=tf.constant("pump/x.wav"))
    message = info.value.message
    assert "pump/x.wav" in message
    return message


def test_truncated_file_is_named(real_files):
    mimii = [p for p in real_files if "mimii" in str(p)][0].read_bytes()
    assert "truncated file" in _decode_error(mimii[: len(mimii) // 2])
    assert "no 'data' chunk" in _decode_error(mimii[:60])


def test_not_riff_wave():
    assert "not a RIFF/WAVE file" in _decode_error(b"ID3\x04 this is an mp3, not a wav at all")
    assert "not a RIFF/WAVE file" in _decode_error(b"")


@pytest.mark.parametrize("format_tag,bits,name", [(1, 8, "8-bit"), (6, 8, "A-law"),
                                                  (7, 8, "mu-law"), (1, 12, "12-bit")])
def test_unsupported_encodings(format_tag, bits, name):
    contents = make_wav(np.zeros((16, 1)), format_tag=format_tag, bits=8,
                        data_override=b"\x80" * 16)
    if bits != 8:  # a 12-bit claim in the header
        contents = contents.replace(b"\x08\x00data", b"\x0c\x00data")
    message = _decode_error(contents)
    assert "unsupported encoding" in message
    assert f"format tag {format_tag}" in message


def test_empty_data_chunk():
    contents = make_wav(np.zeros((0, 2), np.int16))
    assert "empty 'data' chunk" in _decode_error(contents)


def test_short_extensible_fmt_chunk():
    contents = make_wav(np.zeros((4, 1), np.int16), layout="cb")
    contents = contents.replace(b"\x01\x00\x01\x00", b"\xfe\xff\x01\x00", 1)
    assert "EXTENSIBLE 'fmt ' chunk of 18 bytes" in _decode_error(contents)


def test_channel_out_of_range():
    contents = make_wav(np.zeros((4, 2), np.int16))
    assert "channel 5 requested but the file has 2 channel(s)" in _decode_error(contents, channel=5)
    with pytest.raises(ValueError, match="channel must be"):
        decode_wav(tf.constant(contents), channel="left")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_samples_are_named(bad):
    samples = np.zeros((64, 2), np.float32)
    samples[40, 1] = bad
    contents = make_wav(samples, format_tag=3, bits=32)
    message = _decode_error(contents)
    assert "non-finite samples (NaN or Inf)" in message
    # The channel in use is finite, the file is still refused.
    assert "non-finite" in _decode_error(contents, channel=0)


def test_two_fmt_chunks_are_refused_by_graph_and_host(tmp_path):
    from tests.wav_bytes import fmt_payload
    from pump_keras.wavfile import WavFormatError, read_wav_header

    samples = np.arange(64, dtype=np.int16).reshape(-1, 2)
    second = fmt_payload(1, 1, 16000, 16)  # mono: the same bytes would read as other audio
    contents = make_wav(samples, after_fmt=[(b"fact", b"\0\0\0\0"), (b"fmt ", second)])
    assert "more than one 'fmt ' chunk" in _decode_error(contents)
    path = tmp_path / "x.wav"
    path.write_bytes(contents)
    with pytest.raises(WavFormatError, match=re.escape(str(path)) + ": more than one 'fmt ' chunk"):
        read_wav_header(str(path))
