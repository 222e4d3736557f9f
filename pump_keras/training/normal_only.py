"""What every normal-only method shares: its checks, per-machine thresholds and metrics, and its outputs.

Under the normal-only protocol (`data.protocol="normal_only"`) a model never
sees an anomaly: each machine's decision threshold comes from the scores of
its held-out normal clips (`evaluation.threshold_criterion`, `"gamma"` or
`"fpr"`), and the test metrics are computed per machine and averaged over
machines, as DCASE tables do.
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Callable, Dict, Optional

import numpy as np

from pump_keras.config import RunConfig, replace
from pump_keras.data.index import machine_group
from pump_keras.data.prepare import prepare_splits
from pump_keras.data.split import describe_splits, write_manifest
from pump_keras.errors import TrainingError
from pump_keras.evaluation import metrics
from pump_keras.evaluation.dcase_results import write_dcase_results
from pump_keras.evaluation.normal_only_report import SCORE_COLUMNS
from pump_keras.evaluation.scoring import choose_threshold
from pump_keras.files import atomic_write_bytes
from pump_keras.run_dir import RunDirectory


def check_config(config: RunConfig) -> None:
    """Raises unless the config is one the normal-only protocol can run."""
    if config.data.protocol != "normal_only":
        raise TrainingError("This method learns normal sounds only: set data.protocol=normal_only "
                            "(the dcase2020_ae and normal_only presets do).")
    if config.evaluation.threshold_criterion == "balanced_accuracy":
        raise TrainingError("threshold_criterion 'balanced_accuracy' needs abnormal validation clips, which the "
                            "normal-only protocol has none of: use 'gamma' or 'fpr' with evaluation.target_fpr.")
    if config.train.pseudo_anomaly_fraction:
        raise TrainingError("Made-up anomalies belong to the normal/abnormal classifier; the normal-only "
                            "methods take none (set train.pseudo_anomaly_fraction to 0).")


def prepare_run(config: RunConfig, synthetic_data_dir: Callable, log: Callable[[str], None],
                check_splits: Optional[Callable[[dict], None]] = None):
    """A normal-only run's directory and data: `(run, data_config, splits, groups, resuming)`.

    The data is split and checked (`check_validation_clips`, then the
    method's own `check_splits`) before the config and the manifest are
    recorded, so a corrected command starts a new run instead of being
    refused as another config.
    """
    run = RunDirectory(config.run_dir)
    resuming = run.check(config)
    data_config = config.data
    if data_config.data_dir is None and data_config.split_file is None:
        data_config = replace(data_config, data_dir=synthetic_data_dir(config, run, log))
    splits = prepare_splits(data_config, config.features, run.path if resuming else None)
    log(describe_splits(splits))
    groups = {name: by_group(splits[name]) for name in ("train", "val", "test")}
    check_validation_clips(config, groups)
    if check_splits is not None:
        check_splits(splits)
    if not resuming:
        os.makedirs(run.path, exist_ok=True)
        run.write_config(config)
        write_manifest(run.file(RunDirectory.MANIFEST), splits)
    return run, data_config, splits, groups, resuming


def check_validation_clips(config: RunConfig, groups: dict) -> None:
    """Raises, before any training, if a machine has too few validation clips for its threshold."""
    needed = 3 if config.evaluation.threshold_criterion == "gamma" else 1
    for group in sorted(groups["train"]):
        count = len(groups["val"].get(group, []))
        if count < needed:
            raise TrainingError(
                f"{group} has {count} validation clip(s); the {config.evaluation.threshold_criterion!r} threshold "
                f"needs at least {needed}. Give validation a larger share (data.split_ratios, now "
                f"{list(config.data.split_ratios)}), add recordings, or use evaluation.threshold_criterion=fpr.")


def evaluate_scores(config: RunConfig, groups: dict, scores: dict, score_name: str) -> dict:
    """Per-machine thresholds (on val) and test metrics; `test` holds their means over machines.

    `groups` and `scores` map a split name to `{machine: records}` and
    `{machine: scores}`; `score_name` says what the scores are.
    """
    machines, thresholds = {}, {}
    for group in sorted(scores["test"]):
        val_scores = scores["val"][group]
        threshold = choose_threshold(np.zeros(len(val_scores)), val_scores, config.evaluation)
        thresholds[group] = {"threshold_score": float(threshold), "val_clips": int(len(val_scores)),
                             "val_score_std": float(np.std(val_scores))}
        labels = np.array([r.label for r in groups["test"].get(group, [])])
        if set(labels.tolist()) == {0, 1}:
            machines[group] = metrics.binary_metrics(labels, scores["test"][group], threshold,
                                                     max_fpr=config.evaluation.max_fpr)
    if not machines:
        raise TrainingError("No machine has both normal and abnormal test clips: the test split cannot be scored.")
    numeric = [key for key, value in next(iter(machines.values())).items() if isinstance(value, float)]
    return {
        "protocol": "normal_only",
        "score": score_name,
        "test": {key: float(np.mean([m[key] for m in machines.values()])) for key in numeric},
        "test_averaged_over": sorted(machines),
        "test_per_machine_id": machines,
        "threshold": {"score": score_name, "criterion": config.evaluation.threshold_criterion,
                      "target_fpr": config.evaluation.target_fpr, "chosen_on": "val", "machines": thresholds},
    }


def by_group(records) -> Dict[str, list]:
    """`records` grouped by machine ("pump/id_00"), in record order."""
    groups: Dict[str, list] = {}
    for record in records:
        groups.setdefault(machine_group(record), []).append(record)
    return groups


def machine_threshold(run_dir: str, machine=None):
    """`(machine, its threshold.json entry)`: `machine`, or the run's only machine when it is None.

    Raises:
        TrainingError: no threshold.json, several machines and none chosen, or an unknown machine.
    """
    path = os.path.join(run_dir, RunDirectory.THRESHOLD)
    if not os.path.exists(path):
        raise TrainingError(f"{run_dir} holds no {RunDirectory.THRESHOLD}: train it first "
                            "(python -m pump_keras.train).")
    with open(path, encoding="utf-8") as handle:
        thresholds = json.load(handle)["machines"]
    if machine is None:
        if len(thresholds) != 1:
            raise TrainingError(f"{run_dir} scores {len(thresholds)} machines ({', '.join(sorted(thresholds))}); "
                                "a SavedModel serves one: set export.machine (e.g. --machine "
                                f"{sorted(thresholds)[0]}).")
        machine = next(iter(thresholds))
    if machine not in thresholds:
        raise TrainingError(f"{run_dir} has no machine {machine!r}; its machines: {', '.join(sorted(thresholds))}.")
    return machine, thresholds[machine]


def write_scores(path: str, groups: dict, scores: dict) -> None:
    """Every scored clip as a CSV row: split, machine, label, score, path (what the evaluation report reads)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SCORE_COLUMNS)
    for split in ("val", "test"):
        for group in sorted(scores[split]):
            for record, score in zip(groups[split].get(group, []), scores[split][group]):
                writer.writerow([split, group, record.label, repr(float(score)), record.path])
    atomic_write_bytes(path, buffer.getvalue().encode("utf-8"))


def write_outputs(run: RunDirectory, config: RunConfig, groups: dict, scores: dict, score_name: str) -> dict:
    """Thresholds and metrics (`evaluate_scores`) to `threshold.json` and `metrics.json`, and the DCASE files."""
    result = evaluate_scores(config, groups, scores, score_name)
    run.write_json(RunDirectory.THRESHOLD, result["threshold"])
    run.write_json(RunDirectory.METRICS, result)
    write_scores(run.file(RunDirectory.SCORES), groups, scores)
    machines = sorted(scores["test"])
    write_dcase_results(run.file(RunDirectory.DCASE_RESULTS),
                        [r for group in machines for r in groups["test"].get(group, [])],
                        np.concatenate([scores["test"][group] for group in machines]),
                        {group: entry["threshold_score"] for group, entry in result["threshold"]["machines"].items()},
                        max_fpr=config.evaluation.max_fpr)
    return result


__all__ = ["check_config", "prepare_run", "check_validation_clips", "evaluate_scores", "by_group", "machine_threshold",
           "write_scores", "write_outputs"]
