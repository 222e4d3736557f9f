"""WAV decoding as TensorFlow graph ops.

`tf.audio.decode_wav` only reads plain 16-byte PCM headers and rejects the
published MIMII files (WAVE_FORMAT_EXTENSIBLE, a 40-byte `fmt ` chunk and a
`fact` chunk). `decode_wav` here walks the RIFF chunks itself with string and
`decode_raw` ops, so it runs inside `tf.data` and inside an exported
SavedModel alike: what is trained is what is served.

Supported: every encoding of `wavfile.SUPPORTED_ENCODINGS` (PCM of 1 to 8
bytes per sample whatever its valid bits, IEEE float 32/64-bit, A-law,
mu-law), in plain (`fmt ` of 16 bytes or more) or EXTENSIBLE (40 bytes)
headers, in RIFF, big-endian RIFX and RF64 (64-bit sizes from the `ds64`
chunk) files, any number of channels; unknown chunks (`fact`, `LIST`, ...)
are skipped. Samples are scaled as that table documents: an integer
container of C bits is divided by 2**(C - 1), so 16-bit audio is
`int16 / 32768`, bit-exact with `tf.audio.decode_wav` and scipy.

Bad bytes raise `InvalidArgumentError` whose message says what is wrong and,
when `source` is given, which file it was. Float data holding NaN or Inf is
bad bytes too: it would turn every score computed from it into NaN.
"""

from __future__ import annotations

import functools
from typing import Optional, Union

import numpy as np
import tensorflow as tf

from pump_keras.audio.wavfile import (
    RF64_SIZE_IN_DS64, SUPPORTED_ENCODINGS, SUPPORTED_TEXT, WAVE_FORMAT_EXTENSIBLE, WAVE_FORMAT_PCM, WavHeader)

Channel = Union[None, int, str]

# The encoding index of the graph is the position in `SUPPORTED_ENCODINGS`.
_ENCODINGS = tuple(SUPPORTED_ENCODINGS)
_FORMAT_TAGS = sorted({tag for tag, _ in _ENCODINGS})

# Sample decoders, one per way the data chunk is laid out; index = branch.
# The common case (16-bit data at an even offset) views the whole file as
# int16 in place; every multi-byte encoding has a big-endian (RIFX) twin.
DECODERS = ("pcm16_in_place",) + tuple(SUPPORTED_ENCODINGS.values()) + tuple(
    f"{name}_be" for (_, width), name in SUPPORTED_ENCODINGS.items() if width > 1)


def _decoder(encoding: tuple, big_endian: bool) -> str:
    """The `DECODERS` entry of an encoding key, except the in-place view."""
    name = SUPPORTED_ENCODINGS[encoding]
    return f"{name}_be" if big_endian and encoding[1] > 1 else name


_PCM16 = (WAVE_FORMAT_PCM, 2)

# DECODERS index of (encoding index, big-endian) at `2 * index + big_endian`.
_BRANCH_OF_ENCODING = tuple(
    DECODERS.index(_decoder(encoding, big_endian))
    for encoding in _ENCODINGS for big_endian in (False, True))


def _bytes_at(contents: tf.Tensor, pos: tf.Tensor, nbytes: int) -> tf.Tensor:
    """The `nbytes` bytes at `pos` as int64 `[nbytes]`.

    Reads past the end come back as zeros, so the shape always holds.
    """
    pos = tf.clip_by_value(pos, 0, tf.cast(tf.strings.length(contents), tf.int64))
    raw = tf.strings.substr(contents, pos, nbytes)
    raw = tf.strings.substr(tf.strings.join([raw, b"\0" * nbytes]), 0, nbytes)
    return tf.cast(tf.io.decode_raw(raw, tf.uint8), tf.int64)


def _unsigned(octets: tf.Tensor, start: int, width: int, big_endian: tf.Tensor) -> tf.Tensor:
    """The unsigned integer in `octets[start:start + width]`, in either byte order."""
    weights = 256 ** np.arange(width, dtype=np.int64)
    weights = tf.where(big_endian, weights[::-1], weights)
    return tf.reduce_sum(octets[start:start + width] * weights)


def _find_chunks(contents: tf.Tensor, length: tf.Tensor, big_endian: tf.Tensor, is_rf64: tf.Tensor):
    """Walks RIFF chunks from byte 12 up to `data`.

    Returns offsets and sizes of the first `fmt ` and of `data`, and how many
    `fmt ` chunks come before `data`. An offset of -1 means the chunk was not
    found. Chunks are word-aligned: an odd-sized chunk is followed by one pad
    byte. In RF64 files the `data` size comes from the `ds64` chunk.
    """
    minus_one = tf.constant(-1, tf.int64)
    zero = tf.constant(0, tf.int64)

    def keep_walking(pos, fmt_pos, fmt_size, fmt_count, data_pos, data_size, ds64_data_size):
        return tf.logical_and(data_pos < 0, pos + 8 <= length)

    def next_chunk(pos, fmt_pos, fmt_size, fmt_count, data_pos, data_size, ds64_data_size):
        chunk_id = tf.strings.substr(contents, pos, 4)
        size = _unsigned(_bytes_at(contents, pos + 4, 4), 0, 4, big_endian)
        is_any_fmt = tf.equal(chunk_id, "fmt ")
        is_fmt = tf.logical_and(is_any_fmt, fmt_pos < 0)
        is_data = tf.equal(chunk_id, "data")
        is_ds64 = tf.logical_and(is_rf64, tf.equal(chunk_id, "ds64"))
        fmt_pos = tf.where(is_fmt, pos + 8, fmt_pos)
        fmt_size = tf.where(is_fmt, size, fmt_size)
        fmt_count += tf.cast(is_any_fmt, tf.int64)
        data_pos = tf.where(is_data, pos + 8, data_pos)
        data_size = tf.where(is_data, size, data_size)
        # ds64: RIFF size, data size, sample count (little-endian 64-bit words).
        ds64_words = _bytes_at(contents, pos + 16, 8)
        ds64_data_size = tf.where(
            is_ds64, _unsigned(ds64_words, 0, 8, tf.constant(False)), ds64_data_size)
        return (pos + 8 + size + size % 2, fmt_pos, fmt_size, fmt_count, data_pos, data_size,
                ds64_data_size)

    start = (tf.constant(12, tf.int64), minus_one, zero, zero, minus_one, zero, minus_one)
    _, fmt_pos, fmt_size, fmt_count, data_pos, data_size, ds64_data_size = tf.while_loop(
        keep_walking, next_chunk, start)
    in_ds64 = tf.logical_and(tf.logical_and(is_rf64, ds64_data_size >= 0),
                             tf.equal(data_size, RF64_SIZE_IN_DS64))
    data_size = tf.where(in_ds64, ds64_data_size, data_size)
    return fmt_pos, fmt_size, fmt_count, data_pos, data_size


def _read_header(contents: tf.Tensor, length: tf.Tensor):
    """Header values of WAV bytes and the `(ok, message_fn)` checks they must pass.

    Nothing here can fail: garbage bytes walk harmlessly because every read
    is clamped to the input. The caller decides how the checks are enforced.
    """
    head = tf.strings.substr(contents, 0, 12)
    riff_id = tf.strings.substr(head, 0, 4)
    big_endian = tf.equal(riff_id, "RIFX")
    is_rf64 = tf.equal(riff_id, "RF64")
    is_riff = tf.logical_and(
        tf.reduce_any([tf.equal(riff_id, "RIFF"), big_endian, is_rf64]),
        # (clamped: substr fails past the end of a short input)
        tf.equal(tf.strings.substr(head, tf.minimum(tf.strings.length(head), 8), 4), "WAVE"),
    )
    fmt_pos, fmt_size, fmt_count, data_pos, data_size = _find_chunks(
        contents, length, big_endian, is_rf64)
    fmt = _bytes_at(contents, fmt_pos, 40)

    def field(start, width):
        return _unsigned(fmt, start, width, big_endian)

    format_tag, channels, sample_rate = field(0, 2), field(2, 2), field(4, 4)
    block_align, bits = field(12, 2), field(14, 2)
    is_extensible = tf.equal(format_tag, WAVE_FORMAT_EXTENSIBLE)
    # The subformat GUID's first field, a 32-bit word in the file's byte order.
    format_tag = tf.where(is_extensible, field(24, 4), format_tag)
    sample_bytes = (bits + 7) // 8
    encoding = _encoding_index(format_tag, sample_bytes)
    available = length - data_pos

    def text(template, *values):
        return lambda: tf.strings.format(template, values) if values else tf.constant(template)

    unsupported = text("unsupported encoding (format tag {}, {}-bit); supported are "
                       + SUPPORTED_TEXT, format_tag, bits)
    checks = [
        (is_riff, text("not a RIFF/WAVE file (the first 12 bytes lack 'RIFF' and 'WAVE')")),
        (data_pos >= 0, text("no 'data' chunk found in {} bytes (truncated or not audio)", length)),
        (fmt_pos >= 0, text("no 'fmt ' chunk before the 'data' chunk")),
        # Which one would a reader believe? Readers differ, so none is.
        (fmt_count <= 1, text("more than one 'fmt ' chunk; the format is ambiguous")),
        (fmt_size >= 16, text("'fmt ' chunk of {} bytes is too short (need 16)", fmt_size)),
        (fmt_pos + tf.minimum(fmt_size, 40) <= length, text("truncated 'fmt ' chunk")),
        (tf.logical_or(tf.logical_not(is_extensible), fmt_size >= 40),
         text("EXTENSIBLE 'fmt ' chunk of {} bytes (need 40)", fmt_size)),
        # A codec's header (ADPCM, MP3) need not be consistent as PCM would be.
        (tf.reduce_any([tf.equal(format_tag, tag) for tag in _FORMAT_TAGS]), unsupported),
        (tf.reduce_all([channels > 0, bits > 0, bits <= 64,
                        tf.equal(block_align, channels * sample_bytes)]),
         text("inconsistent header ({} channels, block align {}, {} bits)",
              channels, block_align, bits)),
        (encoding >= 0, unsupported),
        (sample_rate > 0, text("sample rate of 0 Hz")),
        (data_size >= tf.maximum(block_align, 1), text("empty 'data' chunk (no audio samples)")),
        (data_size <= available, text(
            "truncated file: 'data' chunk declares {} bytes but only {} follow",
            data_size, available)),
    ]
    values = {
        "format_tag": format_tag,
        "channels": channels,
        "sample_rate": tf.cast(sample_rate, tf.int32),
        "bits_per_sample": bits,
        "block_align": block_align,
        "big_endian": big_endian,
        "data_offset": data_pos,
        "data_bytes": data_size - data_size % tf.maximum(block_align, 1),
        "encoding": encoding,
    }
    return values, checks


def parse_wav_header(contents: tf.Tensor, source: Optional[tf.Tensor] = None) -> dict:
    """Reads the header of WAV bytes; returns scalar tensors describing the data.

    Keys: `format_tag` (the effective format, the subformat for EXTENSIBLE),
    `channels`, `sample_rate`, `bits_per_sample`, `block_align`,
    `big_endian` (RIFX), `data_offset`, `data_bytes` (whole frames only),
    `encoding` (the index of a supported encoding). A header failing a check
    raises a readable `InvalidArgumentError`.
    """
    contents = tf.convert_to_tensor(contents, tf.string)
    source = _as_source(source)
    values, checks = _read_header(contents, tf.cast(tf.strings.length(contents), tf.int64))
    with tf.control_dependencies([check(source, checks)]):
        return {key: tf.identity(value) for key, value in values.items()}


def _as_source(source) -> tf.Tensor:
    return tf.constant("WAV bytes") if source is None else tf.convert_to_tensor(source, tf.string)


def _encoding_index(format_tag: tf.Tensor, sample_bytes: tf.Tensor) -> tf.Tensor:
    """Index into `SUPPORTED_ENCODINGS`, or -1 when the encoding is not supported."""
    index = tf.constant(-1, tf.int32)
    for i, (tag, width) in enumerate(_ENCODINGS):
        match = tf.logical_and(tf.equal(format_tag, tag), tf.equal(sample_bytes, width))
        index = tf.where(match, i, index)
    return index


def _left_justified(raw_bytes: tf.Tensor, width: int, big_endian: bool) -> tf.Tensor:
    """Signed samples of `width` bytes as the high bytes of int32 (width 3) or int64 (5 to 7).

    Zero low bytes are put below each sample and the words reinterpreted
    (little-endian, as every platform TensorFlow runs on): the sign comes
    for free, and the value is the sample times 2**(8 * padding), as scipy
    returns it.
    """
    octets = tf.reshape(tf.io.decode_raw(raw_bytes, tf.uint8), [-1, width])
    if big_endian:
        octets = tf.reverse(octets, axis=[1])
    word = 4 if width < 4 else 8
    padded = tf.pad(octets, [[0, 0], [word - width, 0]])
    return tf.bitcast(padded, tf.int32 if word == 4 else tf.int64)


def _g711_table(law: str) -> np.ndarray:
    """The 256 codes of ITU-T G.711 A-law or mu-law expanded to 16-bit linear, int32."""
    codes = np.arange(256)
    if law == "mulaw":
        inverted = ~codes & 0xFF
        exponent, mantissa = (inverted >> 4) & 7, inverted & 0x0F
        magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
        return np.where(inverted & 0x80, -magnitude, magnitude).astype(np.int32)
    toggled = codes ^ 0x55
    exponent, mantissa = (toggled >> 4) & 7, toggled & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8,
                         ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(toggled & 0x80, magnitude, -magnitude).astype(np.int32)


def _first_failure_message(checks) -> tf.Tensor:
    """The message of the first failing check."""
    message = tf.constant("")
    for ok, message_fn in reversed(checks):
        message = tf.where(ok, message, message_fn())
    return message


def check(source: tf.Tensor, checks) -> tf.Tensor:
    """Fails with the message of the first failing check; a bool tensor to depend on.

    `checks` is a list of `(ok, message_fn)`: `ok` a bool tensor, `message_fn`
    building the error text. Messages are built only on the failure branch,
    so passing checks cost one conditional, not string formatting.
    """
    all_ok = tf.reduce_all(tf.stack([ok for ok, _ in checks]))

    def fail():
        _raise(source, _first_failure_message(checks))
        return tf.constant(False)

    return tf.cond(all_ok, lambda: tf.constant(True), fail)


def _raise(source: tf.Tensor, message: tf.Tensor) -> tf.Operation:
    return tf.debugging.Assert(False, [tf.strings.join([source, ": ", message])], summarize=1)


def decoder_name(header: WavHeader) -> str:
    """The `DECODERS` entry for a header read on the host (see `wavfile.read_wav_header`)."""
    encoding = (header.format_tag, header.sample_bytes)
    if encoding == _PCM16 and not header.big_endian and header.data_offset % 2 == 0:
        return "pcm16_in_place"
    return _decoder(encoding, header.big_endian)


def check_finite(samples: tf.Tensor, source: tf.Tensor) -> tf.Tensor:
    """A bool tensor to depend on that fails when `samples` hold NaN or Inf (one reduce)."""
    return check(source, [(
        tf.reduce_all(tf.math.is_finite(samples)),
        lambda: tf.constant("non-finite samples (NaN or Inf); the recording is corrupt"),
    )])


def _finite(samples: tf.Tensor, source: tf.Tensor) -> tf.Tensor:
    """`samples`, once checked to hold no NaN or Inf; only float data can."""
    with tf.control_dependencies([check_finite(samples, source)]):
        return tf.identity(samples)


def _check_channel(channel: Channel) -> None:
    if channel is not None and channel != "mean" and (not isinstance(channel, int) or channel < 0):
        raise ValueError(f"channel must be None, a non-negative int or 'mean', got {channel!r}.")


def decode_samples(
    contents: tf.Tensor,
    data_offset: tf.Tensor,
    data_bytes: tf.Tensor,
    num_channels: tf.Tensor,
    decoder: str,
    channel: Channel = None,
    source: Optional[tf.Tensor] = None,
) -> tf.Tensor:
    """The samples of a data chunk whose place and encoding are already known.

    Args:
        contents: scalar `tf.string`, the whole file.
        data_offset, data_bytes: where the data chunk's whole frames lie.
        num_channels: channels in the file.
        decoder: a `DECODERS` entry (a Python string: the graph has no branch).
        channel: as in `decode_wav`.
        source: as in `decode_wav`.

    Returns:
        float32 `[frames, channels]`, or `[frames, 1]` when a channel is chosen.
        Float data holding NaN or Inf in any channel raises `InvalidArgumentError`.
    """
    _check_channel(channel)
    source = _as_source(source)
    width = tf.cast(num_channels, tf.int64)
    # 64-bit: an RF64 data chunk may lie beyond 2 GB.
    offset = tf.cast(data_offset, tf.int64)
    size = tf.cast(data_bytes, tf.int64)

    def pick(samples, scale, start=0, end=None):
        """Samples `[start:end]` of a flat interleaved vector as `[frames, channels]` floats."""
        end = tf.shape(samples, out_type=tf.int64)[0] if end is None else end
        if isinstance(channel, int):
            # One channel is a strided 1-D slice of the raw integers, taken
            # before the cast (a 2-D column slice costs several times more).
            frames = tf.strided_slice(samples, [start + channel], [end], [width])[:, tf.newaxis]
        else:
            frames = tf.reshape(samples[start:end], tf.stack([-1, width]))
        audio = tf.cast(frames, tf.float32) * scale
        if channel == "mean":
            audio = tf.reduce_mean(audio, axis=1, keepdims=True)
        return audio

    if decoder == "pcm16_in_place":
        # The common case (16-bit data at an even offset): view the whole
        # file as int16 and slice it, saving a copy of the data chunk.
        length = tf.strings.length(contents)
        whole = tf.io.decode_raw(contents, tf.int16, fixed_length=length // 2 * 2)
        return pick(whole, 1.0 / 2**15, offset // 2, (offset + size) // 2)
    if decoder not in DECODERS:
        raise ValueError(f"Unknown decoder {decoder!r}; expected one of {DECODERS}.")
    big_endian = decoder.endswith("_be")
    name = decoder[:-3] if big_endian else decoder
    data = tf.strings.substr(contents, offset, size)
    if name == "pcm8":  # unsigned
        return pick(tf.cast(tf.io.decode_raw(data, tf.uint8), tf.int32) - 128, 1.0 / 2**7)
    if name in ("alaw", "mulaw"):
        linear = tf.gather(_g711_table(name), tf.cast(tf.io.decode_raw(data, tf.uint8), tf.int32))
        return pick(linear, 1.0 / 2**15)
    full_width = {"pcm16": tf.int16, "pcm32": tf.int32, "pcm64": tf.int64}
    if name in full_width:
        samples = tf.io.decode_raw(data, full_width[name], little_endian=not big_endian)
        return pick(samples, 1.0 / 2.0 ** (samples.dtype.size * 8 - 1))
    if name.startswith("pcm"):  # 3, 5, 6 or 7 bytes
        samples = _left_justified(data, int(name[3:]) // 8, big_endian)
        return pick(samples, 1.0 / 2.0 ** (samples.dtype.size * 8 - 1))
    floats = tf.io.decode_raw(data, tf.float32 if name == "float32" else tf.float64,
                              little_endian=not big_endian)
    # float64 is cast first: a finite value beyond float32's range becomes Inf.
    return pick(_finite(tf.cast(floats, tf.float32), source), 1.0)


def decode_wav(
    contents: tf.Tensor,
    channel: Channel = None,
    source: Optional[tf.Tensor] = None,
):
    """Decodes WAV file bytes to `(audio, sample_rate)` with graph ops.

    Args:
        contents: scalar `tf.string`, the whole file.
        channel: `None` keeps every channel; an int keeps that microphone;
            `"mean"` averages all channels. Narrowing happens on the raw
            integers, so one channel of an 8-channel file costs an eighth of
            the conversion work.
        source: optional scalar string (e.g. the file path) put in front of
            every error message.

    Returns:
        `audio`: float32 `[frames, channels]` (`[frames, 1]` when a channel
        is chosen), scaled like `tf.audio.decode_wav`; `sample_rate`: int32.
    """
    _check_channel(channel)
    contents = tf.convert_to_tensor(contents, tf.string)
    source = _as_source(source)
    header, checks = _read_header(contents, tf.cast(tf.strings.length(contents), tf.int64))
    offset, size = header["data_offset"], header["data_bytes"]
    num_channels = header["channels"]
    if isinstance(channel, int):
        checks.append((
            tf.constant(channel, tf.int64) < num_channels,
            lambda: tf.strings.format("channel {} requested but the file has {} channel(s)",
                                      (channel, num_channels)),
        ))

    def fail():
        with tf.control_dependencies([_raise(source, _first_failure_message(checks))]):
            width = 1 if channel is not None else tf.cast(num_channels, tf.int32)
            return tf.zeros(tf.stack([0, width]), tf.float32)

    # One conditional both enforces the checks and picks the decoder: the
    # last branch, taken when any check fails, raises the error.
    branches = [
        functools.partial(decode_samples, contents, offset, size, num_channels, name, channel, source)
        for name in DECODERS
    ] + [fail]
    encoding, big_endian = header["encoding"], header["big_endian"]
    in_place = tf.reduce_all([
        tf.equal(encoding, _ENCODINGS.index(_PCM16)), tf.logical_not(big_endian),
        tf.equal(offset % 2, 0)])
    all_ok = tf.reduce_all(tf.stack([ok for ok, _ in checks]))
    branch = tf.gather(_BRANCH_OF_ENCODING,
                       2 * tf.maximum(encoding, 0) + tf.cast(big_endian, tf.int32))
    branch = tf.where(in_place, 0, branch)
    audio = tf.switch_case(tf.where(all_ok, branch, len(branches) - 1), branches)
    audio = tf.ensure_shape(audio, [None, None if channel is None else 1])
    return audio, header["sample_rate"]
