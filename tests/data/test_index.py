"""Tests of `pump_keras.data.index` on small fake trees and the shared real clips."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pump_keras.audio.wavfile import write_wav
from pump_keras.data.index import (
    UNLABELLED, ClipRecord, DatasetError, check_audio_headers, format_summary, index_dataset, machine_group,
    normalize_machine_id, summarize)
from pump_keras.errors import WavFormatError
from tests.conftest import SHARED_DATA, fails_instead_of_hanging

SNRS = ("6", "0", "-6")
IDS = ("00", "02")


def tiny_wav(path: Path, sample_rate: int = 16000, channels: int = 1) -> Path:
    """Writes a 160-frame WAV file at `path`."""
    samples = np.zeros((160, channels), dtype=np.int16)
    write_wav(str(path), samples, sample_rate, extensible=channels > 2)
    return path


def make_mimii(root: Path, snrs=SNRS, ids=IDS, clips=2, machine="pump") -> Path:
    """A MIMII tree: every SNR, id and class with `clips` clips."""
    for snr in snrs:
        for machine_id in ids:
            for label in ("normal", "abnormal"):
                folder = root / f"{snr}_dB_{machine}" / machine / f"id_{machine_id}" / label
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(clips):
                    tiny_wav(folder / f"{i:08d}.wav")
    return root


def make_dcase_flat(folder: Path) -> Path:
    """A flat DCASE folder: ids 00 and 02, 2 normal and 1 anomaly each."""
    folder.mkdir(parents=True, exist_ok=True)
    for machine_id in IDS:
        for name in (f"normal_id_{machine_id}_00000000", f"normal_id_{machine_id}_00000001",
                     f"anomaly_id_{machine_id}_00000000"):
            tiny_wav(folder / f"{name}.wav")
    return folder


@pytest.fixture(scope="module")
def shared_data() -> Path:
    """The shared real clips; missing data is a failure, not a skip."""
    assert SHARED_DATA.is_dir(), f"shared test data missing at {SHARED_DATA}"
    return SHARED_DATA


def test_mimii_tree_indexed_from_top(tmp_path):
    records = index_dataset(make_mimii(tmp_path / "mimii"))
    assert len(records) == 3 * 2 * 2 * 2
    assert [r.path for r in records] == sorted(r.path for r in records)
    assert {r.snr_db for r in records} == {6.0, 0.0, -6.0}
    assert {r.machine_id for r in records} == {"00", "02"}
    assert all(os.path.isabs(r.path) for r in records)
    first = next(r for r in records if r.path.endswith(
        os.path.join("-6_dB_pump", "pump", "id_02", "abnormal", "00000001.wav")))
    assert first == ClipRecord(
        path=first.path, label=1, machine="pump", machine_id="02", snr_db=-6.0,
        clip_key="pump/id_02/abnormal/00000001",
    )


def test_mimii_clip_key_shared_across_snrs(tmp_path):
    records = index_dataset(make_mimii(tmp_path))
    by_key = {}
    for record in records:
        by_key.setdefault(record.clip_key, set()).add(record.snr_db)
    assert len(by_key) == 8
    assert all(snrs == {6.0, 0.0, -6.0} for snrs in by_key.values())


@pytest.mark.parametrize("sub", ["0_dB_pump", "0_dB_pump/pump", "0_dB_pump/pump/id_02"])
def test_mimii_root_below_snr_folders(tmp_path, sub):
    make_mimii(tmp_path)
    records = index_dataset(tmp_path / sub)
    assert {r.snr_db for r in records} == {0.0}
    assert {r.machine for r in records} == {"pump"}
    assert len(records) == (4 if sub.endswith("id_02") else 8)


def test_mimii_decimal_and_signed_snr(tmp_path):
    make_mimii(tmp_path, snrs=("+3", "-1.5"), ids=("4",), clips=1)
    records = index_dataset(tmp_path)
    assert {r.snr_db for r in records} == {3.0, -1.5}
    assert {r.machine_id for r in records} == {"04"}


def test_snr_filter(tmp_path):
    make_mimii(tmp_path)
    records = index_dataset(tmp_path, snr_db=(-6,))
    assert len(records) == 8 and {r.snr_db for r in records} == {-6.0}
    assert len(index_dataset(tmp_path, snr_db=(6.0, 0.0))) == 16


def test_snr_filter_missing_names_existing(tmp_path):
    make_mimii(tmp_path)
    with pytest.raises(DatasetError, match=r"SNR 3 dB.*-6 dB, 0 dB, 6 dB"):
        index_dataset(tmp_path, snr_db=(0.0, 3.0))


def test_snr_filter_on_dcase_says_no_snr(tmp_path):
    make_dcase_flat(tmp_path / "pump")
    with pytest.raises(DatasetError, match="DCASE layout has no SNR"):
        index_dataset(tmp_path, snr_db=(0.0,))


def test_machine_id_filter(tmp_path):
    make_mimii(tmp_path)
    records = index_dataset(tmp_path, machine_ids=("2",))
    assert {r.machine_id for r in records} == {"02"} and len(records) == 12
    with pytest.raises(DatasetError, match=r"machine id 04.*00, 02"):
        index_dataset(tmp_path, machine_ids=("00", "04"))


def test_dcase_flat_machine_from_folder_name(tmp_path):
    records = index_dataset(make_dcase_flat(tmp_path / "dcase2020-fan"))
    assert len(records) == 6
    assert {r.machine for r in records} == {"fan"}
    assert {r.snr_db for r in records} == {None}
    assert sum(r.label for r in records) == 2
    anomaly = next(r for r in records if r.path.endswith("anomaly_id_02_00000000.wav"))
    assert anomaly.clip_key == "fan/id_02/-/anomaly/00000000"
    assert anomaly.label == 1 and anomaly.machine_id == "02"


def test_dcase_flat_unknown_machine_uses_parent(tmp_path):
    records = index_dataset(make_dcase_flat(tmp_path / "recordings"))
    assert {r.machine for r in records} == {"recordings"}


def test_dcase_train_test_layout(tmp_path):
    machine_dir = tmp_path / "dev_data" / "pump"
    make_dcase_flat(machine_dir / "train")
    make_dcase_flat(machine_dir / "test")
    records = index_dataset(tmp_path / "dev_data")
    assert len(records) == 12
    assert {r.machine for r in records} == {"pump"}
    keys = {r.clip_key for r in records}
    assert len(keys) == 12
    assert "pump/id_00/train/normal/00000001" in keys
    assert "pump/id_00/test/normal/00000001" in keys


def test_dcase_train_test_layout_keeps_the_official_partition(tmp_path):
    machine_dir = tmp_path / "dev_data" / "pump"
    make_dcase_flat(machine_dir / "train")
    make_dcase_flat(machine_dir / "test")
    records = index_dataset(tmp_path / "dev_data")
    assert {(os.path.basename(os.path.dirname(r.path)), r.subset) for r in records} == {
        ("train", "train"), ("test", "test")}
    assert {r.id_kind for r in records} == {"id"} and {r.domain for r in records} == {None}
    assert {r.subset for r in index_dataset(make_dcase_flat(tmp_path / "flat" / "pump"))} == {None}


def make_dcase2021(root: Path) -> Path:
    """A DCASE 2021-style pump tree: train, source_test and target_test of sections 00 and 01."""
    for section in ("00", "01"):
        for number in range(2):
            tiny_wav(_mkdir(root / "pump" / "train")
                     / f"section_{section}_source_train_normal_{number:04d}_serial_no_000_water.wav")
        tiny_wav(root / "pump" / "train" / f"section_{section}_target_train_normal_0000_serial_no_003_oil.wav")
        for domain in ("source", "target"):
            for label in ("normal", "anomaly"):
                tiny_wav(_mkdir(root / "pump" / f"{domain}_test")
                         / f"section_{section}_{domain}_test_{label}_0000.wav")
    return root


def _mkdir(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_dcase2021_names_give_section_domain_subset_and_attributes(tmp_path):
    records = index_dataset(make_dcase2021(tmp_path / "dcase2021"))
    assert len(records) == 2 * (3 + 4)
    first = records[0]
    assert os.path.basename(first.path) == "section_00_source_test_anomaly_0000.wav"
    assert (first.machine, first.machine_id, first.id_kind, first.domain, first.subset, first.label) == (
        "pump", "00", "section", "source", "test", 1)
    train = [r for r in records if r.subset == "train"]
    assert len(train) == 6 and {r.label for r in train} == {0}
    assert {r.attributes for r in train} == {"serial_no_000_water", "serial_no_003_oil"}
    assert {r.domain for r in train} == {"source", "target"}
    assert machine_group(first) == "pump/section_00"
    assert len({r.clip_key for r in records}) == len(records)
    assert {r.machine_id for r in index_dataset(tmp_path / "dcase2021", machine_ids=["section_01"])} == {"01"}


def test_dcase2021_and_mimii_folders_are_not_mixed(tmp_path):
    make_dcase2021(tmp_path / "d")
    make_mimii(tmp_path / "m", snrs=("0",), ids=("00",), clips=1)
    with pytest.raises(DatasetError, match="mixes"):
        index_dataset(tmp_path)


@pytest.mark.parametrize("name, machine_id", [("id_04_00000003.wav", "04"), ("section_03_0007.wav", "03")])
def test_evaluation_sets_without_labels(tmp_path, name, machine_id):
    tiny_wav(_mkdir(tmp_path / "eval_data" / "pump" / "test") / name)
    with pytest.raises(DatasetError, match=r"(?s)1 \.wav file\(s\) carry no normal/anomaly label.*" + name):
        index_dataset(tmp_path / "eval_data")
    (record,) = index_dataset(tmp_path / "eval_data", allow_unlabelled=True)
    assert (record.label, record.machine, record.machine_id, record.subset) == (UNLABELLED, "pump", machine_id, "test")
    assert "unlabelled" in format_summary([record]).splitlines()[0]


def test_missing_root(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        index_dataset(tmp_path / "nope")


def test_root_is_a_file(tmp_path):
    path = tiny_wav(tmp_path / "a.wav")
    with pytest.raises(DatasetError, match="not a directory"):
        index_dataset(path)


def test_no_wav_files(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match=r"no \.wav files"):
        index_dataset(tmp_path)


def test_unknown_layout_counted_with_examples(tmp_path):
    make_mimii(tmp_path, snrs=("0",), ids=("00",), clips=1)
    for i in range(5):
        tiny_wav(tmp_path / f"clip{i}.wav")
    with pytest.raises(DatasetError) as info:
        index_dataset(tmp_path)
    message = str(info.value)
    assert "5 .wav file(s) follow neither" in message
    assert "clip0.wav" in message and "clip2.wav" in message and "clip3.wav" not in message
    assert "and 2 more" in message
    assert "_dB_" in message and "anomaly" in message


def make_classes(folder: Path, normal=2, abnormal=1) -> Path:
    """`folder/normal` and `folder/abnormal` with tiny clips."""
    for label, count in (("normal", normal), ("abnormal", abnormal)):
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            tiny_wav(folder / label / f"{i:08d}.wav")
    return folder


@pytest.mark.parametrize("snr_folder, snr", [("min6dB", -6.0), ("6dB", 6.0), ("0_dB", 0.0),
                                             ("-6_dB_pump", -6.0), ("archives/min6dB/unpacked", -6.0)])
def test_mimii_archive_without_snr_folder_takes_the_snr_from_a_folder_above(tmp_path, snr_folder, snr):
    make_classes(tmp_path / snr_folder / "pump" / "id_02")
    records = index_dataset(tmp_path)
    assert {(r.snr_db, r.machine, r.machine_id) for r in records} == {(snr, "pump", "02")}
    assert "pump/id_02/abnormal/00000000" in {r.clip_key for r in records}


def test_mimii_archives_of_several_snrs_share_clip_keys(tmp_path):
    for folder in ("min6dB", "0dB", "6dB"):
        make_classes(tmp_path / folder / "pump" / "id_00")
    records = index_dataset(tmp_path, snr_db=(-6, 6))
    assert {r.snr_db for r in records} == {-6.0, 6.0}
    assert len({r.clip_key for r in records}) == 3


def test_mimii_archive_snr_given_in_the_config_where_no_folder_names_one(tmp_path):
    make_classes(tmp_path / "pump" / "id_00")
    assert {r.snr_db for r in index_dataset(tmp_path)} == {None}
    records = index_dataset(tmp_path, folder_snr_db=-6, snr_db=(-6,))
    assert len(records) == 3 and {r.snr_db for r in records} == {-6.0}
    with pytest.raises(DatasetError, match=r"SNR 0 dB.*data.folder_snr_db"):
        index_dataset(tmp_path, snr_db=(0,))


def test_prepared_splits_use_the_configured_folder_snr(tmp_path):
    from pump_keras.config import DataConfig, FeatureConfig
    from pump_keras.data.prepare import prepare_splits

    make_classes(tmp_path / "pump" / "id_00", normal=3, abnormal=3)
    config = DataConfig(data_dir=str(tmp_path), folder_snr_db=-6, snr_db=(-6,))
    splits = prepare_splits(config, FeatureConfig())
    assert {r.snr_db for clips in splits.values() for r in clips} == {-6.0}


def test_own_recordings_in_plain_normal_and_abnormal_folders(tmp_path):
    make_classes(tmp_path / "line_1", normal=2, abnormal=1)
    make_classes(tmp_path / "line_2", normal=1, abnormal=1)
    records = index_dataset(tmp_path)
    assert [(os.path.relpath(r.path, tmp_path), r.label, r.machine, r.machine_id, r.snr_db) for r in records] == [
        ("line_1/abnormal/00000000.wav", 1, "line_1", "00", None),
        ("line_1/normal/00000000.wav", 0, "line_1", "00", None),
        ("line_1/normal/00000001.wav", 0, "line_1", "00", None),
        ("line_2/abnormal/00000000.wav", 1, "line_2", "00", None),
        ("line_2/normal/00000000.wav", 0, "line_2", "00", None),
    ]
    assert records[0].clip_key == "line_1/id_00/abnormal/00000000"
    # The root may be the folder holding normal/ and abnormal/ itself.
    assert len(index_dataset(tmp_path / "line_1")) == 3


def test_own_recordings_with_machine_and_id_folders(tmp_path):
    make_classes(tmp_path / "site" / "fan" / "id_3")
    records = index_dataset(tmp_path)
    assert {(r.machine, r.machine_id, r.snr_db) for r in records} == {("fan", "03", None)}


def test_own_recordings_and_dcase_files_are_not_mixed(tmp_path):
    make_classes(tmp_path / "mine")
    make_dcase_flat(tmp_path / "pump")
    with pytest.raises(DatasetError, match="mixes 3 files in normal/abnormal folders"):
        index_dataset(tmp_path)


def test_unknown_layout_error_names_every_layout(tmp_path):
    tiny_wav(tmp_path / "loose.wav")
    with pytest.raises(DatasetError) as info:
        index_dataset(tmp_path)
    message = str(info.value)
    for layout in ("MIMII: <snr>_dB_<machine>", "without its SNR folder", "min6dB", "data.folder_snr_db",
                   "your own recordings: <any>/{normal,abnormal}/NAME.wav", "DCASE 2020 Task 2"):
        assert layout in message, layout


def test_snr_folder_machine_must_match(tmp_path):
    folder = tmp_path / "0_dB_fan" / "pump" / "id_00" / "normal"
    folder.mkdir(parents=True)
    tiny_wav(folder / "00000000.wav")
    with pytest.raises(DatasetError, match="follow neither"):
        index_dataset(tmp_path)


def test_mixed_layouts(tmp_path):
    make_mimii(tmp_path / "mimii", snrs=("0",), ids=("00",), clips=1)
    make_dcase_flat(tmp_path / "dcase" / "pump")
    with pytest.raises(DatasetError, match="mixes 2 files in normal/abnormal folders .MIMII layout. and 6 DCASE-layout"):
        index_dataset(tmp_path)


def test_duplicate_recording(tmp_path):
    make_dcase_flat(tmp_path / "a" / "pump")
    make_dcase_flat(tmp_path / "b" / "pump")
    with pytest.raises(DatasetError, match="appears twice"):
        index_dataset(tmp_path)


def test_hidden_files_skipped(tmp_path):
    make_mimii(tmp_path, snrs=("0",), ids=("00",), clips=1)
    (tmp_path / "._00000000.wav").write_bytes(b"\x00" * 10)
    hidden = tmp_path / ".trash"
    hidden.mkdir()
    tiny_wav(hidden / "junk.wav")
    assert len(index_dataset(tmp_path)) == 2


def test_named_pipe_is_refused_without_being_opened(tmp_path):
    make_mimii(tmp_path, snrs=("0",), ids=("00",), clips=1)
    pipe = tmp_path / "0_dB_pump" / "pump" / "id_00" / "normal" / "00000007.wav"
    os.mkfifo(pipe)
    with fails_instead_of_hanging(10):
        with pytest.raises(DatasetError, match=r"(?s)not regular files.*00000007.wav: a named pipe"):
            index_dataset(tmp_path)
        record = ClipRecord(path=str(pipe), label=0, machine="pump", machine_id="00", snr_db=0.0,
                            clip_key="pump/id_00/normal/00000007")
        with pytest.raises(WavFormatError, match="named pipe"):
            check_audio_headers([record])


def test_normalize_machine_id():
    assert normalize_machine_id(0) == "00"
    assert normalize_machine_id("id_06") == "06"
    with pytest.raises(DatasetError):
        normalize_machine_id("pump")


def test_summarize_counts(tmp_path):
    make_mimii(tmp_path, snrs=("0", "-6"), ids=("00",), clips=3)
    counts = summarize(index_dataset(tmp_path))
    assert counts == {(-6.0, "pump", "00", 0): 3, (-6.0, "pump", "00", 1): 3,
                      (0.0, "pump", "00", 0): 3, (0.0, "pump", "00", 1): 3}
    text = format_summary(index_dataset(tmp_path))
    assert "total" in text and text.splitlines()[1].split() == ["-6", "pump", "00", "3", "3"]


def test_summary_keeps_machines_with_the_same_id_apart(tmp_path):
    make_mimii(tmp_path, snrs=("0",), ids=("00",), clips=2, machine="pump")
    make_mimii(tmp_path, snrs=("0",), ids=("00",), clips=1, machine="fan")
    records = index_dataset(tmp_path)
    assert summarize(records) == {(0.0, "fan", "00", 0): 1, (0.0, "fan", "00", 1): 1,
                                  (0.0, "pump", "00", 0): 2, (0.0, "pump", "00", 1): 2}
    rows = [line.split() for line in format_summary(records).splitlines()[1:]]
    assert rows == [["0", "fan", "00", "1", "1"], ["0", "pump", "00", "2", "2"], ["total", "3", "3"]]
    assert {machine_group(r) for r in records} == {"fan/id_00", "pump/id_00"}


def test_headers_summary(tmp_path):
    folder = tmp_path / "pump"
    folder.mkdir()
    tiny_wav(folder / "normal_id_00_00000000.wav", channels=1)
    tiny_wav(folder / "anomaly_id_00_00000000.wav", channels=8)
    summary = check_audio_headers(index_dataset(tmp_path), sample_rate=16000)
    assert summary["files"] == 2 and summary["sample_rate"] == 16000
    assert summary["channels"] == {1: 1, 8: 1}
    assert summary["total_seconds"] == pytest.approx(2 * 160 / 16000)


def test_headers_bad_file_named(tmp_path):
    make_dcase_flat(tmp_path / "pump")
    bad = tmp_path / "pump" / "normal_id_00_00000001.wav"
    bad.write_bytes(b"not a wav file at all")
    with pytest.raises(WavFormatError, match=str(bad)):
        check_audio_headers(index_dataset(tmp_path))


def test_headers_differing_rates_named(tmp_path):
    make_dcase_flat(tmp_path / "pump")
    odd = tiny_wav(tmp_path / "pump" / "normal_id_02_00000001.wav", sample_rate=44100)
    with pytest.raises(DatasetError) as info:
        check_audio_headers(index_dataset(tmp_path))
    message = str(info.value)
    assert "16000 Hz in 5 file(s)" in message and "44100 Hz in 1 file(s)" in message
    assert str(odd) in message


def test_headers_rate_differs_from_expected(tmp_path):
    make_dcase_flat(tmp_path / "pump")
    with pytest.raises(DatasetError, match=r"16000 Hz in 6 file\(s\).*22050 Hz is configured"):
        check_audio_headers(index_dataset(tmp_path), sample_rate=22050)


def test_headers_vanished_file(tmp_path):
    records = index_dataset(make_dcase_flat(tmp_path / "pump"))
    os.remove(records[0].path)
    with pytest.raises(DatasetError, match="cannot read file"):
        check_audio_headers(records)


def test_real_mimii_clips(shared_data):
    records = index_dataset(shared_data / "mimii-pump-0dB")
    assert len(records) == 8
    assert {r.snr_db for r in records} == {0.0}
    assert {r.machine for r in records} == {"pump"}
    assert sorted(r.machine_id for r in records) == ["00", "00", "02", "02", "04", "04", "06", "06"]
    assert sum(r.label for r in records) == 4
    assert records[0].clip_key == "pump/id_00/abnormal/00000000"
    summary = check_audio_headers(records, sample_rate=16000)
    assert summary["channels"] == {8: 8}
    assert summary["total_seconds"] == pytest.approx(80.0)


def test_real_dcase_clips(shared_data):
    records = index_dataset(shared_data / "dcase2020-pump")
    assert len(records) == 16
    assert {(r.subset, r.domain, r.id_kind) for r in records} == {(None, None, "id")}
    assert sum(r.label for r in records) == 6
    assert {r.machine for r in records} == {"pump"}
    assert {r.machine_id for r in records} == {"00", "02", "04", "06"}
    assert {r.snr_db for r in records} == {None}
    assert len({r.clip_key for r in records}) == 16
    summary = check_audio_headers(records, sample_rate=16000)
    assert summary["channels"] == {1: 16}
