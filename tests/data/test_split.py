"""Tests of `pump_keras.data.split`: stratified grouped splits and manifests."""

from __future__ import annotations

import collections
import dataclasses
import random
import re
from pathlib import Path

import pytest

from pump_keras.data.index import ClipRecord, index_dataset
from pump_keras.data.split import (
    MANIFEST_COLUMNS, OPTIONAL_COLUMNS, ManifestError, SplitError, key_position, read_manifest, split_normal_only,
    split_of_key, split_records, write_manifest)
from tests.conftest import SHARED_DATA

HEADER = ",".join(MANIFEST_COLUMNS)  # a manifest written before the optional columns existed


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


def split_of(splits):
    """Each clip key's split."""
    return {r.clip_key: name for name, clips in splits.items() for r in clips}


def test_ratios_held_per_stratum_up_to_sampling_noise():
    splits = split_records(mimii_records(snrs=(0.0,)), seed=3)
    assert list(splits) == ["train", "val", "test"]
    for name, expected in (("train", 70), ("val", 20), ("test", 10)):
        counts = collections.Counter((r.machine_id, r.label) for r in splits[name])
        assert set(counts) == {(i, label) for i in ("00", "02") for label in (0, 1)}
        # three binomial standard deviations of 100 draws
        tolerance = 3 * (100 * expected / 100 * (1 - expected / 100)) ** 0.5
        assert all(abs(count - expected) <= tolerance for count in counts.values()), (name, counts)


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


def test_a_recordings_split_depends_on_the_seed_and_its_key_alone():
    # Pretraining on 6 and 0 dB, fine-tuning on a -6 dB folder that lacks
    # some files: every recording keeps its split.
    pretraining = split_of(split_records(mimii_records(snrs=(6.0, 0.0)), seed=5))
    minus_6 = mimii_records(snrs=(-6.0,))
    del minus_6[17], minus_6[3]
    fine_tuning = split_of(split_records([r for i, r in enumerate(minus_6) if i % 7], seed=5))
    assert len(fine_tuning) < len(pretraining)
    assert {key: pretraining[key] for key in fine_tuning} == fine_tuning
    assert fine_tuning == {key: split_of_key(5, key, (0.7, 0.2, 0.1)) for key in fine_tuning}


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


def test_key_positions_are_uniform_and_seeded():
    positions = [key_position(0, f"pump/id_00/normal/{i:08d}") for i in range(2000)]
    assert all(0.0 <= p < 1.0 for p in positions)
    assert abs(sum(positions) / len(positions) - 0.5) < 0.02
    assert key_position(0, "pump/id_00/normal/00000000") != key_position(1, "pump/id_00/normal/00000000")
    assert split_of_key(0, "any", (0.0, 1.0, 0.0)) == "val"
    assert split_of_key(0, "any", (1.0, 0.0, 0.0)) == "train"


def test_deterministic_and_seed_sensitive():
    records = mimii_records(n_per_stratum=20)
    assert split_records(records, seed=7) == split_records(records, seed=7)
    assert split_keys(split_records(records, seed=7)) != split_keys(split_records(records, seed=8))


def test_input_order_independent():
    records = mimii_records(n_per_stratum=20)
    shuffled = list(records)
    random.Random(0).shuffle(shuffled)
    assert split_records(shuffled, seed=4) == split_records(records, seed=4)


def test_tiny_strata_still_reach_every_split():
    for seed in range(20):
        splits = split_records(mimii_records(n_per_stratum=3, snrs=(0.0,)), seed=seed)
        for name in ("train", "val", "test"):
            counts = collections.Counter((r.machine_id, r.label) for r in splits[name])
            assert counts == {(i, label): 1 for i in ("00", "02") for label in (0, 1)}, (seed, name)


def test_strata_keep_machine_types_with_the_same_id_apart():
    pump = mimii_records(n_per_stratum=3, ids=("00",), snrs=(0.0,))
    fan = [dataclasses.replace(r, path=r.path.replace("pump", "fan"), machine="fan",
                               clip_key=r.clip_key.replace("pump", "fan")) for r in pump]
    splits = split_records(pump + fan, seed=0)
    for name in ("train", "val", "test"):
        counts = collections.Counter((r.machine, r.label) for r in splits[name])
        assert counts == {(m, label): 1 for m in ("fan", "pump") for label in (0, 1)}, name


def test_splits_sorted_by_path():
    splits = split_records(mimii_records(n_per_stratum=20))
    for clips in splits.values():
        assert [r.path for r in clips] == sorted(r.path for r in clips)


def test_missing_class_error():
    records = mimii_records(n_per_stratum=20, snrs=(0.0,), abnormal=1)
    with pytest.raises(SplitError) as info:
        split_records(records)
    message = str(info.value)
    assert re.search(r"split '(val|test)' has no abnormal clips", message), message
    assert "train 2" in message or "/ 0 abnormal" in message
    assert "other split ratios" in message
    splits = split_records(records, require_both_classes=False)
    assert sum(r.label for clips in splits.values() for r in clips) == 2


def test_empty_split_error():
    records = mimii_records(n_per_stratum=1, ids=("00",), snrs=(0.0,))
    ratios = (0.0, 0.5, 0.5)
    seed = next(seed for seed in range(100)
                if all(split_of_key(seed, r.clip_key, ratios) == "val" for r in records))
    with pytest.raises(SplitError, match="'test' is empty although its ratio is 0.5"):
        split_records(records, ratios=ratios, seed=seed)
    splits = split_records(records, ratios=(1.0, 0.0, 0.0))
    assert len(splits["train"]) == 2 and splits["val"] == [] and splits["test"] == []


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


def test_normal_only_on_mimii_trains_on_normal_clips_and_tests_on_every_abnormal_one():
    records = mimii_records(n_per_stratum=40, abnormal=10)
    splits = split_normal_only(records, ratios=(0.6, 0.2, 0.2), seed=3)
    assert {r.label for r in splits["train"] + splits["val"]} == {0}
    abnormal = {r.path for r in records if r.label == 1}
    assert abnormal <= {r.path for r in splits["test"]}
    assert {r.label for r in splits["test"]} == {0, 1}
    assert sorted(r.path for name in splits for r in splits[name]) == sorted(r.path for r in records)
    owners = split_of(splits)  # every SNR of one recording in one split
    assert all(owners[r.clip_key] == name for name in splits for r in splits[name])
    normal_test = [r for r in splits["test"] if r.label == 0]
    assert abs(len(normal_test) / sum(r.label == 0 for r in records) - 0.2) < 0.1


def dcase_records(subset_of=lambda i: "train" if i < 8 else "test"):
    """Fake DCASE records: 12 clips of one id, the first 8 official training clips (normal)."""
    return [ClipRecord(path=f"/d/pump/x/{i:02d}.wav", label=int(i >= 10), machine="pump", machine_id="00",
                       snr_db=None, clip_key=f"pump/id_00/{i}", subset=subset_of(i)) for i in range(12)]


def test_normal_only_keeps_the_official_partition():
    records = dcase_records()
    splits = split_normal_only(records, ratios=(0.5, 0.5, 0.0), seed=0)
    assert sorted(r.clip_key for r in splits["train"] + splits["val"]) == sorted(
        r.clip_key for r in records if r.subset == "train")
    assert splits["train"] and splits["val"]
    assert [r.clip_key for r in splits["test"]] == [r.clip_key for r in records if r.subset == "test"]


@pytest.mark.parametrize("records, pattern", [
    (dcase_records(lambda i: "train" if i < 4 else None), "outside the dataset's train/ and test/ folders"),
    (dcase_records(lambda i: "train" if i < 11 else "test"), "anomalies in the official training partition"),
    (dcase_records(lambda i: "train" if i < 1 else "test"), "normal-only (train|val) split is empty"),
])
def test_normal_only_errors(records, pattern):
    with pytest.raises(SplitError, match=pattern):
        split_normal_only(records, ratios=(0.5, 0.5, 0.0))


def test_normal_only_test_split_needs_both_classes():
    records = [r for r in dcase_records() if r.label == 0]
    with pytest.raises(SplitError, match="no abnormal clips; AUC needs both"):
        split_normal_only(records, ratios=(0.5, 0.5, 0.0))


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
    assert lines[0] == ",".join(MANIFEST_COLUMNS + OPTIONAL_COLUMNS)
    assert lines[1].startswith("train,/data/") and ",00," in lines[1]
    assert any(line.endswith(",,pump/id_00/test/anomaly/00000001,,,,id") for line in lines)
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


def test_manifest_keeps_dcase2021_fields(tmp_path):
    record = ClipRecord(path="/d/pump/test/section_01_target_test_anomaly_0003_vel_6.wav", label=1,
                        machine="pump", machine_id="01", snr_db=None, clip_key="pump/section_01/x/3",
                        subset="test", domain="target", attributes="vel_6", id_kind="section")
    write_manifest(tmp_path / "m.csv", {"test": [record]})
    assert read_manifest(tmp_path / "m.csv")["test"] == [record]


def test_manifest_without_the_optional_columns_reads_with_defaults(tmp_path):
    path = write_text(tmp_path / "old.csv", HEADER, GOOD_ROW)
    (record,) = read_manifest(path)["train"]
    assert (record.subset, record.domain, record.attributes, record.id_kind) == (None, None, "", "id")


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
    ((HEADER + ",domain", GOOD_ROW + ",elsewhere"), r"line 2: domain must be one of \['source', 'target'\]"),
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
