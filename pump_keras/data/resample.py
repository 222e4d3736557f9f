"""Convert recordings to the configured sample rate: `python -m pump_keras.data.resample`.

    python -m pump_keras.data.resample /data/site_b /data/resampled_16000Hz --rate 16000

writes `OUT/<name of SOURCE>/...`: every `.wav` file under SOURCE (or
SOURCE itself, a file) at the same relative path, so the folder names that
carry labels, machines, ids and SNRs are kept, and the output indexes like
the input. Files at another rate are resampled with soxr (high quality, per
channel) and written as 16-bit PCM, atomically; files already at the rate are
copied unchanged. Outputs that exist are kept, so an interrupted run
resumes. Exit status: 0 when every file was written, 1 when some failed (each
is named), 2 for a usage error.
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import Callable, Dict, List, Optional

import numpy as np

from pump_keras.audio.wavfile import read_wav_header, special_file_kind, write_wav
from pump_keras.errors import ResampleError, WavFormatError
from pump_keras.files import atomic_write_bytes, wav_files_under

INT16_SCALE = 32768.0



def output_folder_name(rate: int) -> str:
    """The folder the refusal messages suggest for converted files, e.g. "resampled_16000Hz"."""
    return f"resampled_{int(rate)}Hz"


def resample_command(source: str, rate: int) -> str:
    """The exact command that converts `source` (a folder or file) to `rate`, and where the result lands.

    Returns `python -m pump_keras.data.resample SOURCE OUT --rate RATE`
    with OUT beside SOURCE, followed by the path the converted copy gets.
    """
    source = os.path.abspath(os.fspath(source))
    out = os.path.join(os.path.dirname(source), output_folder_name(rate))
    command = " ".join(["python -m pump_keras.data.resample", shlex.quote(source), shlex.quote(out),
                        "--rate", str(int(rate))])
    return f"{command} (it writes {os.path.join(out, os.path.basename(source))})"


def source_files(source: str) -> List[str]:
    """`source` itself if it is a file, else every `.wav` file under it (hidden ones skipped), sorted."""
    return wav_files_under(source) if os.path.isdir(source) else [source]


def resample_file(source: str, target: str, rate: int) -> str:
    """Writes `source` at `rate` to `target` (16-bit PCM, atomically); returns "resampled" or "copied".

    A file already at `rate` is copied byte for byte. Raises `WavFormatError`
    or `OSError` naming the file for anything unreadable.
    """
    import soundfile
    import soxr

    header = read_wav_header(source)  # refuses pipes and files the decoder would refuse
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    if header.sample_rate == rate:
        with open(source, "rb") as handle:
            atomic_write_bytes(target, handle.read())
        return "copied"
    try:
        audio, source_rate = soundfile.read(source, dtype="float64", always_2d=True)
    except RuntimeError as error:  # libsndfile's errors
        raise WavFormatError(f"{source}: cannot read the samples ({error}).") from error
    converted = soxr.resample(audio, source_rate, rate, quality="HQ")
    samples = np.clip(np.round(converted * INT16_SCALE), -INT16_SCALE, INT16_SCALE - 1).astype(np.int16)
    write_wav(target, samples.reshape(len(samples), -1), rate, extensible=audio.shape[1] > 2)
    return "resampled"


def resample_tree(source: str, out: str, rate: int,
                  report: Optional[Callable[[str, str], None]] = None) -> Dict[str, List[str]]:
    """Converts every `.wav` of `source` to `rate` under `out/<name of source>/`.

    Returns the source paths per outcome: "resampled", "copied", "kept"
    (the output existed), and "failed" (with `report(path, reason)` called).

    Raises:
        ResampleError: a bad rate, a missing source, no `.wav` files, or an
            output folder inside the source or equal to it.
    """
    if int(rate) <= 0:
        raise ResampleError(f"--rate must be a positive number of Hz, got {rate}.")
    source = os.path.abspath(os.fspath(source))
    out = os.path.abspath(os.fspath(out))
    if not os.path.exists(source):
        raise ResampleError(f"{source}: does not exist.")
    destination = os.path.join(out, os.path.basename(source))
    if os.path.isdir(source) and (out == source or out.startswith(source + os.sep)):
        raise ResampleError(f"{out}: the output folder must lie outside {source}, or the converted "
                            "copies would be indexed with the originals.")
    if destination == source:
        raise ResampleError(f"{out}: would overwrite the originals; choose another output folder.")
    paths = source_files(source)
    if not paths:
        raise ResampleError(f"{source}: no .wav files found.")
    outcomes: Dict[str, List[str]] = {"resampled": [], "copied": [], "kept": [], "failed": []}
    for path in paths:
        relative = os.path.relpath(path, source) if os.path.isdir(source) else ""
        target = os.path.join(destination, relative) if relative else destination
        kind = special_file_kind(path)
        if kind is not None:
            outcomes["failed"].append(path)
            if report:
                report(path, f"{kind}, not a regular file; not opened")
            continue
        if os.path.exists(target):
            outcomes["kept"].append(path)
            continue
        try:
            outcomes[resample_file(path, target, int(rate))].append(path)
        except (WavFormatError, OSError) as error:
            outcomes["failed"].append(path)
            if report:
                report(path, str(error))
    return outcomes


if __name__ == "__main__":  # `python -m pump_keras.data.resample`: the command lives in pump_keras.cli
    from pump_keras.cli.resample import main

    sys.exit(main())
