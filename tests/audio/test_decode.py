"""WAV decoding in the graph and from host headers: bit-exact on the real clips and on
scipy's and CPython's test files, every header layout and encoding, clear errors."""

import io
import os
import re
import struct
import sysconfig

import numpy as np
import pytest
import scipy.io.wavfile
import soundfile
import tensorflow as tf

from pump_keras.audio.decode import decode_samples, decode_wav, decoder_name, parse_wav_header
from pump_keras.audio.wavfile import read_wav_header
from pump_keras.errors import WavFormatError
from tests.conftest import real_wav_files
from tests.wav_bytes import make_wav


def scipy_reference(contents: bytes):
    """(float32 [frames, channels], rate) from scipy, with the documented scaling.

    scipy returns integers left-justified in a dtype of D >= C bits (a 20-bit
    sample in a 24-bit container as int32 times 2**8), so value / 2**(D - 1)
    is the container's value / 2**(C - 1); unsigned 8-bit is (u - 128) / 128;
    floats are cast.
    """
    rate, data = scipy.io.wavfile.read(io.BytesIO(contents))
    data = data.reshape(data.shape[0], -1)
    if data.dtype.kind == "u":
        return (data.astype(np.float32) - 128) / 128, rate
    if data.dtype.kind == "i":
        return data.astype(np.float32) / np.float32(2.0 ** (8 * data.dtype.itemsize - 1)), rate
    return data.astype(np.float32), rate


def host_decode(path, channel=None):
    """The training pipeline's way: header on the host, samples sliced in the graph."""
    header = read_wav_header(str(path))
    return decode_samples(tf.constant(open(path, "rb").read()), header.data_offset,
                          header.data_bytes - header.data_bytes % header.block_align,
                          header.channels, decoder_name(header), channel).numpy()


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
        return rng.uniform(-1, 1, (frames, channels))
    top = 2 ** (bits - 1)
    values = rng.integers(-top, top, (frames, channels), dtype=np.int64)
    values[0, 0], values[1, 0] = -top, top - 1  # the extremes decode exactly too
    return values


@pytest.mark.parametrize("layout", ["plain", "cb", "extensible"])
@pytest.mark.parametrize("format_tag,bits", [(1, 8), (1, 16), (1, 24), (1, 32), (1, 40), (1, 64),
                                             (3, 32), (3, 64)])
@pytest.mark.parametrize("channels,big_endian", [(1, False), (3, False), (3, True)])
def test_encodings_and_layouts_match_scipy(layout, format_tag, bits, channels, big_endian):
    rng = np.random.default_rng(bits * 10 + channels)
    samples = _samples(rng, 257, channels, bits, floating=format_tag == 3)
    contents = make_wav(samples, sample_rate=22050, format_tag=format_tag, bits=bits, layout=layout,
                        after_fmt=[(b"fact", b"\x01\x01\0\0")], big_endian=big_endian)
    expected, rate = scipy_reference(contents)
    audio, sample_rate = decode_wav(tf.constant(contents))
    assert int(sample_rate) == rate == 22050
    np.testing.assert_array_equal(audio.numpy(), expected)
    if bits < 32 or format_tag == 3:
        # integers of up to 24 bits and floats are exact in float32: check the scaling too
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


@pytest.mark.parametrize("format_tag,bits,block_align", [
    (2, 4, 256), (0x11, 4, 512), (0x55, 0, 1),  # MS ADPCM, IMA ADPCM, MP3, as they come
    (3, 16, 2), (3, 24, 3), (2, 16, 2)])
def test_unsupported_encodings(format_tag, bits, block_align, tmp_path):
    contents = bytearray(make_wav(np.zeros((16, 1)), format_tag=format_tag, data_override=b"\0" * 512))
    contents[32:36] = struct.pack("<HH", block_align, bits)
    contents = bytes(contents)
    message = _decode_error(contents)
    assert f"unsupported encoding (format tag {format_tag}, {bits}-bit); supported are PCM" in message
    path = tmp_path / "x.wav"
    path.write_bytes(contents)
    with pytest.raises(WavFormatError, match=f"unsupported encoding \\(format tag {format_tag}"):
        read_wav_header(str(path))


@pytest.mark.parametrize("bits,block_align", [(12, 1), (24, 4), (0, 2), (72, 9)])
def test_inconsistent_headers(bits, block_align, tmp_path):
    contents = bytearray(make_wav(np.zeros((16, 1), np.int16)))
    contents[32:36] = struct.pack("<HH", block_align, bits)
    message = _decode_error(bytes(contents))
    assert f"inconsistent header (1 channels, block align {block_align}, {bits} bits)" in message
    path = tmp_path / "x.wav"
    path.write_bytes(contents)
    with pytest.raises(WavFormatError, match="inconsistent header"):
        read_wav_header(str(path))


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

    samples = np.arange(64, dtype=np.int16).reshape(-1, 2)
    second = fmt_payload(1, 1, 16000, 16)  # mono: the same bytes would read as other audio
    contents = make_wav(samples, after_fmt=[(b"fact", b"\0\0\0\0"), (b"fmt ", second)])
    assert "more than one 'fmt ' chunk" in _decode_error(contents)
    path = tmp_path / "x.wav"
    path.write_bytes(contents)
    with pytest.raises(WavFormatError, match=re.escape(str(path)) + ": more than one 'fmt ' chunk"):
        read_wav_header(str(path))


# --- every WAV of scipy's and CPython's own test suites

SCIPY_WAVS = os.path.join(os.path.dirname(scipy.__file__), "io", "tests", "data")
CPYTHON_WAVS = os.path.join(sysconfig.get_paths()["stdlib"], "test", "audiodata")
# scipy's deliberately broken files, and what we say about them.
BROKEN = {
    "test-44100Hz-le-1ch-4bytes-early-eof-no-data.wav": "no 'data' chunk found",
    "test-44100Hz-le-1ch-4bytes-early-eof.wav":
        "truncated file: 'data' chunk declares 17640 bytes but only 944 follow",
    "test-44100Hz-le-1ch-4bytes-incomplete-chunk.wav": "no 'data' chunk found",
    "test-8000Hz-le-3ch-5S-24bit-inconsistent.wav":
        "inconsistent header (3 channels, block align 4, 24 bits)",
}
MULAW_WAV = "test-8000Hz-le-1ch-1byte-ulaw.wav"  # scipy refuses mu-law; soundfile reads it


def suite_wavs():
    """The WAV files shipped with scipy and, where this install has them, CPython."""
    found = [os.path.join(SCIPY_WAVS, name) for name in sorted(os.listdir(SCIPY_WAVS))
             if name.endswith(".wav")]
    if os.path.isdir(CPYTHON_WAVS):  # missing from some Python installs
        found += [os.path.join(CPYTHON_WAVS, name) for name in sorted(os.listdir(CPYTHON_WAVS))
                  if name.endswith(".wav")]
    return found


READABLE_SUITE_WAVS = [p for p in suite_wavs() if os.path.basename(p) not in BROKEN]


def test_the_suites_hold_what_we_test():
    scipy_names = {os.path.basename(p) for p in suite_wavs() if p.startswith(SCIPY_WAVS)}
    assert set(BROKEN) <= scipy_names and MULAW_WAV in scipy_names
    assert len(scipy_names) - len(BROKEN) == 18


def suite_reference(path):
    """What a mainstream reader makes of `path`, with the documented scaling."""
    if os.path.basename(path) == MULAW_WAV:
        audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
        return audio, rate
    return scipy_reference(open(path, "rb").read())


@pytest.mark.parametrize("path", READABLE_SUITE_WAVS, ids=os.path.basename)
def test_suite_files_bit_exact_in_the_graph_and_from_host_headers(path):
    expected, rate = suite_reference(path)
    contents = tf.constant(open(path, "rb").read())
    audio, sample_rate = decode_wav(contents, source=tf.constant(path))
    assert int(sample_rate) == rate
    np.testing.assert_array_equal(audio.numpy(), expected)
    np.testing.assert_array_equal(host_decode(path), expected)
    last = expected.shape[1] - 1
    one, _ = decode_wav(contents, channel=last)
    np.testing.assert_array_equal(one.numpy()[:, 0], expected[:, last])
    np.testing.assert_array_equal(host_decode(path, channel=last)[:, 0], expected[:, last])


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_suite_broken_files_are_refused_clearly(name):
    path = os.path.join(SCIPY_WAVS, name)
    assert BROKEN[name] in _decode_error(open(path, "rb").read())
    with pytest.raises(WavFormatError, match=re.escape(path) + ": " + re.escape(BROKEN[name])):
        read_wav_header(path)


def test_rf64_sizes_come_from_the_ds64_chunk(tmp_path):
    contents = open(os.path.join(SCIPY_WAVS, "test-8000Hz-le-3ch-5S-24bit-rf64.wav"), "rb").read()
    assert b"data\xff\xff\xff\xff" in contents
    cut = contents[:contents.index(b"data") + 8 + 42]
    assert "'data' chunk declares 45 bytes but only 42 follow" in _decode_error(cut)
    path = tmp_path / "x.wav"
    path.write_bytes(cut)
    with pytest.raises(WavFormatError, match="'data' chunk declares 45 bytes but only 42 follow"):
        read_wav_header(str(path))


@pytest.mark.parametrize("format_tag,subtype", [(6, "ALAW"), (7, "ULAW")])
def test_every_g711_code_matches_soundfile(format_tag, subtype, tmp_path):
    contents = make_wav(np.zeros((256, 1)), format_tag=format_tag, bits=8,
                        data_override=bytes(range(256)))
    expected, _ = soundfile.read(io.BytesIO(contents), dtype="float32", always_2d=True)
    audio, _ = decode_wav(tf.constant(contents))
    np.testing.assert_array_equal(audio.numpy(), expected)
    path = tmp_path / "x.wav"
    path.write_bytes(contents)
    np.testing.assert_array_equal(host_decode(path), expected)
    # ... and files soundfile writes itself, with its 18-byte 'fmt ' and 'fact' chunks.
    written = io.BytesIO()
    soundfile.write(written, np.linspace(-1, 1, 300), 8000, format="WAV", subtype=subtype)
    audio, _ = decode_wav(tf.constant(written.getvalue()))
    expected, _ = soundfile.read(io.BytesIO(written.getvalue()), dtype="float32", always_2d=True)
    np.testing.assert_array_equal(audio.numpy(), expected)


def test_common_16_bit_files_keep_the_in_place_decoder(real_files):
    for path in real_files:
        assert decoder_name(read_wav_header(str(path))) == "pcm16_in_place"
    riffx = make_wav(np.ones((4, 1), np.int16), big_endian=True)
    assert decode_wav(tf.constant(riffx))[0].numpy()[0, 0] == 1 / 32768
