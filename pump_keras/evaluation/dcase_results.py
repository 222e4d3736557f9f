"""Results in the DCASE Task 2 format: per-machine score and decision files, and `result.csv`.

What the DCASE challenge asks of a submission, and what its evaluator prints:

* `anomaly_score_<machine>_id_<XX>.csv` (DCASE 2020) or
  `anomaly_score_<machine>_section_<XX>_test.csv` (2021 on): one line per
  test clip, `file name,anomaly score`, no header (on MIMII, whose
  `normal/` and `abnormal/` folders repeat file names, `folder/file name`);
* `decision_result_<same>.csv`: `file name,0 or 1` (1: anomalous);
* `result.csv`, only where the clips carry labels: for each machine type a
  block with one row per id or section (and per domain, where the layout has
  domains) holding AUC and pAUC at FPR <= `max_fpr`, then the arithmetic and
  the harmonic mean of the rows.

pAUC is written twice, labelled: the normalised partial area that the DCASE
task descriptions define (`pAUC`, a random detector scores `max_fpr / 2`),
and scikit-learn's `roc_auc_score(max_fpr=...)`, McClish-standardised
(`pAUC (sklearn McClish)`, random = 0.5). The official DCASE 2020 baseline
script computed the latter, so its published pAUC figures (e.g. pump 60.00)
compare with that column.
"""

from __future__ import annotations

import collections
import csv
import io
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from pump_keras.data.index import UNLABELLED, machine_group
from pump_keras.evaluation import metrics
from pump_keras.files import atomic_write_bytes

RESULT_FILE = "result.csv"
MEAN_ROWS = ("arithmetic mean", "harmonic mean")
RESULT_COLUMNS = ("AUC", "pAUC", "pAUC (sklearn McClish)")


def file_stem(record) -> str:
    """The part of the result file names naming a record's machine and id or section."""
    if record.id_kind == "section":
        return f"{record.machine}_section_{record.machine_id}_test"
    return f"{record.machine}_id_{record.machine_id}"


def clip_names(paths: Sequence[str]) -> List[str]:
    """The file names of a result file: base names, or folder/base name where base names repeat (MIMII's
    `normal/00000000.wav` and `abnormal/00000000.wav`)."""
    names = [os.path.basename(p) for p in paths]
    if len(set(names)) == len(names):
        return names
    return [os.path.join(os.path.basename(os.path.dirname(p)), os.path.basename(p)) for p in paths]


def write_dcase_results(out_dir: str, records: Sequence, scores, threshold: Union[float, Mapping[str, float]],
                        max_fpr: float = metrics.DEFAULT_MAX_FPR) -> Optional[dict]:
    """Writes the score, decision and (for labelled clips) result files of `records` into `out_dir`.

    Args:
        out_dir: the folder to write to (made if missing); files are written
            atomically and replace older ones of the same name.
        records: the scored clips (`ClipRecord`s).
        scores: one anomaly score per record, higher meaning more anomalous.
        threshold: a clip is decided anomalous when its score reaches it;
            a mapping gives each machine (`machine_group`, "pump/id_00")
            its own.
        max_fpr: the pAUC limit.

    Returns:
        The result table (`result_table`), or `None` when some clip has no
        label (an evaluation set: score and decision files only).
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores) != len(records):
        raise ValueError(f"{len(records)} records but {len(scores)} scores.")
    os.makedirs(out_dir, exist_ok=True)
    by_stem: Dict[str, List[Tuple[str, float, float]]] = collections.defaultdict(list)
    for record, score in sorted(zip(records, scores), key=lambda pair: pair[0].path):
        cut = threshold[machine_group(record)] if isinstance(threshold, Mapping) else threshold
        by_stem[file_stem(record)].append((record.path, float(score), float(cut)))
    for stem, rows in by_stem.items():
        by_stem[stem] = [(name, s, cut) for name, (_, s, cut) in zip(clip_names([p for p, _, _ in rows]), rows)]
    for stem, rows in by_stem.items():
        _write_csv(os.path.join(out_dir, f"anomaly_score_{stem}.csv"), [(name, repr(s)) for name, s, _ in rows])
        _write_csv(os.path.join(out_dir, f"decision_result_{stem}.csv"),
                   [(name, int(s >= cut)) for name, s, cut in rows])
    if any(r.label == UNLABELLED for r in records):
        return None
    table = result_table(records, scores, max_fpr)
    _write_csv(os.path.join(out_dir, RESULT_FILE), format_result_rows(table))
    return table


def result_table(records: Sequence, scores, max_fpr: float = metrics.DEFAULT_MAX_FPR) -> dict:
    """AUC and both pAUCs per machine, per id or section (and domain), with their means.

    Returns:
        `{machine: {"kind": "id" or "section", "rows": [{"id", "domain",
        "auc", "pauc", "pauc_mcclish", "normal", "anomaly"}, ...],
        "arithmetic mean": {...}, "harmonic mean": {...}}}`. A row whose clips
        lack a class is left out (its AUC is undefined).
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    groups: Dict[str, Dict[Tuple[str, str], List[int]]] = collections.defaultdict(dict)
    for index, record in enumerate(records):
        groups[record.machine].setdefault((record.machine_id, record.domain or ""), []).append(index)
    table = {}
    for machine in sorted(groups):
        kind = next(r.id_kind for r in records if r.machine == machine)
        rows = [row for key, members in sorted(groups[machine].items())
                for row in [_row(key, [records[i].label for i in members], scores[members], max_fpr)] if row]
        table[machine] = {"kind": kind, "rows": rows, **_means(rows)}
    return table


def format_result_rows(table: dict) -> List[tuple]:
    """The CSV rows of `result.csv` for a `result_table`, as the DCASE evaluator lays them out."""
    lines: List[tuple] = []
    with_domain = any(row["domain"] for entry in table.values() for row in entry["rows"])
    pad = ("",) if with_domain else ()
    for machine, entry in table.items():
        if lines:
            lines.append(())
        lines.append((machine,))
        lines.append((entry["kind"], *(("domain",) if with_domain else ()), *RESULT_COLUMNS))
        for row in entry["rows"]:
            lines.append((row["id"], *((row["domain"],) if with_domain else ()), *_values(row)))
        for name in MEAN_ROWS:
            if entry.get(name):
                lines.append((name, *pad, *_values(entry[name])))
    return lines


def _row(key: Tuple[str, str], labels: Sequence[int], scores: np.ndarray, max_fpr: float) -> Optional[dict]:
    """One id's (and domain's) AUC and pAUCs, or `None` without both classes."""
    labels = np.asarray(labels)
    if set(labels.tolist()) != {0, 1}:
        return None
    pauc = metrics.partial_auc(labels, scores, max_fpr)
    return {"id": key[0], "domain": key[1], "auc": metrics.roc_auc(labels, scores), "pauc": pauc,
            "pauc_mcclish": metrics.mcclish_standardized(pauc, max_fpr),
            "normal": int((labels == 0).sum()), "anomaly": int((labels == 1).sum())}


def _means(rows: Sequence[dict]) -> dict:
    """The arithmetic and harmonic means of the rows' AUC and pAUCs (empty without rows)."""
    if not rows:
        return {}
    result = {}
    for name in MEAN_ROWS:
        result[name] = {}
        for field in ("auc", "pauc", "pauc_mcclish"):
            values = np.array([row[field] for row in rows])
            if name == "arithmetic mean":
                result[name][field] = float(values.mean())
            else:  # the harmonic mean is 0 as soon as one value is
                result[name][field] = 0.0 if (values <= 0).any() else float(len(values) / (1.0 / values).sum())
    return result


def _values(row: dict) -> tuple:
    return tuple(f"{row[field]:.6f}" for field in ("auc", "pauc", "pauc_mcclish"))


def _write_csv(path: str, rows) -> None:
    """Writes `rows` as CSV (no header) atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for row in rows:
        writer.writerow(row)
    atomic_write_bytes(path, buffer.getvalue().encode("utf-8"))


__all__ = ["RESULT_FILE", "file_stem", "clip_names", "write_dcase_results", "result_table", "format_result_rows"]
