"""The evaluation report of a normal-only run: per machine, with intervals and figures.

A normal-only run (`data.protocol="normal_only"`) scores its validation and
test clips as it trains and keeps every score in `scores.csv`, and each
machine's threshold in `threshold.json`. This report reads them: for each
machine the headline metrics at its threshold with bootstrap intervals, the
mean over machines (as DCASE tables average them), an ROC curve and score
histograms per machine, the DCASE result files, and `report/report.md`.
"""

from __future__ import annotations

import csv
import json
import os
from typing import Callable, Dict

import numpy as np

from pump_keras.config import EvalConfig
from pump_keras.errors import EvaluationError
from pump_keras.evaluation import plots
from pump_keras.evaluation.metrics import HEADLINE_METRICS, METRIC_TITLES, metrics_with_intervals
from pump_keras.files import atomic_write_bytes
from pump_keras.run_dir import RunDirectory

SCORE_COLUMNS = ("split", "machine", "label", "score", "path")


def read_scores(run_dir: str) -> Dict[str, Dict[str, dict]]:
    """`{split: {machine: {"labels", "scores", "paths"}}}` from the run's `scores.csv`."""
    path = os.path.join(run_dir, RunDirectory.SCORES)
    if not os.path.exists(path):
        raise EvaluationError(f"{run_dir} holds no {RunDirectory.SCORES}: train it first (python -m pump_keras.train).")
    result: Dict[str, Dict[str, dict]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            entry = result.setdefault(row["split"], {}).setdefault(row["machine"], {"labels": [], "scores": [],
                                                                                    "paths": []})
            entry["labels"].append(int(row["label"]))
            entry["scores"].append(float(row["score"]))
            entry["paths"].append(row["path"])
    return result


def evaluate_normal_only_run(run_dir: str, config: EvalConfig, plots_wanted: bool = True,
                             log: Callable[[str], None] = print) -> dict:
    """Writes `run_dir/report/` for a normal-only run's test split and returns the results.

    The thresholds are the run's own (chosen on its normal validation clips
    as it trained); `config` sets the intervals and the pAUC limit.
    """
    scores = read_scores(run_dir)
    with open(os.path.join(run_dir, RunDirectory.THRESHOLD), encoding="utf-8") as handle:
        thresholds = json.load(handle)
    with open(os.path.join(run_dir, RunDirectory.METRICS), encoding="utf-8") as handle:
        score_name = json.load(handle)["score"]
    report_dir = os.path.join(run_dir, RunDirectory.REPORT)
    os.makedirs(report_dir, exist_ok=True)
    machines, figures = {}, {}
    for machine, entry in sorted(scores.get("test", {}).items()):
        labels, values = np.array(entry["labels"]), np.array(entry["scores"])
        if set(labels.tolist()) != {0, 1}:
            continue
        threshold = thresholds["machines"][machine]["threshold_score"]
        machines[machine] = metrics_with_intervals(labels, values, threshold, config)
        if plots_wanted:
            stem = machine.replace("/", "_")
            plots.plot_roc(labels, values, threshold, os.path.join(report_dir, f"roc_{stem}.png"),
                           max_fpr=config.max_fpr, title=f"{machine}: ROC")
            plots.plot_score_histograms(labels, values, threshold, os.path.join(report_dir, f"scores_{stem}.png"))
            figures[machine] = [f"roc_{stem}.png", f"scores_{stem}.png"]
    if not machines:
        raise EvaluationError(f"{run_dir}: no machine has both normal and abnormal test clips.")
    result = {
        "run_dir": os.path.abspath(run_dir), "protocol": "normal_only", "score": score_name,
        "threshold": thresholds, "evaluation": json.loads(json.dumps(config.__dict__)),
        "model": {name: float(np.mean([m[name] for m in machines.values()])) for name in HEADLINE_METRICS},
        "per_machine_id": machines, "figures": figures,
        "dcase": {"dir": os.path.join(run_dir, RunDirectory.DCASE_RESULTS)},
        "n_clips": int(sum(len(e["labels"]) for e in scores["test"].values())),
    }
    atomic_write_bytes(os.path.join(report_dir, "evaluation.json"),
                       (json.dumps(result, indent=2, default=float) + "\n").encode())
    write_normal_only_report(result, os.path.join(report_dir, "report.md"))
    log(f"Report: {os.path.join(report_dir, 'report.md')}")
    return result


def _cell(entry: dict, name: str) -> str:
    interval = entry.get(f"{name}_ci")
    text = f"{entry[name]:.3f}"
    return text + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")


def write_normal_only_report(result: dict, path: str) -> None:
    """The Markdown report of `evaluate_normal_only_run`."""
    header = "| machine | threshold | " + " | ".join(METRIC_TITLES[n] for n in HEADLINE_METRICS) + " |"
    lines = [f"# Evaluation of {os.path.basename(result['run_dir'])} (normal-only)", "",
             f"Trained on normal clips only; anomaly score: {result['score']}. Each machine's threshold was chosen "
             f"on its held-out normal clips by {result['threshold']['criterion']} (target false-alarm rate "
             f"{result['threshold']['target_fpr']}). pAUC: FPR <= {result['evaluation']['max_fpr']} (DCASE). "
             + (f"Brackets: {100 * result['evaluation']['confidence']:.0f} % bootstrap intervals over clips."
                if result["evaluation"]["bootstrap"] else "No intervals (bootstrap 0)."), "",
             "## Per machine (test split)", "", header, "| --- " * (len(HEADLINE_METRICS) + 2) + "|"]
    for machine, entry in result["per_machine_id"].items():
        threshold = result["threshold"]["machines"][machine]["threshold_score"]
        lines.append(f"| {machine} | {threshold:.4g} | " + " | ".join(_cell(entry, n) for n in HEADLINE_METRICS)
                     + " |")
    lines.append("| mean over machines | | " + " | ".join(f"{result['model'][n]:.3f}" for n in HEADLINE_METRICS)
                 + " |")
    lines += ["", f"DCASE-format scores, decisions and `result.csv`: "
                  f"`{os.path.relpath(result['dcase']['dir'], os.path.dirname(path))}/`.", ""]
    for machine, files in result["figures"].items():
        lines += [f"## {machine}", ""] + [f"![{file}]({file})" for file in files] + [""]
    atomic_write_bytes(path, "\n".join(lines).encode())


__all__ = ["SCORE_COLUMNS", "read_scores", "evaluate_normal_only_run", "write_normal_only_report"]
