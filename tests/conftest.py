"""Shared fixtures: the real clips beside the repository, and quiet TensorFlow."""

import contextlib
import inspect
import os
import signal
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO_ROOT = Path(__file__).resolve().parents[1]

import pytest  # noqa: E402

SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
MIMII_DIR = SHARED_DATA / "mimii-pump-0dB"
DCASE_DIR = SHARED_DATA / "dcase2020-pump"


NO_REAL_DATA = (f"the real clips are not at {SHARED_DATA} (put the shared data folder beside the "
                "repository to run the tests marked real_data)")

# Names a test (or a fixture it uses) reads the real clips through: such tests get the `real_data` marker.
REAL_DATA_NAMES = ("real_wav_files", "real_files", "MIMII_DIR", "DCASE_DIR", "SHARED_DATA")


def real_wav_files():
    """Every real clip in the shared data folder (MIMII 8-channel and DCASE mono); none when it is absent."""
    return sorted(SHARED_DATA.rglob("*.wav"))


def _reads_real_data(item) -> bool:
    sources = [getattr(item, "function", None)]
    fixtures = getattr(item, "_fixtureinfo", None)
    if fixtures is not None:
        sources += [definition.func for name in item.fixturenames
                    for definition in fixtures.name2fixturedefs.get(name, ())]
    for source in filter(None, sources):
        try:
            text = inspect.getsource(source)
        except (OSError, TypeError):
            continue
        if any(name in text for name in REAL_DATA_NAMES):
            return True
    return _parametrized_with_real_clip(item)


def _parametrized_with_real_clip(item) -> bool:
    params = getattr(getattr(item, "callspec", None), "params", {})
    return any(str(SHARED_DATA) in str(value) for value in params.values())


def pytest_collection_modifyitems(config, items):
    """Marks the tests that read the real clips `real_data`, and skips them when the clips are absent."""
    present = bool(real_wav_files())
    for item in items:
        if _reads_real_data(item):
            item.add_marker(pytest.mark.real_data)
            if not present:
                item.add_marker(pytest.mark.skip(reason=NO_REAL_DATA))


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
