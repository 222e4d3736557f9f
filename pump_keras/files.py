"""File helpers every stage shares: atomic writes, and finding the WAV files under a folder."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Callable, List


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str, payload: bytes) -> None:
    """Writes `payload` to `path` through a temporary file and a rename."""
    atomic_save(path, lambda temporary: _write(temporary, payload))


def atomic_write_json(path: str, values, sort_keys: bool = False) -> None:
    """Writes `values` as indented JSON (one trailing newline) to `path`, atomically."""
    atomic_write_bytes(path, (json.dumps(values, indent=2, sort_keys=sort_keys) + "\n").encode())


def atomic_save(path: str, save: Callable[[str], None]) -> None:
    """Calls `save(temporary)` on a temporary path beside `path`, then renames it to `path`.

    The temporary name keeps `path`'s extension (Keras chooses the format of
    `model.save` by it); a failed `save` leaves nothing behind.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        # mkstemp makes owner-only files; give the result the usual permissions.
        os.fchmod(fd, 0o666 & ~_current_umask())
        os.close(fd)
        save(temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def _write(path: str, payload: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(payload)


def wav_files_under(folder: str, include_hidden: bool = False) -> List[str]:
    """Every `.wav` file under `folder` (any depth, sorted); hidden files and folders skipped unless asked."""
    found = []
    for directory, subfolders, names in os.walk(folder):
        subfolders[:] = sorted(d for d in subfolders if include_hidden or not d.startswith("."))
        found.extend(os.path.join(directory, name) for name in sorted(names)
                     if name.lower().endswith(".wav") and (include_hidden or not name.startswith(".")))
    return found
