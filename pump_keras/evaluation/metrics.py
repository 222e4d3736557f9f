"""Binary anomaly-detection metrics: label 1 = abnormal, higher score = more abnormal.

Scores may be probabilities or logits; only their order matters to AUC and
pAUC, and a clip is predicted abnormal when `score >= threshold`. Everything
here is NumPy and scikit-learn, so reports can be scored without TensorFlow.

Undefined values follow two rules:
- precision, recall and F1 of the abnormal class define 0/0 as 0.0;
- AUC, pAUC and balanced accuracy need both classes and are NaN without one.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Tuple

import numpy as np
from sklearn import metrics as sk_metrics

from pump_keras.config.schema import DEFAULT_MAX_FPR, THRESHOLD_CRITERIA

ALL_GROUPS = "all"
# The metrics every summary shows, in this order (the report, the commands, the ablation tables).
HEADLINE_METRICS = ("accuracy", "balanced_accuracy", "f1", "auc", "pauc")
METRIC_TITLES = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "f1": "F1", "auc": "AUC",
                 "pauc": "pAUC"}


def _check_binary(values, name: str) -> np.ndarray:
    """`values` as a 1-D int array of 0/1, or a ValueError naming `name`."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {array.shape}.")
    if array.size == 0:
        raise ValueError(f"{name} is empty; need at least one clip.")
    bad = ~np.isin(array, (0, 1))
    if bad.any():
        found = sorted({str(v) for v in array[bad][:5]})
        raise ValueError(f"{name} must hold only 0 (normal) and 1 (abnormal); found {found}.")
    return array.astype(np.int64)


def _check_inputs(labels, scores) -> Tuple[np.ndarray, np.ndarray]:
    """Validated (labels, scores): 1-D, equal lengths, labels 0/1, finite scores."""
    labels = _check_binary(labels, "labels")
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"scores must be 1-D; got shape {scores.shape}.")
    if scores.shape != labels.shape:
        raise ValueError(
            f"labels and scores must have equal lengths; got {labels.size} and {scores.size}."
        )
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite; found NaN or infinity.")
    return labels, scores


def _both_classes(labels: np.ndarray) -> bool:
    return 0 < labels.sum() < labels.size


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, with 0/0 defined as 0.0."""
    return float(numerator) / denominator if denominator else 0.0


def confusion(labels, predictions) -> Dict[str, int]:
    """Confusion counts {tn, fp, fn, tp} of 0/1 predictions against 0/1 labels."""
    labels = _check_binary(labels, "labels")
    predictions = _check_binary(predictions, "predictions")
    if predictions.shape != labels.shape:
        raise ValueError(
            f"labels and predictions must have equal lengths; "
            f"got {labels.size} and {predictions.size}."
        )
    return {
        "tn": int(np.sum((labels == 0) & (predictions == 0))),
        "fp": int(np.sum((labels == 0) & (predictions == 1))),
        "fn": int(np.sum((labels == 1) & (predictions == 0))),
        "tp": int(np.sum((labels == 1) & (predictions == 1))),
    }


def roc_auc(labels, scores) -> float:
    """ROC AUC (sklearn's roc_auc_score); NaN when either class is absent."""
    labels, scores = _check_inputs(labels, scores)
    if not _both_classes(labels):
        return math.nan
    return float(sk_metrics.roc_auc_score(labels, scores))


def _check_max_fpr(max_fpr: float) -> float:
    if not 0.0 < max_fpr <= 1.0:
        raise ValueError(f"max_fpr must be in (0, 1]; got {max_fpr!r}.")
    return float(max_fpr)


def partial_auc(labels, scores, max_fpr: float = DEFAULT_MAX_FPR) -> float:
    """pAUC as defined for DCASE 2020 Task 2: ROC area over FPR in [0, max_fpr] / max_fpr.

    A perfect detector scores 1.0 and a random one max_fpr / 2. The ROC curve
    comes from sklearn's roc_curve; its TPR at max_fpr is interpolated
    linearly. NaN when either class is absent.

    Not the same number as scikit-learn's `roc_auc_score(max_fpr=p)`, which
    returns the McClish-standardised value 0.5 * (1 + (A - p^2/2) / (p - p^2/2)),
    A being the unnormalised partial area (= partial_auc * p); the DCASE
    baseline scripts reported that value. `mcclish_standardized` converts.
    """
    labels, scores = _check_inputs(labels, scores)
    max_fpr = _check_max_fpr(max_fpr)
    if not _both_classes(labels):
        return math.nan
    fpr, tpr, _ = sk_metrics.roc_curve(labels, scores)
    stop = int(np.searchsorted(fpr, max_fpr, side="right"))
    tpr_at_max = np.interp(max_fpr, fpr[stop - 1 : stop + 1], tpr[stop - 1 : stop + 1])
    fpr = np.append(fpr[:stop], max_fpr)
    tpr = np.append(tpr[:stop], tpr_at_max)
    return float(np.trapezoid(tpr, fpr) / max_fpr)


def mcclish_standardized(pauc: float, max_fpr: float) -> float:
    """Our `partial_auc` value converted to sklearn's `roc_auc_score(max_fpr=...)` scale."""
    max_fpr = _check_max_fpr(max_fpr)
    area = pauc * max_fpr
    min_area = 0.5 * max_fpr**2
    return 0.5 * (1.0 + (area - min_area) / (max_fpr - min_area))


def binary_metrics(labels, scores, threshold: float, max_fpr: float = DEFAULT_MAX_FPR) -> dict:
    """Threshold and ranking metrics of one set of clips, as a flat dict.

    Predictions are `scores >= threshold`. Precision, recall and F1 are of
    the abnormal class with 0/0 defined as 0.0; balanced accuracy (mean of
    TPR and TNR), AUC and pAUC are NaN when either class is absent.
    """
    labels, scores = _check_inputs(labels, scores)
    counts = confusion(labels, (scores >= threshold).astype(np.int64))
    tn, fp, fn, tp = counts["tn"], counts["fp"], counts["fn"], counts["tp"]
    both = _both_classes(labels)
    tpr, tnr = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    return {
        "n": int(labels.size),
        "n_abnormal": int(labels.sum()),
        "threshold": float(threshold),
        "accuracy": (tp + tn) / labels.size,
        "balanced_accuracy": (tpr + tnr) / 2 if both else math.nan,
        "precision": _ratio(tp, tp + fp),
        "recall": tpr,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "auc": roc_auc(labels, scores),
        "pauc": partial_auc(labels, scores, max_fpr),
        **counts,
    }


def best_threshold(
    labels,
    scores,
    criterion: str = "balanced_accuracy",
    target_fpr: Optional[float] = None,
) -> float:
    """The decision threshold chosen on a validation split (predictions: score >= threshold).

    "balanced_accuracy": the unique score maximising balanced accuracy, the
    smallest on ties; needs both classes. "fpr": the smallest unique score
    whose false-positive rate is <= target_fpr; when none qualifies (e.g. a
    normal clip holds the top score and target_fpr is 0) the next float
    above the top score, which flags nothing. "gamma": the `1 - target_fpr`
    quantile of a gamma distribution fitted to the normal clips' scores (the
    DCASE 2021 baseline's rule, there fitted on training scores at 0.9);
    abnormal clips are not used.
    """
    if criterion not in THRESHOLD_CRITERIA:
        raise ValueError(f"criterion must be one of {THRESHOLD_CRITERIA}; got {criterion!r}.")
    labels, scores = _check_inputs(labels, scores)
    candidates = np.unique(scores)
    normal_scores = np.sort(scores[labels == 0])
    abnormal_scores = np.sort(scores[labels == 1])
    # Clips of each class scoring >= each candidate.
    fp = normal_scores.size - np.searchsorted(normal_scores, candidates, side="left")
    tp = abnormal_scores.size - np.searchsorted(abnormal_scores, candidates, side="left")

    if criterion == "balanced_accuracy":
        if not _both_classes(labels):
            raise ValueError("balanced_accuracy needs both normal and abnormal clips.")
        # Balanced accuracy times 2 * n_abnormal * n_normal: integers, so ties are exact.
        balanced = tp * normal_scores.size + (normal_scores.size - fp) * abnormal_scores.size
        return float(candidates[np.argmax(balanced)])  # argmax: first = smallest

    if target_fpr is None:
        raise ValueError(f'criterion "{criterion}" needs target_fpr.')
    if not 0.0 <= target_fpr <= 1.0:
        raise ValueError(f"target_fpr must be in [0, 1]; got {target_fpr!r}.")
    if normal_scores.size < (3 if criterion == "gamma" else 1):
        raise ValueError(f'criterion "{criterion}" needs at least '
                         f'{"three normal clips" if criterion == "gamma" else "one normal clip"}.')
    if criterion == "gamma":
        return gamma_threshold(normal_scores, 1.0 - target_fpr)
    meets = fp / normal_scores.size <= target_fpr
    if not meets.any():
        return float(np.nextafter(candidates[-1], np.inf))
    return float(candidates[np.argmax(meets)])  # FPR falls with the threshold


def gamma_threshold(normal_scores, quantile: float) -> float:
    """The `quantile` of a gamma distribution fitted (maximum likelihood, with location) to `normal_scores`.

    Constant scores (no spread to fit) give the next float above them.
    """
    from scipy import stats  # scikit-learn's dependency; imported here to keep `metrics` light

    values = np.asarray(normal_scores, dtype=np.float64)
    if np.ptp(values) == 0.0:
        return float(np.nextafter(values[0], np.inf))
    shape, loc, scale = stats.gamma.fit(values)
    return float(stats.gamma.ppf(quantile, shape, loc=loc, scale=scale))


def grouped_metrics(
    labels, scores, groups, threshold: float, max_fpr: float = DEFAULT_MAX_FPR
) -> Dict[str, dict]:
    """`binary_metrics` per group value (e.g. machine id), keys sorted, then "all"."""
    labels, scores = _check_inputs(labels, scores)
    groups = np.asarray(groups)
    if groups.shape != labels.shape:
        raise ValueError(
            f"groups must be 1-D and as long as labels ({labels.size}); got shape {groups.shape}."
        )
    result = {}
    for value in np.unique(groups):
        key = str(value)
        if key == ALL_GROUPS:
            raise ValueError(f"group value {ALL_GROUPS!r} is reserved for the overall entry.")
        members = groups == value
        result[key] = binary_metrics(labels[members], scores[members], threshold, max_fpr)
    result[ALL_GROUPS] = binary_metrics(labels, scores, threshold, max_fpr)
    return result


def bootstrap_ci(
    labels,
    scores,
    metric_fn: Callable[[np.ndarray, np.ndarray], float],
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Tuple[float, float]:
    """Percentile bootstrap interval (low, high) of `metric_fn(labels, scores)` over clips.

    Each resample draws clip indices with replacement from
    `np.random.default_rng(seed)`, so a seed gives the same interval.
    Resamples where the metric is NaN (one class only) are skipped; if all
    are, the interval is (NaN, NaN).
    """
    labels, scores = _check_inputs(labels, scores)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1; got {n_boot!r}.")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1); got {confidence!r}.")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        index = rng.integers(0, labels.size, size=labels.size)
        value = float(metric_fn(labels[index], scores[index]))
        if not math.isnan(value):
            values.append(value)
    if not values:
        return math.nan, math.nan
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(low), float(high)


def _at_threshold(name: str, threshold: float) -> Callable:
    def metric(labels, scores):
        return binary_metrics(labels, scores, threshold)[name]
    return metric


def metrics_with_intervals(labels, scores, threshold: float, config) -> dict:
    """`binary_metrics` plus `{name}_ci: [low, high]` bootstrap intervals for the headline metrics.

    `config` is an `EvalConfig` (its `max_fpr`, `bootstrap`, `confidence`, `seed`).
    """
    result = binary_metrics(labels, scores, threshold, max_fpr=config.max_fpr)
    if config.bootstrap <= 0:
        return result
    functions = {
        "accuracy": _at_threshold("accuracy", threshold),
        "balanced_accuracy": _at_threshold("balanced_accuracy", threshold),
        "f1": _at_threshold("f1", threshold),
        "auc": roc_auc,
        "pauc": lambda y, s: partial_auc(y, s, config.max_fpr),
    }
    for name, function in functions.items():
        low, high = bootstrap_ci(labels, scores, function, n_boot=config.bootstrap,
                                         confidence=config.confidence, seed=config.seed)
        result[f"{name}_ci"] = [low, high]
    return result
