"""Shared fixtures: the real clips beside the repository, and quiet TensorFlow."""

import contextlib
import os
import signal
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO_ROOT = Path(__file__).resolve().parents[1]

import pytest  # noqa: E402

SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
MIMII_DIR = SHARED_DATA / "mimii-pump-0dB"
DCASE_DIR = SHARED_DATA / "dcase2020-pump"


def real_wav_files():
    """Every real clip in the shared data folder (MIMII 8-channel and DCASE mono)."""
    files = sorted(SHARED_DATA.rglob("*.wav"))
    if not files:
        raise RuntimeError(f"No real clips found under {SHARED_DATA}; the tests need them.")
    return files


@pytest.fixture(scope="session")
def real_files():
    return real_wav_files()


@contextlib.contextmanager
def fails_instead_of_hanging(seconds: int = 10):
    """Raises TimeoutError in the block after `seconds` (a blocked `open` of a named pipe included)."""
    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: it hangs")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
