"""Tests of the DCASE-format result files, on fake records and the real DCASE 2020 clips."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pump_keras.data.index import UNLABELLED, ClipRecord, index_dataset
from pump_keras.evaluation import metrics
from pump_keras.evaluation.dcase_results import format_result_rows, result_table, write_dcase_results
from tests.conftest import SHARED_DATA


def record(machine_id, label, number, machine="pump", **fields):
    """A DCASE 2020 test clip record."""
    name = f"{'anomaly' if label == 1 else 'normal'}_id_{machine_id}_{number:08d}.wav"
    return ClipRecord(path=f"/d/{machine}/test/{name}", label=label, machine=machine, machine_id=machine_id,
                      snr_db=None, clip_key=f"{machine}/{machine_id}/{label}/{number}", subset="test", **fields)


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


@pytest.fixture
def scored():
    """Two ids of 30 normal and 10 anomalous clips with overlapping random scores."""
    rng = np.random.default_rng(0)
    records, scores = [], []
    for machine_id, shift in (("00", 1.0), ("02", 2.0)):
        for number in range(40):
            label = int(number >= 30)
            records.append(record(machine_id, label, number))
            scores.append(rng.normal() + shift * label)
    return records, np.array(scores)


def test_score_and_decision_files(tmp_path, scored):
    records, scores = scored
    write_dcase_results(str(tmp_path), records, scores, threshold=0.5)
    rows = read_rows(tmp_path / "anomaly_score_pump_id_00.csv")
    assert [name for name, _ in rows] == sorted(r.path.rsplit("/", 1)[1] for r in records if r.machine_id == "00")
    by_name = {r.path.rsplit("/", 1)[1]: s for r, s in zip(records, scores)}
    assert all(float(value) == by_name[name] for name, value in rows)
    decisions = read_rows(tmp_path / "decision_result_pump_id_02.csv")
    assert all(int(d) == int(by_name[name] >= 0.5) for name, d in decisions)
    assert {int(d) for _, d in decisions} == {0, 1}


def test_result_csv_matches_scikit_learn(tmp_path, scored):
    records, scores = scored
    table = write_dcase_results(str(tmp_path), records, scores, threshold=0.0)
    lines = read_rows(tmp_path / "result.csv")
    assert lines[0] == ["pump"] and lines[1] == ["id", "AUC", "pAUC", "pAUC (sklearn McClish)"]
    assert [line[0] for line in lines[2:]] == ["00", "02", "arithmetic mean", "harmonic mean"]
    for line, machine_id in zip(lines[2:4], ("00", "02")):
        members = np.array([r.machine_id == machine_id for r in records])
        labels = np.array([r.label for r in records])[members]
        auc, pauc, mcclish = map(float, line[1:])
        assert auc == pytest.approx(roc_auc_score(labels, scores[members]), abs=1e-6)
        assert mcclish == pytest.approx(roc_auc_score(labels, scores[members], max_fpr=0.1), abs=1e-6)
        assert pauc == pytest.approx(metrics.partial_auc(labels, scores[members]), abs=1e-6)
    aucs = [row["auc"] for row in table["pump"]["rows"]]
    assert table["pump"]["arithmetic mean"]["auc"] == pytest.approx(np.mean(aucs))
    assert table["pump"]["harmonic mean"]["auc"] == pytest.approx(2 / (1 / aucs[0] + 1 / aucs[1]))
    assert table["pump"]["harmonic mean"]["auc"] < table["pump"]["arithmetic mean"]["auc"]


def test_sections_and_domains_get_their_own_rows_and_file_names(tmp_path):
    records, scores = [], []
    for domain, shift in (("source", 3.0), ("target", 0.5)):
        for number in range(8):
            label = int(number >= 5)
            records.append(ClipRecord(
                path=f"/d/pump/{domain}_test/section_01_{domain}_test_{number}.wav", label=label, machine="pump",
                machine_id="01", snr_db=None, clip_key=f"{domain}{number}", subset="test", domain=domain,
                id_kind="section"))
            scores.append(number * 0.1 + shift * label)
    write_dcase_results(str(tmp_path), records, scores, threshold=1.0)
    assert (tmp_path / "anomaly_score_pump_section_01_test.csv").exists()
    lines = read_rows(tmp_path / "result.csv")
    assert lines[1] == ["section", "domain", "AUC", "pAUC", "pAUC (sklearn McClish)"]
    assert [line[:2] for line in lines[2:]] == [["01", "source"], ["01", "target"], ["arithmetic mean", ""],
                                                ["harmonic mean", ""]]
    assert float(lines[2][2]) == 1.0


def test_several_machines_one_block_each():
    records = [record("00", n >= 3, n, machine=m) for m in ("fan", "pump") for n in range(5)]
    rows = format_result_rows(result_table(records, np.arange(10.0)))
    assert [row[0] for row in rows if len(row) == 1] == ["fan", "pump"]
    assert () in rows


def test_evaluation_set_gets_scores_and_decisions_but_no_result(tmp_path):
    records = [ClipRecord(path=f"/e/pump/test/id_01_{n:08d}.wav", label=UNLABELLED, machine="pump",
                          machine_id="01", snr_db=None, clip_key=str(n), subset="test") for n in range(3)]
    assert write_dcase_results(str(tmp_path), records, [0.1, 0.2, 0.3], threshold=0.15) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anomaly_score_pump_id_01.csv",
                                                          "decision_result_pump_id_01.csv"]


def test_scores_must_match_records(tmp_path, scored):
    records, scores = scored
    with pytest.raises(ValueError, match="80 records but 79 scores"):
        write_dcase_results(str(tmp_path), records, scores[:-1], threshold=0.0)


def test_real_dcase_clips(tmp_path):
    records = index_dataset(SHARED_DATA / "dcase2020-pump")
    scores = np.array([float(r.label) + 0.01 * i for i, r in enumerate(records)])
    table = write_dcase_results(str(tmp_path), records, scores, threshold=0.5)
    assert sorted(p.name for p in tmp_path.glob("anomaly_score_*")) == [
        f"anomaly_score_pump_id_{i}.csv" for i in ("00", "02", "04", "06")]
    assert [row["id"] for row in table["pump"]["rows"]] == ["00", "04", "06"]  # id 02 has no anomaly clip
    assert table["pump"]["arithmetic mean"]["auc"] == 1.0


def test_mimii_file_names_repeat_so_the_folder_is_kept(tmp_path):
    records = [ClipRecord(path=f"/m/0_dB_pump/pump/id_00/{folder}/00000000.wav", label=label, machine="pump",
                          machine_id="00", snr_db=0.0, clip_key=folder) for folder, label in (("normal", 0),
                                                                                              ("abnormal", 1))]
    write_dcase_results(str(tmp_path), records, [0.1, 0.9], threshold=0.5)
    assert read_rows(tmp_path / "anomaly_score_pump_id_00.csv") == [["abnormal/00000000.wav", "0.9"],
                                                                    ["normal/00000000.wav", "0.1"]]
