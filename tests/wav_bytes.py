"""Hand-built WAV files for tests: every header layout and encoding we claim to read."""

import struct

import numpy as np

# The KSDATAFORMAT_SUBTYPE GUID after its first field, the format tag.
GUID_TAIL = b"\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


def chunk(chunk_id: bytes, payload: bytes, order: str = "<") -> bytes:
    """One RIFF chunk, with the pad byte after an odd payload."""
    return chunk_id + struct.pack(order + "I", len(payload)) + payload + (b"\0" if len(payload) % 2 else b"")


def fmt_payload(format_tag, channels, sample_rate, bits, layout="plain", order="<"):
    """A `fmt ` payload: `plain` (16 bytes), `cb` (18 bytes) or `extensible` (40 bytes)."""
    block_align = channels * -(-bits // 8)
    base_tag = 0xFFFE if layout == "extensible" else format_tag
    base = struct.pack(order + "HHIIHH", base_tag, channels, sample_rate, sample_rate * block_align,
                       block_align, bits)
    if layout == "plain":
        return base
    if layout == "cb":
        return base + struct.pack(order + "H", 0)
    # The GUID's first three fields follow the file's byte order, the last eight bytes do not.
    guid = struct.pack(order + "IHH", format_tag, 0, 0x10) + GUID_TAIL[4:]
    return base + struct.pack(order + "HHI", 22, bits, 0) + guid


def encode(samples: np.ndarray, format_tag: int, bits: int, order: str = "<") -> bytes:
    """Sample bytes for `[frames, channels]` integer or float samples in the container of `bits`.

    Integers are the container's values (left-justified for fewer valid bits).
    """
    width = -(-bits // 8)
    if format_tag == 3:
        return samples.astype(f"{order}f{width}").tobytes()
    if width == 1:
        return (samples.astype(np.int16) + 128).astype(np.uint8).tobytes()
    if width in (2, 4, 8):
        return samples.astype(f"{order}i{width}").tobytes()
    raw = samples.astype(f"{order}i8").reshape(-1).view(np.uint8).reshape(-1, 8)
    return (raw[:, 8 - width:] if order == ">" else raw[:, :width]).tobytes()


def make_wav(samples, sample_rate=16000, format_tag=1, bits=16, layout="plain",
             before_fmt=(), after_fmt=(), data_override=None, big_endian=False):
    """Whole WAV file bytes; `before_fmt`/`after_fmt` are extra (id, payload) chunks.

    `big_endian` writes a RIFX file: every header field and sample big-endian.
    """
    order = ">" if big_endian else "<"
    samples = np.asarray(samples)
    if samples.ndim == 1:
        samples = samples[:, None]
    body = b"WAVE"
    for cid, payload in before_fmt:
        body += chunk(cid, payload, order)
    body += chunk(b"fmt ", fmt_payload(format_tag, samples.shape[1], sample_rate, bits, layout, order), order)
    for cid, payload in after_fmt:
        body += chunk(cid, payload, order)
    data = encode(samples, format_tag, bits, order) if data_override is None else data_override
    body += chunk(b"data", data, order)
    return (b"RIFX" if big_endian else b"RIFF") + struct.pack(order + "I", len(body)) + body
