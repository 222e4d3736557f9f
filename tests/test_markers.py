"""Tests that read the real clips are marked `real_data`, and skipped with a reason when the clips are absent."""

import pytest

from tests import conftest


class FakeItem:
    def __init__(self, function, params=None):
        self.function = function
        self.fixturenames = []
        self.name = function.__name__
        self.markers = []
        if params is not None:
            self.callspec = type("CallSpec", (), {"params": params})()

    def add_marker(self, marker):
        self.markers.append(marker)


def reads_the_clips():
    return conftest.real_wav_files()


def synthetic_only():
    return 1 + 1


def marks(item):
    return {(m.name, m.kwargs.get("reason")) for m in item.markers}


@pytest.mark.parametrize("present", [True, False])
def test_real_data_tests_are_marked_and_skipped_only_when_the_clips_are_absent(monkeypatch, tmp_path, present):
    if not present:
        monkeypatch.setattr(conftest, "SHARED_DATA", tmp_path / "nowhere")
    items = [FakeItem(reads_the_clips), FakeItem(synthetic_only),
             FakeItem(synthetic_only, params={"path": conftest.SHARED_DATA / "x.wav"})]
    conftest.pytest_collection_modifyitems(None, items)
    assert marks(items[1]) == set()
    for item in (items[0], items[2]):
        expected = {("real_data", None)} | (set() if present else {("skip", conftest.NO_REAL_DATA)})
        assert marks(item) == expected
    assert not conftest.real_wav_files() if not present else conftest.real_wav_files()
