"""Evaluate a training run honestly: metrics with confidence intervals, baselines, plots, a one-page report.

`evaluate_run` scores the run's best model on a split, picks the decision
threshold on the validation split (`EvalConfig`), saves it for export, and
writes `RUN/report/`: `evaluation.json`, `report.md` and its PNGs.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from pump_keras.audio.features import to_backbone_channels, wav_bytes_to_image
from pump_keras.config import EvalConfig, RunConfig, replace
from pump_keras.data.index import check_audio_headers, index_dataset, machine_group, snr_text
from pump_keras.data.prepare import prepare_splits
from pump_keras.data.split import leaked_examples, read_manifest
from pump_keras.errors import EvaluationError
from pump_keras.evaluation import baselines, metrics, plots
from pump_keras.evaluation.dcase_results import write_dcase_results
from pump_keras.evaluation.metrics import metrics_with_intervals
from pump_keras.evaluation.normal_only_report import evaluate_normal_only_run
from pump_keras.evaluation.scoring import choose_threshold, score_records, sigmoid, threshold_record
from pump_keras.evaluation.verdict import compare_with_baseline
from pump_keras.files import atomic_write_bytes
from pump_keras.models import load_model, model_inputs
from pump_keras.run_dir import RunDirectory, load_run_config

ALL_CLIPS = "all"



def snr_name(snr_db: Optional[float]) -> str:
    """`"-6 dB"`, or `"n/a"` for recordings without an SNR folder (DCASE)."""
    return snr_text(snr_db, missing="n/a")


def eval_records(config: RunConfig, run_dir: str, data_dir: Optional[str], split: str,
                 snr_db: Optional[Sequence[float]] = None,
                 folder_snr_db: Optional[float] = None) -> Dict[str, List]:
    """The run's own val split, and the records to evaluate.

    Without `data_dir`: the run's own `split`. With it: every clip of
    `data_dir` (`split="all"`, no re-split) or that split of it, split with
    the run's seed and ratios. The run's own SNR and machine-id filters are
    not applied to another folder; `snr_db` chooses SNRs explicitly (every
    SNR by default), and `folder_snr_db` names the SNR of folders that name
    none. Clips of another folder that the run trained or selected on are
    refused (`check_not_seen`).
    """
    own = read_manifest(os.path.join(run_dir, RunDirectory.MANIFEST))
    if data_dir is None:
        if split == ALL_CLIPS:
            raise EvaluationError(f"split {ALL_CLIPS!r} scores every clip of another folder: give it with "
                                  "--data-dir (the run's own clips include its training split).")
        if folder_snr_db is not None:
            raise EvaluationError("--folder-snr-db applies to another folder: give it with --data-dir.")
        records = _with_snrs(own.get(split) or [], snr_db, f"the {split!r} split of {run_dir}")
    else:
        data = replace(config.data, data_dir=data_dir, split_file=None, snr_db=snr_db,
                       machine_ids=None, folder_snr_db=folder_snr_db)
        if split == ALL_CLIPS:
            records = index_dataset(data_dir, snr_db=snr_db, folder_snr_db=folder_snr_db)
            check_audio_headers(records, sample_rate=config.features.sample_rate, root=data_dir)
        else:
            records = prepare_splits(data, config.features, None).get(split) or []
        check_not_seen(records, own, split, run_dir, data_dir)
    if not records:
        raise EvaluationError(f"The {split!r} split of {data_dir or run_dir} holds no clips.")
    return {"val": own["val"], "eval": records}


def _with_snrs(records: Sequence, snr_db: Optional[Sequence[float]], where: str) -> List:
    """The records at the chosen SNRs (all without a choice); raises for a chosen SNR with no clips."""
    if snr_db is None:
        return list(records)
    wanted = {float(v) for v in snr_db}
    missing = sorted(wanted - {r.snr_db for r in records})
    if missing:
        present = sorted({snr_name(r.snr_db) for r in records})
        raise EvaluationError(f"{where} holds no clips at SNR {', '.join(map(snr_text, missing))}; "
                              f"it has {', '.join(present) or 'no clips'}.")
    return [r for r in records if r.snr_db in wanted]


def check_not_seen(records: Sequence, own_splits: Dict[str, List], split: str, run_dir: str, data_dir: str) -> None:
    """Raises if clips of another folder were in the run's train split (or its val split, unless evaluating val).

    Recordings are compared by clip key, so the same recording at another
    SNR counts: scores of clips the model learnt from say nothing.
    """
    roles = ("train",) if split == "val" else ("train", "val")
    seen = {r.clip_key: name for name in roles for r in own_splits.get(name, [])}
    leaked = sorted({(r.clip_key, seen[r.clip_key]) for r in records if r.clip_key in seen})
    if leaked:
        examples = leaked_examples([f"{key} ({name})" for key, name in leaked])
        raise EvaluationError(
            f"{data_dir}: {len(leaked)} recording(s) to evaluate were in the {'/'.join(roles)} split of "
            f"{run_dir} (compared by clip key, at any SNR): {examples}. Scores on them say nothing "
            "about new recordings; use --split test to score only the run's test recordings of that folder.")


def evaluate_run(run_dir: str, data_dir: Optional[str] = None, split: str = "test",
                 config: Optional[EvalConfig] = None, plots: bool = True,
                 baselines: bool = True, log: Callable[[str], None] = print,
                 snr_db: Optional[Sequence[float]] = None, folder_snr_db: Optional[float] = None) -> dict:
    """Evaluates the run in `run_dir`; writes `run_dir/report/` and `run_dir/threshold.json`; returns the results.

    The report folder also gets the DCASE-format result files of the scored
    clips (`report/dcase/`, see `pump_keras.evaluation.dcase_results`). A
    normal-only run gets its per-machine report instead
    (`pump_keras.evaluation.normal_only_report`).

    `data_dir`, `split`, `snr_db` and `folder_snr_db` choose the clips (see `eval_records`).
    """
    run_config = load_run_config(run_dir)
    eval_config = config or run_config.evaluation
    if run_config.data.protocol == "normal_only" or model_inputs(run_config.model.name) == "frames":
        if data_dir is not None or split != "test" or snr_db is not None:
            raise EvaluationError(f"{run_dir} is a normal-only run: its report covers the test split it scored "
                                  "as it trained (no --data-dir, --split or --snr-db).")
        return evaluate_normal_only_run(run_dir, eval_config, plots_wanted=plots, log=log)
    best = os.path.join(run_dir, RunDirectory.BEST)
    if not os.path.exists(best):
        raise EvaluationError(f"{run_dir} holds no best.keras: train it first (python -m pump_keras.train).")
    records = eval_records(run_config, run_dir, data_dir, split, snr_db, folder_snr_db)
    started = time.perf_counter()

    def progress(step: str) -> None:
        log(f"{step} ({time.perf_counter() - started:.0f} s so far)")

    model = load_model(best)
    cache_dir = os.path.join(run_dir, RunDirectory.CACHE)
    progress(f"Scoring {len(records['val'])} validation clips with {best}...")
    val_scores = score_records(model, records["val"], run_config, cache_dir, "val")
    eval_name = split if data_dir is None else f"external-{split}"  # cache files are keyed by the clips too
    progress(f"Scoring {len(records['eval'])} {split} clips...")
    scores = score_records(model, records["eval"], run_config, cache_dir, eval_name)
    progress(f"Metrics with {eval_config.bootstrap} bootstrap resamples...")
    val_labels = np.array([r.label for r in records["val"]])
    labels = np.array([r.label for r in records["eval"]])
    threshold = choose_threshold(val_labels, val_scores, eval_config)
    threshold_info = threshold_record(threshold, eval_config)
    RunDirectory(run_dir).write_json(RunDirectory.THRESHOLD, threshold_info)

    machines = [machine_group(r) for r in records["eval"]]
    snrs = [snr_name(r.snr_db) for r in records["eval"]]
    result = {
        "run_dir": os.path.abspath(run_dir),
        "data_dir": os.path.abspath(data_dir or run_config.data.data_dir
                                    or os.path.join(run_dir, RunDirectory.SYNTHETIC)),
        "synthetic": data_dir is None and run_config.data.data_dir is None,
        "split": split,
        "n_clips": int(labels.size),
        "abnormal_share": float(labels.mean()),
        "threshold": threshold_info,
        "evaluation": json.loads(json.dumps(eval_config.__dict__)),
        "model": metrics_with_intervals(labels, scores, threshold, eval_config),
        "per_machine_id": metrics.grouped_metrics(labels, scores, machines, threshold, max_fpr=eval_config.max_fpr),
        "per_snr": metrics.grouped_metrics(labels, scores, snrs, threshold, max_fpr=eval_config.max_fpr),
    }
    if baselines:
        progress("Baselines on the same clips...")
        result["baselines"], baseline_scores = baseline_results(
            records, run_config, eval_config, labels, val_labels, run_dir, log)
        result["verdict"] = compare_with_baseline(labels, scores, baseline_scores, eval_config)
    report_dir = os.path.join(run_dir, RunDirectory.REPORT)
    os.makedirs(report_dir, exist_ok=True)
    dcase_dir = os.path.join(run_dir, RunDirectory.DCASE_RESULTS)
    result["dcase"] = {"dir": dcase_dir, "results": write_dcase_results(
        dcase_dir, records["eval"], scores, threshold, max_fpr=eval_config.max_fpr)}
    figures = {}
    if plots:
        progress("Figures...")
        figures = draw_figures(model, run_dir, report_dir, run_config, records["eval"], labels, scores, threshold)
    result["figures"] = figures
    atomic_write_bytes(os.path.join(report_dir, "evaluation.json"),
                       (json.dumps(result, indent=2, default=float) + "\n").encode())
    write_report(result, os.path.join(report_dir, "report.md"))
    log(f"Report: {os.path.join(report_dir, 'report.md')}")
    return result


def baseline_results(records: dict, run_config: RunConfig, eval_config: EvalConfig,
                     labels: np.ndarray, val_labels: np.ndarray, run_dir: str,
                     log: Optional[Callable[[str], None]] = None):
    """The majority class and the log-mel logistic regression, thresholds chosen on val like the model's.

    Returns their metrics and the logistic regression's scores of the evaluated clips.
    `log` receives the progress of the features not yet cached.
    """
    splits = read_manifest(os.path.join(run_dir, RunDirectory.MANIFEST))
    splits = {**splits, "eval": records["eval"]}
    scores = baselines.run_baselines(splits, run_config.features, eval_split="eval",
                                     cache_dir=os.path.join(run_dir, RunDirectory.CACHE), log=log)
    train_labels = np.array([r.label for r in splits["train"]])
    predicts_abnormal = train_labels.mean() > 0.5
    constant = float(scores["majority"][0])
    results = {
        "majority": metrics_with_intervals(labels, scores["majority"],
                                           constant if predicts_abnormal else constant + 1.0,
                                           replace(eval_config, bootstrap=0)),
    }
    threshold = choose_threshold(val_labels, scores["logistic_regression_val"], eval_config)
    results["logistic_regression"] = metrics_with_intervals(labels, scores["logistic_regression"], threshold, eval_config)
    return results, scores["logistic_regression"]


def draw_figures(model, run_dir: str, report_dir: str, run_config: RunConfig, records: Sequence,
                 labels: np.ndarray, scores: np.ndarray, threshold: float) -> Dict[str, str]:
    """Writes the report's PNGs; returns {figure: file name}."""
    figures = {}

    def path(name):
        figures[name] = f"{name}.png"
        return os.path.join(report_dir, figures[name])

    plots.plot_roc(labels, scores, threshold, path("roc"), max_fpr=run_config.evaluation.max_fpr)
    plots.plot_confusion(labels, scores, threshold, path("confusion"))
    plots.plot_score_histograms(labels, scores, threshold, path("scores"))
    history = os.path.join(run_dir, RunDirectory.HISTORY)
    if os.path.exists(history):
        plots.plot_training_curves(history, path("training_curves"))

    def image_of(record):
        return wav_bytes_to_image(tf.io.read_file(record.path), run_config.features).numpy()[..., 0]

    examples, chosen = [], set()
    for record in records:
        key = (machine_group(record), record.label)
        if key not in chosen:
            chosen.add(key)
            examples.append({"title": f"{key[0]} {'abnormal' if record.label else 'normal'}",
                             "image": image_of(record), "machine_id": key[0], "label": record.label})
    plots.plot_spectrogram_examples(sorted(examples, key=lambda e: (e["machine_id"], e["label"])),
                                    path("spectrograms"))
    abnormal = [i for i, label in enumerate(labels) if label == 1]
    if abnormal:
        top = max(abnormal, key=lambda i: scores[i])
        image = image_of(records[top])
        model_input = to_backbone_channels(tf.constant(image[..., None]), run_config.features).numpy()
        heatmap = plots.grad_cam(model, model_input)
        plots.plot_explanation(image, heatmap, path("explanation"),
                               title=f"{os.path.basename(records[top].path)} ({machine_group(records[top])}), "
                                     f"score {sigmoid(scores[top]):.2f}: Grad-CAM")
    return figures


def _format(entry: dict, name: str) -> str:
    value = entry.get(name, float("nan"))
    text = "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"
    interval = entry.get(f"{name}_ci")
    if interval and not any(v is None or math.isnan(v) for v in interval):
        text += f" [{interval[0]:.3f}, {interval[1]:.3f}]"
    return text


def _table(rows: Dict[str, dict], columns: Sequence[str], first: str) -> List[str]:
    lines = [f"| {first} | " + " | ".join(columns) + " |", "|" + " --- |" * (len(columns) + 1)]
    for name, entry in rows.items():
        lines.append(f"| {name} | " + " | ".join(_format(entry, c) for c in columns) + " |")
    return lines


def write_report(result: dict, path: str) -> None:
    """The one-page Markdown report of an evaluation, next to its PNGs."""
    threshold = result["threshold"]
    columns = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "auc", "pauc")
    model = result["model"]
    lines = [f"# Evaluation of {os.path.basename(result['run_dir'])}", ""]
    if result.get("verdict"):
        lines += [f"**Verdict: {result['verdict']['text']}**", ""]
    lines += [
        f"Data: `{result['data_dir']}`, split `{result['split']}`: {result['n_clips']} clips, "
        f"{100 * result['abnormal_share']:.1f} % abnormal. Threshold: logit {threshold['threshold_logit']:.3f} "
        f"(probability {threshold['threshold_probability']:.3f}), chosen on the validation split by "
        f"{threshold['criterion']}" + (f" (target FPR {threshold['target_fpr']})" if threshold['target_fpr'] is not None else "")
        + f". pAUC: FPR <= {result['evaluation']['max_fpr']} (DCASE). "
        + (f"Brackets: {100 * result['evaluation']['confidence']:.0f} % bootstrap intervals over clips "
           f"({result['evaluation']['bootstrap']} resamples)." if result['evaluation']['bootstrap'] else
           "No confidence intervals (bootstrap 0)."),
        "",
    ]
    if result.get("synthetic"):
        lines += ["**Synthetic recordings**: these figures show that the machinery works; they say nothing "
                  "about real pumps.", ""]
    lines += [
        "## Model and baselines (same split)",
        "",
    ]
    rows = {"model": model}
    for name, entry in result.get("baselines", {}).items():
        rows[name.replace("_", " ")] = entry
    lines += _table(rows, columns, "")
    lines += ["", "A majority-class predictor scores the share of normal clips as accuracy; a model is only "
              "worth deploying where it beats the log-mel logistic regression.", ""]
    lines += ["## Confusion matrix", "", "| | predicted normal | predicted abnormal |", "| --- | --- | --- |",
              f"| normal | {model['tn']} | {model['fp']} |", f"| abnormal | {model['fn']} | {model['tp']} |", ""]
    lines += ["## Per machine", ""] + _table(result["per_machine_id"], columns, "machine") + [""]
    lines += ["## Per SNR", ""] + _table(result["per_snr"], columns, "SNR") + [""]
    if result.get("dcase"):
        lines += [f"DCASE-format scores, decisions and `result.csv` (per-id AUC and pAUC, arithmetic and harmonic "
                  f"means): `{os.path.relpath(result['dcase']['dir'], os.path.dirname(path))}/`.", ""]
    if result.get("figures"):
        lines += ["## Figures", ""]
        for name, file in result["figures"].items():
            lines += [f"![{name.replace('_', ' ')}]({file})", ""]
    atomic_write_bytes(path, "\n".join(lines).encode())
