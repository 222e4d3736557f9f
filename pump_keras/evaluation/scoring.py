"""Scores and the decision threshold: the one path from a model and clips to logits, probabilities and a verdict.

The training loop's end-of-run metrics (`evaluate_model`) and the
evaluation report (`pump_keras.evaluation.report`) both score clips with
`predict_scores` and choose the threshold with `choose_threshold`.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from pump_keras.config import EvalConfig, RunConfig
from pump_keras.data.index import machine_group
from pump_keras.data.pipeline import make_dataset
from pump_keras.evaluation import metrics
from pump_keras.evaluation.verdict import compare_with_baseline


def sigmoid(logit: float) -> float:
    """The probability of a logit, without overflow."""
    return 0.5 * (1.0 + math.tanh(0.5 * logit))


def choose_threshold(labels, scores, config: EvalConfig) -> float:
    """The decision threshold on validation scores, by `config.threshold_criterion`."""
    return metrics.best_threshold(labels, scores, criterion=config.threshold_criterion,
                                  target_fpr=config.target_fpr)


def threshold_record(threshold: float, config: EvalConfig) -> dict:
    """What a run's `threshold.json` holds: the threshold as logit and probability, and how it was chosen."""
    return {"threshold_logit": float(threshold), "threshold_probability": sigmoid(threshold),
            "criterion": config.threshold_criterion, "target_fpr": config.target_fpr, "chosen_on": "val"}


def describe_criterion(config: EvalConfig) -> str:
    """The threshold criterion in words, e.g. `"best balanced accuracy on val"`."""
    if config.threshold_criterion == "balanced_accuracy":
        return "best balanced accuracy on val"
    return f"false-positive rate <= {config.target_fpr} on val"


def predict_scores(model: keras.Model, dataset: tf.data.Dataset) -> np.ndarray:
    """Logits of every clip of an unshuffled dataset, in record order."""
    logits = model.predict(dataset.map(lambda images, labels: images), verbose=0)
    return np.asarray(logits, dtype=np.float64).reshape(-1)


def score_records(model, records: Sequence, config: RunConfig, cache_dir: Optional[str], name: str) -> np.ndarray:
    """Logits of `records` (unshuffled tf.data pipeline, cached under `cache_dir`)."""
    return predict_scores(model, make_dataset(records, config.features, config.data, training=False,
                                              cache_dir=cache_dir, name=name))


def evaluate_model(model: keras.Model, datasets: dict, splits: dict, predict=predict_scores,
                   baseline_test_scores=None, eval_config=None) -> dict:
    """Test metrics at the threshold chosen on validation by `eval_config` (default: best balanced accuracy).

    With `baseline_test_scores` (the log-mel logistic regression's, same
    test clips), `baseline` holds its test metrics and `verdict` the paired
    comparison of the two AUCs (`pump_keras.evaluation.verdict`).
    """
    scores = {name: predict(model, datasets[name]) for name in ("val", "test") if name in datasets}
    labels = {name: np.array([r.label for r in splits[name]]) for name in scores}
    eval_config = eval_config or EvalConfig()
    threshold = choose_threshold(labels["val"], scores["val"], eval_config)
    result = {"threshold_logit": float(threshold), "threshold_criterion": describe_criterion(eval_config),
              "threshold_probability": sigmoid(threshold)}
    for name in scores:
        groups = [machine_group(r) for r in splits[name]]
        result[name] = metrics.binary_metrics(labels[name], scores[name], threshold)
        result[f"{name}_per_machine_id"] = metrics.grouped_metrics(labels[name], scores[name], groups, threshold)
    if baseline_test_scores is not None and "test" in scores:
        result["baseline"] = {"name": "logistic_regression", "test": {
            "auc": metrics.roc_auc(labels["test"], baseline_test_scores),
            "pauc": metrics.partial_auc(labels["test"], baseline_test_scores)}}
        result["verdict"] = compare_with_baseline(labels["test"], scores["test"], baseline_test_scores, eval_config)
    return result
