"""The WAV container on the Python side: header inspection and atomic writing.

Decoding for training and serving happens in the TensorFlow graph
(`pump_keras.audio.decode`). This module serves the host side: checking a whole
dataset's headers up front (reading a few hundred bytes per file, never the
samples) so that bad files are named before training starts, and writing
MIMII-style files for the synthetic recordings.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import struct
from typing import Optional

import numpy as np

from pump_keras.errors import WavFormatError
from pump_keras.files import atomic_write_bytes

WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_IEEE_FLOAT = 0x0003
WAVE_FORMAT_ALAW = 0x0006
WAVE_FORMAT_MULAW = 0x0007
WAVE_FORMAT_EXTENSIBLE = 0xFFFE

FORMAT_NAMES = {
    WAVE_FORMAT_PCM: "PCM",
    WAVE_FORMAT_IEEE_FLOAT: "IEEE float",
    WAVE_FORMAT_ALAW: "A-law",
    WAVE_FORMAT_MULAW: "mu-law",
    WAVE_FORMAT_EXTENSIBLE: "EXTENSIBLE",
}

# Every sample encoding read, by the graph (`pump_keras.audio.decode`) and the host
# alike: (format tag, bytes per sample) -> decoder name. A sample becomes a
# float32 in [-1, 1) as follows (bit-exact with scipy, see README.md):
#   PCM, 1 byte: unsigned, (u - 128) / 128;
#   PCM, C > 1 bytes: signed, value / 2**(8C - 1), whatever the valid bits
#       (12-bit audio in 2 bytes is int16 / 32768, 20-bit in 3 is / 2**23);
#   IEEE float: as stored (64-bit cast to float32);
#   A-law, mu-law: ITU-T G.711 expanded to 16-bit linear, / 32768.
SUPPORTED_ENCODINGS = {
    (WAVE_FORMAT_PCM, 1): "pcm8",
    (WAVE_FORMAT_PCM, 2): "pcm16",
    (WAVE_FORMAT_PCM, 3): "pcm24",
    (WAVE_FORMAT_PCM, 4): "pcm32",
    (WAVE_FORMAT_PCM, 5): "pcm40",
    (WAVE_FORMAT_PCM, 6): "pcm48",
    (WAVE_FORMAT_PCM, 7): "pcm56",
    (WAVE_FORMAT_PCM, 8): "pcm64",
    (WAVE_FORMAT_IEEE_FLOAT, 4): "float32",
    (WAVE_FORMAT_IEEE_FLOAT, 8): "float64",
    (WAVE_FORMAT_ALAW, 1): "alaw",
    (WAVE_FORMAT_MULAW, 1): "mulaw",
}
SUPPORTED_TEXT = "PCM 1 to 64-bit, IEEE float 32/64-bit, A-law and mu-law"

_SPECIAL_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a directory"),
)

# The KSDATAFORMAT_SUBTYPE GUID tail shared by PCM and IEEE float subformats.
_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
# RIFF (little-endian), RIFX (big-endian) and RF64 (little-endian, 64-bit
# sizes in a `ds64` chunk, for files over 4 GB) headers.
RIFF_IDS = (b"RIFF", b"RIFX", b"RF64")
# An RF64 32-bit size of this value means "see the ds64 chunk".
RF64_SIZE_IN_DS64 = 0xFFFFFFFF



@dataclasses.dataclass(frozen=True)
class WavHeader:
    """What a WAV file's header says about its samples."""

    path: str
    format_tag: int  # the effective format (the subformat for EXTENSIBLE)
    channels: int
    sample_rate: int
    bits_per_sample: int
    block_align: int
    data_offset: int
    data_bytes: int
    file_bytes: int
    big_endian: bool = False  # RIFX

    @property
    def sample_bytes(self) -> int:
        """Bytes per sample of one channel (the container width)."""
        return self.block_align // self.channels

    @property
    def frames(self) -> int:
        """Number of sample frames in the data chunk."""
        return self.data_bytes // self.block_align

    @property
    def seconds(self) -> float:
        """Duration in seconds."""
        return self.frames / self.sample_rate

    @property
    def encoding(self) -> str:
        """A readable name such as 'PCM 16-bit'."""
        name = FORMAT_NAMES.get(self.format_tag, f"format 0x{self.format_tag:04x}")
        return f"{name} {self.bits_per_sample}-bit" + (" big-endian" if self.big_endian else "")


def special_file_kind(path) -> Optional[str]:
    """What `path` is when it exists but is not a regular file ("a named pipe (FIFO)"...), else None.

    Checked with `stat`, never by opening: opening a named pipe for reading
    waits for a writer, forever.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    for test, kind in _SPECIAL_KINDS:
        if test(mode):
            return kind
    return "not a regular file"


def read_wav_header(path: str) -> WavHeader:
    """Parses the RIFF chunks of `path` up to its `data` chunk.

    Reads only the header bytes. Raises `WavFormatError` naming the file for
    anything `pump_keras.audio.decode.decode_wav` would reject: not RIFF/RIFX/RF64
    WAVE, a missing, short or repeated `fmt ` chunk, an unsupported encoding,
    an inconsistent header, an empty or truncated `data` chunk.
    """
    path = os.fspath(path)
    kind = special_file_kind(path)
    if kind is not None:
        raise WavFormatError(f"{path}: {kind}, not a regular file; not opened.")
    file_bytes = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in RIFF_IDS or head[8:12] != b"WAVE":
            raise WavFormatError(f"{path}: not a RIFF/WAVE file (starts with {head[:12]!r}).")
        order = ">" if head[:4] == b"RIFX" else "<"
        rf64_data_bytes = None
        fmt = None
        offset = 12
        while True:
            f.seek(offset)
            chunk = f.read(8)
            if len(chunk) < 8:
                raise WavFormatError(f"{path}: no 'data' chunk found (file is {file_bytes} bytes).")
            chunk_id, size = chunk[:4], struct.unpack(order + "I", chunk[4:])[0]
            if chunk_id == b"ds64" and head[:4] == b"RF64":
                ds64 = f.read(16)
                if len(ds64) == 16:
                    rf64_data_bytes = struct.unpack("<Q", ds64[8:])[0]
            elif chunk_id == b"fmt ":
                if fmt is not None:
                    # Readers differ on which one counts, so none does.
                    raise WavFormatError(
                        f"{path}: more than one 'fmt ' chunk; the format is ambiguous.")
                if size < 16:
                    raise WavFormatError(f"{path}: 'fmt ' chunk of {size} bytes is too short (need 16).")
                fmt = f.read(min(size, 40))
            elif chunk_id == b"data":
                break
            offset += 8 + size + (size & 1)
    if fmt is None:
        raise WavFormatError(f"{path}: 'data' chunk comes before any 'fmt ' chunk.")
    if len(fmt) < 16:
        raise WavFormatError(f"{path}: truncated 'fmt ' chunk.")
    format_tag, channels, sample_rate, _, block_align, bits = struct.unpack(order + "HHIIHH", fmt[:16])
    if format_tag == WAVE_FORMAT_EXTENSIBLE:
        if len(fmt) < 40:
            raise WavFormatError(f"{path}: EXTENSIBLE 'fmt ' chunk of {len(fmt)} bytes (need 40).")
        # The subformat GUID's first field, a 32-bit word in the file's byte order.
        format_tag = struct.unpack(order + "I", fmt[24:28])[0]
    if head[:4] == b"RF64" and size == RF64_SIZE_IN_DS64 and rf64_data_bytes is not None:
        size = rf64_data_bytes
    header = WavHeader(
        path=path,
        format_tag=format_tag,
        channels=channels,
        sample_rate=sample_rate,
        bits_per_sample=bits,
        block_align=block_align,
        data_offset=offset + 8,
        data_bytes=size,
        file_bytes=file_bytes,
        big_endian=order == ">",
    )
    _check_header(header)
    return header


def _check_header(h: WavHeader) -> None:
    unsupported = WavFormatError(
        f"{h.path}: unsupported encoding (format tag {h.format_tag}, {h.bits_per_sample}-bit); "
        f"supported are {SUPPORTED_TEXT}."
    )
    # A codec's header (ADPCM, MP3) need not be consistent as PCM would be.
    if h.format_tag not in {tag for tag, _ in SUPPORTED_ENCODINGS}:
        raise unsupported
    if h.channels < 1 or not 0 < h.bits_per_sample <= 64 or (
            h.block_align != h.channels * -(-h.bits_per_sample // 8)):
        raise WavFormatError(
            f"{h.path}: inconsistent header ({h.channels} channels, block align {h.block_align}, "
            f"{h.bits_per_sample} bits)."
        )
    if (h.format_tag, h.sample_bytes) not in SUPPORTED_ENCODINGS:
        raise unsupported
    if h.sample_rate <= 0:
        raise WavFormatError(f"{h.path}: sample rate {h.sample_rate} Hz is not valid.")
    if h.data_bytes < h.block_align:
        raise WavFormatError(f"{h.path}: empty 'data' chunk (no audio samples).")
    available = h.file_bytes - h.data_offset
    if h.data_bytes > available:
        raise WavFormatError(
            f"{h.path}: truncated file: 'data' chunk declares {h.data_bytes} bytes "
            f"but only {available} follow."
        )


def write_wav(path: str, samples: np.ndarray, sample_rate: int, extensible: bool = True) -> None:
    """Writes int16 `samples` `[frames, channels]` to `path` atomically.

    With `extensible=True` the file is laid out like the published MIMII
    files: WAVE_FORMAT_EXTENSIBLE with a 40-byte `fmt ` chunk, then a `fact`
    chunk, then `data`. Otherwise a plain 16-byte PCM header.
    """
    samples = np.asarray(samples)
    if samples.dtype != np.int16:
        raise TypeError(f"write_wav expects int16 samples, got {samples.dtype}.")
    if samples.ndim == 1:
        samples = samples[:, None]
    frames, channels = samples.shape
    block_align = 2 * channels
    if extensible:
        fmt = struct.pack(
            "<HHIIHHHHI", WAVE_FORMAT_EXTENSIBLE, channels, sample_rate,
            sample_rate * block_align, block_align, 16, 22, 16, 0,
        ) + struct.pack("<H", WAVE_FORMAT_PCM) + _GUID_TAIL
        extra = b"fact" + struct.pack("<II", 4, frames)
    else:
        fmt = struct.pack(
            "<HHIIHH", WAVE_FORMAT_PCM, channels, sample_rate,
            sample_rate * block_align, block_align, 16,
        )
        extra = b""
    data = samples.astype("<i2", copy=False).tobytes()
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + extra
    body += b"data" + struct.pack("<I", len(data)) + data
    atomic_write_bytes(path, b"RIFF" + struct.pack("<I", len(body)) + body)
