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
when `source` is given, which file it was. Float data holding NaN or Inf is
bad bytes too: it would turn every score computed from it into NaN.
"""

from __future__ import annotations

import functools
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


def _u16_fields(contents: tf.Tensor, pos: tf.Tensor, nbytes: int) -> tf.Tensor:
    """The `nbytes` bytes at `pos` as little-endian uint16 words, int64 `[nbytes // 2]`.

    Reads past the end come back as zeros, so the shape always holds.
    """
    raw = tf.strings.substr(contents, pos, nbytes)
    raw = tf.strings.substr(tf.strings.join([raw, b"\0" * nbytes]), 0, nbytes)
    return tf.cast(tf.io.decode_raw(raw, tf.uint16), tf.int64)


def _find_chunks(contents: tf.Tensor, length: tf.Tensor):
    """Walks RIFF chunks from byte 12 up to `data`.

    Returns offsets and sizes of the first `fmt ` and of `data`, and how many
    `fmt ` chunks come before `data`. An offset of -1 means the chunk was not
    found. Chunks are word-aligned: an odd-sized chunk is followed by one pad
    byte.
    """
    minus_one = tf.constant(-1, tf.int64)
    zero = tf.constant(0, tf.int64)

    def keep_walking(pos, fmt_pos, fmt_size, fmt_count, data_pos, data_size):
        return tf.logical_and(data_pos < 0, pos + 8 <= length)

    def next_chunk(pos, fmt_pos, fmt_size, fmt_count, data_pos, data_size):
        chunk_id = tf.strings.substr(contents, pos, 4)
        words = _u16_fields(contents, pos + 4, 4)
        size = words[0] + words[1] * 65536
        is_any_fmt = tf.equal(chunk_id, "fmt ")
        is_fmt = tf.logical_and(is_any_fmt, fmt_pos < 0)
        is_data = tf.equal(chunk_id, "data")
        fmt_pos = tf.where(is_fmt, pos + 8, fmt_pos)
        fmt_size = tf.where(is_fmt, size, fmt_size)
        fmt_count += tf.cast(is_any_fmt, tf.int64)
        data_pos = tf.where(is_data, pos + 8, data_pos)
        data_size = tf.where(is_data, size, data_size)
        return pos + 8 + size + size % 2, fmt_pos, fmt_size, fmt_count, data_pos, data_size

    start = (tf.constant(12, tf.int64), minus_one, zero, zero, minus_one, zero)
    _, fmt_pos, fmt_size, fmt_count, data_pos, data_size = tf.while_loop(
        keep_walking, next_chunk, start)
    return fmt_pos, fmt_size, fmt_count, data_pos, data_size


def _read_header(contents: tf.Tensor, length: tf.Tensor):
    """Header values of WAV bytes and the `(ok, message_fn)` checks they must pass.

    Nothing here can fail: garbage bytes walk harmlessly because every read
    is clamped to the input. The caller decides how the checks are enforced.
    """
    head = tf.strings.substr(contents, 0, 12)
    is_riff = tf.logical_and(
        tf.equal(tf.strings.substr(head, 0, 4), "RIFF"),
        # (clamped: substr fails past the end of a short input)
        tf.equal(tf.strings.substr(head, tf.minimum(tf.strings.length(head), 8), 4), "WAVE"),
    )
    fmt_pos, fmt_size, fmt_count, data_pos, data_size = _find_chunks(contents, length)
    fmt = _u16_fields(contents, tf.clip_by_value(fmt_pos, 0, length), 40)
    format_tag, channels, block_align, bits = fmt[0], fmt[1], fmt[6], fmt[7]
    sample_rate = fmt[2] + fmt[3] * 65536
    is_extensible = tf.equal(format_tag, WAVE_FORMAT_EXTENSIBLE)
    format_tag = tf.where(is_extensible, fmt[12], format_tag)
    encoding = _encoding_index(format_tag, bits)
    available = length - data_pos

    def text(template, *values):
        return lambda: tf.strings.format(template, values) if values else tf.constant(template)

    checks = [
        (is_riff, text("not a RIFF/WAVE file (the first 12 bytes lack 'RIFF' and 'WAVE')")),
        (data_pos >= 0, text("no 'data' chunk found in {} bytes (truncated or not audio)", length)),
        (fmt_pos >= 0, text("no 'fmt ' chunk before the 'data' chunk")),
        # Which one would a reader believe? Readers differ, so none is.
        (fmt_count <= 1, text("more than one 'fmt ' chunk; the format is ambiguous")),
        (fmt_size >= 16, text("'fmt ' chunk of {} bytes is too short (need 16)", fmt_size)),
        (fmt_pos + fmt_size <= length, text("truncated 'fmt ' chunk")),
        (tf.logical_or(tf.logical_not(is_extensible), fmt_size >= 40),
         text("EXTENSIBLE 'fmt ' chunk of {} bytes (need 40)", fmt_size)),
        (encoding >= 0, text("unsupported encoding (format tag {}, {}-bit); supported are PCM "
                             "16/24/32-bit and IEEE float 32-bit", format_tag, bits)),
        (tf.logical_and(channels > 0, tf.equal(block_align, channels * bits // 8)),
         text("inconsistent header ({} channels, block align {}, {} bits)",
              channels, block_align, bits)),
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
        "data_offset": data_pos,
        "data_bytes": data_size - data_size % tf.maximum(block_align, 1),
        "encoding": encoding,
    }
    return values, checks


def parse_wav_header(contents: tf.Tensor, source: Optional[tf.Tensor] = None) -> dict:
    """Reads the header of WAV bytes; returns scalar tensors describing the data.

    Keys: `format_tag` (the effective format, the subformat for EXTENSIBLE),
    `channels`, `sample_rate`, `bits_per_sample`, `block_align`,
    `data_offset`, `data_bytes` (whole frames only), `encoding` (the index of
    a supported encoding). A header failing a check raises a readable
    `InvalidArgumentError`.
    """
    contents = tf.convert_to_tensor(contents, tf.string)
    source = _as_source(source)
    values, checks = _read_header(contents, tf.cast(tf.strings.length(contents), tf.int64))
    with tf.control_dependencies([check(source, checks)]):
        return {key: tf.identity(value) for key, value in values.items()}


def _as_source(source) -> tf.Tensor:
    return tf.constant("WAV bytes") if source is None else tf.convert_to_tensor(source, tf.string)


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


# Sample decoders, one per way the data chunk is laid out; index = branch.
DECODERS = ("pcm16_in_place", "pcm16", "pcm24", "pcm32", "float32")


def decoder_name(format_tag: int, bits_per_sample: int, data_offset: int) -> str:
    """The `DECODERS` entry for a header known on the host (see `wavfile.read_wav_header`)."""
    index = _ENCODINGS.index((format_tag, bits_per_sample))
    if index == 0 and data_offset % 2 == 0:
        return "pcm16_in_place"
    return DECODERS[index + 1]


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
    width = tf.cast(num_channels, tf.int32)
    offset = tf.cast(data_offset, tf.int32)
    size = tf.cast(data_bytes, tf.int32)

    def pick(samples, scale, start=0, end=None):
        """Samples `[start:end]` of a flat interleaved vector as `[frames, channels]` floats."""
        end = tf.shape(samples)[0] if end is None else end
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
    data = tf.strings.substr(contents, offset, size)
    if decoder == "pcm16":
        return pick(tf.io.decode_raw(data, tf.int16), 1.0 / 2**15)
    if decoder == "pcm24":
        return pick(_int24_to_int32(data), 1.0 / 2**23)
    if decoder == "pcm32":
        return pick(tf.io.decode_raw(data, tf.int32), 1.0 / 2**31)
    if decoder == "float32":
        return pick(_finite(tf.io.decode_raw(data, tf.float32), source), 1.0)
    raise ValueError(f"Unknown decoder {decoder!r}; expected one of {DECODERS}.")


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
    in_place = tf.logical_and(tf.equal(header["encoding"], 0), tf.equal(offset % 2, 0))
    all_ok = tf.reduce_all(tf.stack([ok for ok, _ in checks]))
    branch = tf.where(in_place, 0, header["encoding"] + 1)
    audio = tf.switch_case(tf.where(all_ok, branch, len(branches) - 1), branches)
    audio = tf.ensure_shape(audio, [None, None if channel is None else 1])
    return audio, header["sample_rate"]
