"""Hand-built WAV files for tests: every header layout and encoding we claim to read."""

import struct

import numpy as np

GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


def chunk(chunk_id: bytes, payload: bytes) -> bytes:
    """One RIFF chunk, with the pad byte after an odd payload."""
    return chunk_id + struct.pack("<I", len(payload)) + payload + (b"\0" if len(payload) % 2 else b"")


def fmt_payload(format_tag, channels, sample_rate, bits, layout="plain"):
    """A `fmt ` payload: `plain` (16 bytes), `cb` (18 bytes) or `extensible` (40 bytes)."""
    block_align = channels * bits // 8
    base_tag = 0xFFFE if layout == "extensible" else format_tag
    base = struct.pack("<HHIIHH", base_tag, channels, sample_rate, sample_rate * block_align,
                       block_align, bits)
    if layout == "plain":
        return base
    if layout == "cb":
        return base + struct.pack("<H", 0)
    return base + struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", format_tag) + GUID_TAIL


def encode(samples: np.ndarray, format_tag: int, bits: int) -> bytes:
    """Little-endian sample bytes for `[frames, channels]` integer or float samples."""
    if format_tag == 3:
        return samples.astype("<f4").tobytes()
    if bits == 16:
        return samples.astype("<i2").tobytes()
    if bits == 32:
        return samples.astype("<i4").tobytes()
    if bits == 24:
        values = samples.astype("<i4").reshape(-1)
        raw = values.view(np.uint8).reshape(-1, 4)[:, :3]
        return raw.tobytes()
    if bits == 8:
        return (samples.astype(np.int16) + 128).astype(np.uint8).tobytes()
    raise ValueError(bits)


def make_wav(samples, sample_rate=16000, format_tag=1, bits=16, layout="plain",
             before_fmt=(), after_fmt=(), data_override=None):
    """Whole WAV file bytes; `before_fmt`/`after_fmt` are extra (id, payload) chunks."""
    samples = np.asarray(samples)
    if samples.ndim == 1:
        samples = samples[:, None]
    body = b"WAVE"
    for cid, payload in before_fmt:
        body += chunk(cid, payload)
    body += chunk(b"fmt ", fmt_payload(format_tag, samples.shape[1], sample_rate, bits, layout))
    for cid, payload in after_fmt:
        body += chunk(cid, payload)
    data = encode(samples, format_tag, bits) if data_override is None else data_override
    body += chunk(b"data", data)
    return b"RIFF" + struct.pack("<I", len(body)) + body
