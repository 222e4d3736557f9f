"""WAV decoding as TensorFlow graph ops.

`tf.audio.decode_wav` only reads plain 16-byte PCM headers and rejects the
published MIMII files (WAVE_FORMAT_EXTENSIBLE, a 40-byte `fmt ` chunk and a
`fact` chunk). `decode_wav` here walks the RIFF chunks itself with string and
`decode_raw` ops, so it runs inside `tf.data` and inside an exported
SavedModel alike: what is trained is what is served.

Supported: PCM 16-, 24- and 32-bit integer and 32-bit IEEE float, in plain
(`fmt ` of 16 or 18 bytes) or EXTENSIBLE (40 bytes) headers, any number of
channels; unknown chunks (`fact`, `LIST`, ...) are skipped. Samples are
scaled like `tf.audio.decode_wav`: an integer sample of B bits is divided by
2**(B - 1), so 16-bit audio is `int16 / 32768`, bit-exact.

Bad bytes raise `InvalidArgumentError` whose message says what is wrong and,
when `source` is given, which file it was.
"""

from __future__ import annotations

from typing import Optional, Union

import tensorflow as tf

from pump_keras.wavfile import (
    WAVE_FORMAT_EXTENSIBLE,
    WAVE_FORMAT_IEEE_FLOAT,
    WAVE_FORMAT_PCM,
)

Channel = Union[None, int, str]

# Branch index of each supported (format, bits) encoding in `_decode_samples`.
_ENCODINGS = (
    (WAVE_FORMAT_PCM, 16),
    (WAVE_FORMAT_PCM, 24),
    (WAVE_FORMAT_PCM, 32),
    (WAVE_FORMAT_IEEE_FLOAT, 32),
)


def _little_endian(contents: tf.Tensor, pos: tf.Tensor, width: int) -> tf.Tensor:
    """The unsigned little-endian integer of `width` bytes at `pos`, as int64."""
    raw = tf.io.decode_raw(tf.strings.substr(contents, pos, width), tf.uint8)
    raw = tf.cast(raw, tf.int64)
    weights = tf.constant([256**i for i in range(width)], tf.int64)
    # A short read (past the end) gives fewer bytes: pad so the shape holds.
    raw = tf.pad(raw, [[0, width - tf.shape(raw)[0]]])
    return tf.reduce_sum(raw * weights)


def _fail_unless(condition: tf.Tensor, source: tf.Tensor, message) -> tf.Operation:
    """An assert op whose error reads `SOURCE: message`."""
    return tf.debugging.Assert(
        condition, [tf.strings.join([source, ": ", message])], summarize=1
    )


def _find_chunks(contents: tf.Tensor, length: tf.Tensor):
    """Walks RIFF chunks from byte 12; returns offsets and sizes of `fmt ` and `data`.

    An offset of -1 means the chunk was not found. Chunks are word-aligned:
    an odd-sized chunk is followed by one pad byte.
    """
    minus_one = tf.constant(-1, tf.int64)

    def keep_walking(pos, fmt_pos, fmt_size, data_pos, data_size):
        return tf.logical_and(data_pos < 0, pos + 8 <= length)

    def next_chunk(pos, fmt_pos, fmt_size, data_pos, data_size):
        chunk_id = tf.strings.substr(contents, pos, 4)
        size = _little_endian(contents, pos + 4, 4)
        is_fmt = tf.logical_and(tf.equal(chunk_id, "fmt "), fmt_pos < 0)
        is_data = tf.equal(chunk_id, "data")
        fmt_pos = tf.where(is_fmt, pos + 8, fmt_pos)
        fmt_size = tf.where(is_fmt, size, fmt_size)
        data_pos = tf.where(is_data, pos + 8, data_pos)
        data_size = tf.where(is_data, size, data_size)
        return pos + 8 + size + size % 2, fmt_pos, fmt_size, data_pos, data_size

    start = (tf.constant(12, tf.int64), minus_one, tf.constant(0, tf.int64), minus_one,
             tf.constant(0, tf.int64))
    _, fmt_pos, fmt_size, data_pos, data_size = tf.while_loop(keep_walking, next_chunk, start)
    return fmt_pos, fmt_size, data_pos, data_size


def parse_wav_header(contents: tf.Tensor, source: Optional[tf.Tensor] = None) -> dict:
    """Reads the header of WAV bytes; returns scalar tensors describing the data.

    Keys: `format_tag` (the effective format, the subformat for EXTENSIBLE),
    `channels`, `sample_rate`, `bits_per_sample`, `block_align`,
    `data_offset`, `data_bytes` (whole frames only). Every check runs before
    the values are used, failing with a readable `InvalidArgumentError`.
    """
    contents = tf.convert_to_tensor(contents, tf.string)
    source = tf.constant("WAV bytes") if source is None else tf.convert_to_tensor(source, tf.string)
    length = tf.cast(tf.strings.length(contents), tf.int64)

    is_riff = tf.logical_and(
        tf.equal(tf.strings.substr(contents, 0, 4), "RIFF"),
        # (position clamped: substr fails past the end of a short input)
        tf.equal(tf.strings.substr(contents, tf.minimum(length, 8), 4), "WAVE"),
    )
    riff_ok = _fail_unless(
        tf.logical_and(length >= 12, is_riff), source,
        "not a RIFF/WAVE file (the first 12 bytes lack 'RIFF' and 'WAVE')",
    )
    with tf.control_dependencies([riff_ok]):
        fmt_pos, fmt_size, data_pos, data_size = _find_chunks(contents, length)
    chunks_ok = [
        _fail_unless(data_pos >= 0, source, tf.strings.format(
            "no 'data' chunk found in {} bytes (truncated or not audio)", length)),
        _fail_unless(fmt_pos >= 0, source, "no 'fmt ' chunk before the 'data' chunk"),
        _fail_unless(fmt_size >= 16, source, tf.strings.format(
            "'fmt ' chunk of {} bytes is too short (need 16)", fmt_size)),
        _fail_unless(fmt_pos + fmt_size <= length, source, "truncated 'fmt ' chunk"),
    ]
    with tf.control_dependencies(chunks_ok):
        fmt_pos = tf.identity(fmt_pos)
        format_tag = _little_endian(contents, fmt_pos, 2)
        channels = _little_endian(contents, fmt_pos + 2, 2)
        sample_rate = _little_endian(contents, fmt_pos + 4, 4)
        block_align = _little_endian(contents, fmt_pos + 12, 2)
        bits = _little_endian(contents, fmt_pos + 14, 2)
        is_extensible = tf.equal(format_tag, WAVE_FORMAT_EXTENSIBLE)
        subformat = _little_endian(contents, fmt_pos + 24, 2)
        format_tag = tf.where(is_extensible, subformat, format_tag)

    encoding = _encoding_index(format_tag, bits)
    available = length - data_pos
    header_ok = [
        _fail_unless(tf.logical_or(tf.logical_not(is_extensible), fmt_size >= 40), source,
                     tf.strings.format("EXTENSIBLE 'fmt ' chunk of {} bytes (need 40)", fmt_size)),
        _fail_unless(encoding >= 0, source, tf.strings.format(
            "unsupported encoding (format tag {}, {}-bit); supported are PCM 16/24/32-bit "
            "and IEEE float 32-bit", (format_tag, bits))),
        _fail_unless(tf.logical_and(channels > 0, tf.equal(block_align, channels * bits // 8)),
                     source, tf.strings.format(
                         "inconsistent header ({} channels, block align {}, {} bits)",
                         (channels, block_align, bits))),
        _fail_unless(sample_rate > 0, source, "sample rate of 0 Hz"),
        _fail_unless(data_size >= tf.maximum(block_align, 1), source,
                     "empty 'data' chunk (no audio samples)"),
        _fail_unless(data_size <= available, source, tf.strings.format(
            "truncated file: 'data' chunk declares {} bytes but only {} follow",
            (data_size, available))),
    ]
    with tf.control_dependencies(header_ok):
        data_bytes = data_size - data_size % tf.maximum(block_align, 1)
        return {
            "format_tag": tf.identity(format_tag),
            "channels": tf.identity(channels),
            "sample_rate": tf.cast(sample_rate, tf.int32),
            "bits_per_sample": tf.identity(bits),
            "block_align": tf.identity(block_align),
            "data_offset": tf.identity(data_pos),
            "data_bytes": data_bytes,
            "encoding": tf.identity(encoding),
        }


def _encoding_index(format_tag: tf.Tensor, bits: tf.Tensor) -> tf.Tensor:
    """Index into `_ENCODINGS`, or -1 when the encoding is not supported."""
    index = tf.constant(-1, tf.int32)
    for i, (tag, width) in enumerate(_ENCODINGS):
        match = tf.logical_and(tf.equal(format_tag, tag), tf.equal(bits, width))
        index = tf.where(match, i, index)
    return index


def _int24_to_int32(raw_bytes: tf.Tensor) -> tf.Tensor:
    """Little-endian signed 24-bit samples from bytes, as int32."""
    triples = tf.reshape(tf.cast(tf.io.decode_raw(raw_bytes, tf.uint8), tf.int32), [-1, 3])
    value = triples[:, 0] + triples[:, 1] * 256 + triples[:, 2] * 65536
    return tf.where(value >= 2**23, value - 2**24, value)


def _select_channel(frames: tf.Tensor, channel: Channel, num_channels, source) -> tf.Tensor:
    """`[frames, channels]` samples narrowed to `channel` (before any cast)."""
    if channel is None:
        return frames
    if channel == "mean":
        return frames
    check = _fail_unless(
        tf.cast(channel, tf.int64) < num_channels, source,
        tf.strings.format("channel {} requested but the file has {} channel(s)",
                          (channel, num_channels)),
    )
    with tf.control_dependencies([check]):
        return frames[:, channel:channel + 1]


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
    if channel is not None and channel != "mean" and (not isinstance(channel, int) or channel < 0):
        raise ValueError(f"channel must be None, a non-negative int or 'mean', got {channel!r}.")
    contents = tf.convert_to_tensor(contents, tf.string)
    source = tf.constant("WAV bytes") if source is None else tf.convert_to_tensor(source, tf.string)
    header = parse_wav_header(contents, source)
    offset, size = header["data_offset"], header["data_bytes"]
    num_channels = header["channels"]

    def data():
        return tf.strings.substr(contents, offset, size)

    def pick(samples, scale):
        frames = tf.reshape(samples, tf.stack([-1, tf.cast(num_channels, tf.int32)]))
        frames = _select_channel(frames, channel, num_channels, source)
        return tf.cast(frames, tf.float32) * scale

    def pcm16_in_place():
        # The common case (16-bit data at an even offset): view the whole
        # file as int16 and slice, saving a copy of the data chunk.
        whole = tf.io.decode_raw(contents, tf.int16, fixed_length=tf.strings.length(contents) // 2 * 2)
        return pick(whole[offset // 2:(offset + size) // 2], 1.0 / 2**15)

    branches = [
        pcm16_in_place,
        lambda: pick(tf.io.decode_raw(data(), tf.int16), 1.0 / 2**15),
        lambda: pick(_int24_to_int32(data()), 1.0 / 2**23),
        lambda: pick(tf.io.decode_raw(data(), tf.int32), 1.0 / 2**31),
        lambda: pick(tf.io.decode_raw(data(), tf.float32), 1.0),
    ]
    in_place = tf.logical_and(tf.equal(header["encoding"], 0), tf.equal(offset % 2, 0))
    audio = tf.switch_case(tf.where(in_place, 0, header["encoding"] + 1), branches)
    if channel == "mean":
        audio = tf.reduce_mean(audio, axis=1, keepdims=True)
    audio = tf.ensure_shape(audio, [None, None if channel is None else 1])
    return audio, header["sample_rate"]
