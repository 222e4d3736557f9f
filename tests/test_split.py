"""Tests of `pump_keras.data.split`: stratified grouped splits and manifests."""

from __future__ import annotations

import collections
import random
from pathlib import Path

import pytest

from pump_keras.data.index import ClipRecord, index_dataset
from pump_keras.data.split import (
    MANIFEST_COLUMNS,
    ManifestError,
    SplitError,
    allocate_counts,
    read_manifest,
    split_records,
    write_manifest,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HEADER = ",".join(MANIFEST_COLUMNS)


def mimii_records(n_per_stratum=100, ids=("00", "02"), snrs=(6.0, 0.0, -6.0), abnormal=None):
    """Fake MIMII records: `n_per_stratum` clips per (id, label) at every SNR."""
    records = []
    for snr in snrs:
        for machine_id in ids:
            for label, name in ((0, "normal"), (1, "abnormal")):
                count = n_per_stratum if label == 0 or abnormal is None else abnormal
                for i in range(count):
                    records.append(ClipRecord(
                        path=f"/data/{snr:g}_dB_pump/pump/id_{machine_id}/{name}/{i:08d}.wav",
                        label=label, machine="pump", machine_id=machine_id, snr_db=snr,
                        clip_key=f"pump/id_{machine_id}/{name}/{i:08d}",
                    ))
    return records


def split_keys(splits):
    """The set of clip keys of each split."""
    return {name: {r.clip_key for r in clips} for name, clips in splits.items()}


def test_allocate_counts_largest_remainder():
    assert allocate_counts(100, (0.7, 0.2, 0.1)) == (70, 20, 10)
    assert allocate_counts(10, (0.7, 0.2, 0.1)) == (7, 2, 1)
    assert allocate_counts(5, (0.7, 0.2, 0.1)) == (4, 1, 0)
    assert allocate_counts(1, (0.7, 0.2, 0.1)) == (1, 0, 0)
    assert allocate_counts(2, (0.5, 0.25, 0.25)) == (1, 1, 0)
    assert allocate_counts(3, (1 / 3, 1 / 3, 1 / 3)) == (1, 1, 1)
    assert allocate_counts(4, (1 / 3, 1 / 3, 1 / 3)) == (2, 1, 1)
    assert allocate_counts(7, (0.0, 0.5, 0.5)) == (0, 4, 3)


def test_ratios_honoured_per_stratum():
    splits = split_records(mimii_records(snrs=(0.0,)), seed=3)
    assert list(splits) == ["train", "val", "test"]
    for name, expected in (("train", 70), ("val", 20), ("test", 10)):
        counts = collections.Counter((r.machine_id, r.label) for r in splits[name])
        assert counts == {(i, label): expected for i in ("00", "02") for label in (0, 1)}


def test_grouped_across_snrs():
    records = mimii_records()
    splits = split_records(records, seed=1)
    keys = split_keys(splits)
    assert not keys["train"] & keys["val"]
    assert not keys["train"] & keys["test"]
    assert not keys["val"] & keys["test"]
    assert sum(len(clips) for clips in splits.values()) == len(records)
    for name, clips in splits.items():
        per_key = collections.Counter(r.clip_key for r in clips)
        assert set(per_key.values()) == {3}, name
    assert len(splits["test"]) == 3 * 10 * 4


def test_same_split_for_each_snr_alone():
    whole = split_keys(split_records(mimii_records(), seed=5))
    for snr in (6.0, -6.0):
        alone = split_keys(split_records(mimii_records(snrs=(snr,)), seed=5))
        assert alone == whole


def test_stratum_split_independent_of_other_ids():
    both = split_records(mimii_records(ids=("00", "02")), seed=2)
    only = split_records(mimii_records(ids=("00",)), seed=2)
    for name in both:
        assert [r for r in both[name] if r.machine_id == "00"] == only[name]


def test_deterministic_and_seed_sensitive():
    records = mimii_records(n_per_stratum=20)
    assert split_records(records, seed=7) == split_records(records, seed=7)
    assert split_keys(split_records(records, seed=7)) != split_keys(split_records(records, seed=8))


def test_input_order_independent():
    records = mimii_records(n_per_stratum=20)
    shuffled = list(records)
    random.Random(0).shuffle(shuffled)
    assert split_records(shuffled, seed=4) == split_records(records, seed=4)


def test_splits_sorted_by_path():
    splits = split_records(mimii_records(n_per_stratum=20))
    for clips in splits.values():
        assert [r.path for r in clips] == sorted(r.path for r in clips)


def test_missing_class_error():
    records = mimii_records(n_per_stratum=20, snrs=(0.0,), abnormal=1)
    with pytest.raises(SplitError) as info:
        split_records(records)
    message = str(info.value)
    assert "'val' has no abnormal clips" in message
    assert "train 28 normal / 2 abnormal" in message and "val 8 normal / 0 abnormal" in message
    assert "other split ratios" in message
    splits = split_records(records, require_both_classes=False)
    assert sum(r.label for r in splits["train"]) == 2


def test_empty_split_error():
    records = mimii_records(n_per_stratum=1, snrs=(0.0,))
    with pytest.raises(SplitError, match="'val' is empty although its ratio is 0.2"):
        split_records(records)
    splits = split_records(records, ratios=(1.0, 0.0, 0.0))
    assert len(splits["train"]) == 4 and splits["val"] == [] and splits["test"] == []


def test_bad_ratios():
    with pytest.raises(SplitError, match="summing to 1"):
        split_records(mimii_records(n_per_stratum=2), ratios=(0.5, 0.2, 0.1))
    with pytest.raises(SplitError):
        split_records(mimii_records(n_per_stratum=2), ratios=(0.8, 0.2))


def test_inconsistent_clip_key():
    records = mimii_records(n_per_stratum=2, snrs=(0.0,))
    clash = ClipRecord(path="/x.wav", label=1, machine="pump", machine_id="00", snr_db=6.0,
                       clip_key=records[0].clip_key)
    with pytest.raises(SplitError, match="one recording must have one id and label"):
        split_records(records + [clash])


def test_manifest_round_trip(tmp_path):
    records = mimii_records(n_per_stratum=10)
    records.append(ClipRecord(path="/data/dcase/pump/test/anomaly_id_00_00000001.wav", label=1,
                              machine="pump", machine_id="00", snr_db=None,
                              clip_key="pump/id_00/test/anomaly/00000001"))
    splits = split_records(records, seed=9)
    path = tmp_path / "runs" / "manifest.csv"
    write_manifest(path, splits)
    assert read_manifest(path) == splits
    lines = path.read_text().splitlines()
    assert lines[0] == HEADER
    assert lines[1].startswith("train,/data/") and ",00," in lines[1]
    assert any(line.endswith(",,pump/id_00/test/anomaly/00000001") for line in lines)
    assert [p.name for p in path.parent.iterdir()] == ["manifest.csv"]


def test_manifest_round_trip_real_clips(tmp_path):
    assert SHARED_DATA.is_dir(), f"shared test data missing at {SHARED_DATA}"
    records = index_dataset(SHARED_DATA / "dcase2020-pump")
    splits = split_records(records, ratios=(0.5, 0.5, 0.0), require_both_classes=False)
    write_manifest(tmp_path / "m.csv", splits)
    assert read_manifest(tmp_path / "m.csv") == splits


def test_manifest_relative_paths_written_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    record = ClipRecord(path="clips/a.wav", label=0, machine="pump", machine_id="04",
                        snr_db=-6.0, clip_key="pump/id_04/normal/a")
    write_manifest("m.csv", {"train": [record]})
    (read,) = read_manifest("m.csv")["train"]
    assert read.path == str(tmp_path / "clips" / "a.wav")
    assert read.machine_id == "04" and read.snr_db == -6.0


def write_text(path: Path, *lines: str) -> Path:
    """Writes `lines` as a file and returns its path."""
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD_ROW = "train,/d/a.wav,0,pump,00,0.0,pump/id_00/normal/a"


@pytest.mark.parametrize("lines, pattern", [
    (("split,path,label,machine,machine_id,clip_key", GOOD_ROW), r"line 1: missing column\(s\) snr_db"),
    ((HEADER, GOOD_ROW, "holdout,/d/b.wav,0,pump,00,0.0,k"), r"line 3: unknown split 'holdout'"),
    ((HEADER, "val,/d/b.wav,abnormal,pump,00,0.0,k"), r"line 2: label must be 0 \(normal\) or 1"),
    ((HEADER, "val,/d/b.wav,2,pump,00,0.0,k"), r"line 2: label must be"),
    ((HEADER, "val,/d/b.wav,1,pump,00,loud,k"), r"line 2: snr_db must be a number"),
    ((HEADER, "val,/d/b.wav,1,pump,00"), r"line 2: expected 7 fields"),
    ((HEADER, "val,,1,pump,00,,k"), r"line 2: empty path"),
    ((HEADER, GOOD_ROW, GOOD_ROW), r"line 3: /d/a.wav is already listed on line 2"),
    (("",), r"line 1: empty manifest"),
])
def test_malformed_manifest(tmp_path, lines, pattern):
    path = write_text(tmp_path / "bad.csv", *lines)
    with pytest.raises(ManifestError, match=pattern) as info:
        read_manifest(path)
    assert str(path) in str(info.value)


def test_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match="cannot read manifest"):
        read_manifest(tmp_path / "absent.csv")


def test_write_manifest_rejects_unknown_split(tmp_path):
    with pytest.raises(SplitError, match="unknown split"):
        write_manifest(tmp_path / "m.csv", {"holdout": []})
