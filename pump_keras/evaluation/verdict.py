"""Does the network beat the simple baseline on this split? A judgement in plain words.

The network and the log-mel logistic regression (`pump_keras.evaluation.baselines`) are
scored on the same test clips. Their AUCs are compared by a paired bootstrap
over clips: each resample draws the same clips for both, so the interval of
the *difference* is much narrower than the two AUC intervals side by side.
The network wins when that interval lies above zero, loses when it lies
below, and otherwise the split cannot tell them apart.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from pump_keras.config import EvalConfig
from pump_keras.evaluation import metrics

BASELINE_DESCRIPTION = "a logistic regression on log-mel band statistics"
OUTCOMES = ("better", "worse", "unclear")


def compare_with_baseline(labels, model_scores, baseline_scores, config: Optional[EvalConfig] = None) -> dict:
    """AUCs of the network and the baseline with intervals, their paired difference, and the outcome.

    Returns a dict: `model_auc`, `model_auc_ci`, `baseline_auc`,
    `baseline_auc_ci`, `difference`, `difference_ci`, `outcome` (one of
    `OUTCOMES`) and `text` (`verdict_text`).
    """
    config = config or EvalConfig()
    labels = np.asarray(labels)
    model_scores = np.asarray(model_scores, dtype=np.float64)
    baseline_scores = np.asarray(baseline_scores, dtype=np.float64)
    if not (labels.shape == model_scores.shape == baseline_scores.shape):
        raise ValueError(f"labels {labels.shape}, model scores {model_scores.shape} and baseline scores "
                         f"{baseline_scores.shape} must be the same clips.")
    result = {
        "baseline": BASELINE_DESCRIPTION,
        "n_clips": int(labels.size),
        "model_auc": metrics.roc_auc(labels, model_scores),
        "baseline_auc": metrics.roc_auc(labels, baseline_scores),
    }
    result["difference"] = result["model_auc"] - result["baseline_auc"]
    clips = np.arange(labels.size, dtype=np.float64)

    def interval(function):
        if config.bootstrap <= 0:
            return [math.nan, math.nan]
        return list(metrics.bootstrap_ci(labels, clips, function, n_boot=config.bootstrap,
                                         confidence=config.confidence, seed=config.seed))

    def auc_of(scores):
        return lambda y, index: metrics.roc_auc(y, scores[index.astype(int)])

    result["model_auc_ci"] = interval(auc_of(model_scores))
    result["baseline_auc_ci"] = interval(auc_of(baseline_scores))
    result["difference_ci"] = interval(
        lambda y, index: auc_of(model_scores)(y, index) - auc_of(baseline_scores)(y, index))
    low, high = result["difference_ci"]
    if math.isnan(low):  # no interval (bootstrap off): the point difference decides
        outcome = "better" if result["difference"] > 0 else "worse" if result["difference"] < 0 else "unclear"
    else:
        outcome = "better" if low > 0 else "worse" if high < 0 else "unclear"
    result["outcome"] = outcome
    result["text"] = verdict_text(result, config.confidence)
    return result


def _auc(value: float, interval) -> str:
    if interval is None or any(math.isnan(v) for v in interval):
        return f"{value:.3f}"
    return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def verdict_text(result: dict, confidence: float = 0.95) -> str:
    """One paragraph a plant engineer can act on."""
    figures = (f"AUC {_auc(result['model_auc'], result.get('model_auc_ci'))} for the network against "
               f"{_auc(result['baseline_auc'], result.get('baseline_auc_ci'))} for {result['baseline']}")
    low, high = result.get("difference_ci") or (math.nan, math.nan)
    difference = f"difference {result['difference']:+.3f}"
    if not math.isnan(low):
        difference += f", {100 * confidence:.0f} % interval [{low:+.3f}, {high:+.3f}]"
    clips = f"{result['n_clips']} test clips"
    if result["outcome"] == "better":
        return (f"The network beats the simple baseline on this data: it ranks faulty recordings above "
                f"normal ones more reliably ({figures}; {difference}, {clips}).")
    if result["outcome"] == "worse":
        return (f"The network does NOT beat the simple baseline on this data ({figures}; {difference}, "
                f"{clips}). Here the simple baseline would serve better: do not deploy the network as it is.")
    return (f"The network and the simple baseline cannot be told apart on this data ({figures}; "
            f"{difference}, {clips}): the test split is too small to show a difference, or there is none.")


__all__ = ["BASELINE_DESCRIPTION", "OUTCOMES", "compare_with_baseline", "verdict_text"]
