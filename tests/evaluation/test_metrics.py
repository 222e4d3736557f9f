"""Tests of `pump_keras.evaluation.metrics` against hand-worked examples and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pump_keras.evaluation.metrics import (
    best_threshold, binary_metrics, bootstrap_ci, confusion, grouped_metrics, mcclish_standardized, partial_auc,
    roc_auc)

# Ten clips: six normal, four abnormal. Sorted by score, highest first:
#   0.9 A, 0.8 A, 0.7 N, 0.6 A, 0.5 N, 0.4 N, 0.35 A, 0.3 N, 0.2 N, 0.1 N
LABELS = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
SCORES = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.35, 0.6, 0.8, 0.9])
# ROC (FPR in sixths, TPR in quarters) walking down those scores:
#   (0,0) (0,1/4) (0,2/4) (1/6,2/4) (1/6,3/4) (2/6,3/4) (3/6,3/4) (3/6,1) ... (1,1)


def test_confusion_counts_by_hand():
    # labels      0 0 1 1 1 0
    # predictions 0 1 1 0 1 0  ->  tn 2 (clips 0, 5), fp 1 (1), fn 1 (3), tp 2 (2, 4)
    counts = confusion([0, 0, 1, 1, 1, 0], [0, 1, 1, 0, 1, 0])
    assert counts == {"tn": 2, "fp": 1, "fn": 1, "tp": 2}
    assert all(type(v) is int for v in counts.values())


def test_binary_metrics_ten_clips_by_hand():
    # threshold 0.5 (>=): normals 0.5, 0.7 flagged -> fp 2, tn 4;
    # abnormals 0.6, 0.8, 0.9 flagged -> tp 3; 0.35 missed -> fn 1.
    result = binary_metrics(LABELS, SCORES, threshold=0.5)
    assert {k: result[k] for k in ("tn", "fp", "fn", "tp")} == {"tn": 4, "fp": 2, "fn": 1, "tp": 3}
    assert result["n"] == 10 and result["n_abnormal"] == 4 and result["threshold"] == 0.5
    assert result["accuracy"] == pytest.approx(7 / 10)
    # TPR 3/4, TNR 4/6 -> (3/4 + 2/3) / 2 = 17/24
    assert result["balanced_accuracy"] == pytest.approx(17 / 24)
    assert result["precision"] == pytest.approx(3 / 5)
    assert result["recall"] == pytest.approx(3 / 4)
    # 2 tp / (2 tp + fp + fn) = 6 / 9
    assert result["f1"] == pytest.approx(2 / 3)
    # Pairs won by the abnormal clip, of 4 * 6: 0.35 -> 3, 0.6 -> 5, 0.8 -> 6, 0.9 -> 6 = 20
    assert result["auc"] == pytest.approx(20 / 24)
    # FPR in [0, 0.1] lies inside the first horizontal run, at TPR 1/2.
    assert result["pauc"] == pytest.approx(0.5)


def test_binary_metrics_zero_over_zero_is_zero():
    # Nothing flagged and nothing abnormal: precision, recall and F1 are all 0/0.
    result = binary_metrics([0, 0, 0], [0.1, 0.2, 0.3], threshold=0.9)
    assert (result["precision"], result["recall"], result["f1"]) == (0.0, 0.0, 0.0)
    assert result["accuracy"] == 1.0
    assert math.isnan(result["balanced_accuracy"])
    assert math.isnan(result["auc"]) and math.isnan(result["pauc"])


def test_binary_metrics_accepts_logits():
    # Only the order of scores matters to AUC; the threshold is on the same scale.
    logits = np.log(SCORES / (1 - SCORES))
    result = binary_metrics(LABELS, logits, threshold=0.0)  # logit 0 = probability 0.5
    assert (result["tp"], result["fp"]) == (3, 2)
    assert result["auc"] == pytest.approx(20 / 24)


def test_roc_auc_nan_for_one_class():
    assert math.isnan(roc_auc([0, 0, 0], [0.1, 0.5, 0.9]))
    assert math.isnan(roc_auc([1, 1], [0.1, 0.5]))
    assert roc_auc([0, 1], [0.1, 0.5]) == 1.0


@pytest.mark.parametrize(
    "max_fpr, expected",
    [
        (0.1, 0.5),  # area 0.1 * 1/2 = 0.05 -> 0.05 / 0.1
        (1 / 6, 0.5),  # up to the first normal clip exactly: (1/6 * 1/2) / (1/6)
        # 1/6 * 1/2 + (1/4 - 1/6) * 3/4 = 1/12 + 1/16 = 7/48 -> / 0.25
        (0.25, 7 / 12),
        # 1/6 * 1/2 + (1/2 - 1/6) * 3/4 = 1/12 + 1/4 = 1/3 -> / 0.5
        (0.5, 2 / 3),
        (1.0, 20 / 24),  # the whole curve is the AUC
    ],
)
def test_partial_auc_hand_worked_roc(max_fpr, expected):
    assert partial_auc(LABELS, SCORES, max_fpr) == pytest.approx(expected)


def test_partial_auc_perfect_and_random_detectors():
    labels = np.array([0, 0, 0, 1, 1])
    assert partial_auc(labels, [0.1, 0.2, 0.3, 0.8, 0.9]) == pytest.approx(1.0)
    # Reversed scores: the curve stays at TPR 0 until FPR 1.
    assert partial_auc(labels, [0.9, 0.8, 0.7, 0.2, 0.1]) == pytest.approx(0.0)
    # All scores tied: the ROC is the diagonal, area p^2 / 2, so pAUC is p / 2.
    for p in (0.1, 0.3):
        assert partial_auc(labels, np.zeros(5), p) == pytest.approx(p / 2)


def test_partial_auc_nan_for_one_class_and_bad_max_fpr():
    assert math.isnan(partial_auc([1, 1, 1], [0.1, 0.2, 0.3]))
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="max_fpr"):
            partial_auc(LABELS, SCORES, bad)


@pytest.mark.parametrize("max_fpr", [0.01, 0.05, 0.1, 0.25, 0.5, 1.0])
@pytest.mark.parametrize("tied", [False, True])
def test_mcclish_matches_sklearn(max_fpr, tied):
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, size=300)
    scores = labels * 0.8 + rng.normal(size=300)
    if tied:
        scores = np.round(scores, 1)  # many ties: vertical and diagonal ROC steps
    ours = mcclish_standardized(partial_auc(labels, scores, max_fpr), max_fpr)
    assert ours == pytest.approx(roc_auc_score(labels, scores, max_fpr=max_fpr), abs=1e-12)
    # And the two scales really differ below max_fpr 1 (0.5 ... 1 against 0 ... 1).
    if max_fpr < 1.0:
        assert partial_auc(labels, scores, max_fpr) != pytest.approx(ours, abs=1e-3)


def test_mcclish_hand_value():
    # max_fpr 1/4, pAUC 7/12 -> A = 7/48; (A - 1/32) / (1/4 - 1/32) = (11/96) / (21/96)
    # -> 0.5 * (1 + 11/21) = 16/21
    assert mcclish_standardized(7 / 12, 0.25) == pytest.approx(16 / 21)
    assert mcclish_standardized(1.0, 0.1) == pytest.approx(1.0)
    assert mcclish_standardized(0.05, 0.1) == pytest.approx(0.5)  # random -> 0.5


def test_best_threshold_balanced_accuracy_by_hand():
    # threshold: TP/4, FP/6 -> balanced accuracy
    #   0.1: 4, 6 -> 12/24   0.35: 4, 3 -> 18/24   0.6: 3, 1 -> 19/24 (best)
    #   0.5: 3, 2 -> 17/24   0.7:  2, 1 -> 16/24   0.8: 2, 0 -> 18/24
    assert best_threshold(LABELS, SCORES) == 0.6


def test_best_threshold_balanced_accuracy_tie_takes_smallest():
    # 0.3: TP 2/2, FP 1/2 -> 0.75; 0.4: 1/2, 1/2 -> 0.5; 0.8: 1/2, 0/2 -> 0.75
    labels, scores = [0, 0, 1, 1], [0.1, 0.4, 0.3, 0.8]
    assert best_threshold(labels, scores, "balanced_accuracy") == 0.3
    # Shuffling the clips does not change the choice.
    assert best_threshold(labels[::-1], scores[::-1]) == 0.3


@pytest.mark.parametrize(
    "target_fpr, expected",
    [
        (0.0, 0.8),  # FP 0 first at 0.8 (0.7 is a normal clip)
        (0.2, 0.6),  # FP <= 1.2 -> FP 1 at 0.6; 0.5 has FP 2
        (0.5, 0.35),  # FP <= 3 -> 0.35 (0.3 has FP 4)
        (1.0, 0.1),  # everything allowed -> the smallest score
    ],
)
def test_best_threshold_fpr_by_hand(target_fpr, expected):
    threshold = best_threshold(LABELS, SCORES, criterion="fpr", target_fpr=target_fpr)
    assert threshold == expected
    assert binary_metrics(LABELS, SCORES, threshold)["fp"] / 6 <= target_fpr


def test_best_threshold_fpr_above_all_scores():
    # The top score is a normal clip, so FPR 0 needs a threshold above it.
    threshold = best_threshold([1, 0], [0.2, 0.9], criterion="fpr", target_fpr=0.0)
    assert threshold == np.nextafter(0.9, np.inf)
    assert binary_metrics([1, 0], [0.2, 0.9], threshold)["fp"] == 0


def test_best_threshold_errors():
    with pytest.raises(ValueError, match="criterion"):
        best_threshold(LABELS, SCORES, criterion="youden")
    with pytest.raises(ValueError, match="target_fpr"):
        best_threshold(LABELS, SCORES, criterion="fpr")
    with pytest.raises(ValueError, match="target_fpr"):
        best_threshold(LABELS, SCORES, criterion="fpr", target_fpr=1.5)
    with pytest.raises(ValueError, match="both"):
        best_threshold([0, 0], [0.1, 0.2])


def test_grouped_metrics_by_hand():
    groups = np.array(["id_02", "id_00"] * 5)
    result = grouped_metrics(LABELS, SCORES, groups, threshold=0.5)
    assert list(result) == ["id_00", "id_02", "all"]
    # id_02: labels 0 0 0 1 1, scores .1 .3 .5 .35 .8 -> flagged .5 (N), .8 (A)
    assert [result["id_02"][k] for k in ("tn", "fp", "fn", "tp")] == [2, 1, 1, 1]
    # id_00: labels 0 0 0 1 1, scores .2 .4 .7 .6 .9 -> flagged .7 (N), .6 .9 (A)
    assert [result["id_00"][k] for k in ("tn", "fp", "fn", "tp")] == [2, 1, 0, 2]
    assert result["id_00"]["n"] == 5 and result["id_00"]["n_abnormal"] == 2
    assert result["all"] == binary_metrics(LABELS, SCORES, 0.5)


def test_grouped_metrics_numeric_groups_and_one_class_group():
    groups = np.array([10, 10, 2, 2, 2])
    result = grouped_metrics([0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.8, 0.9], groups, 0.5)
    assert list(result) == ["2", "10", "all"]  # numeric order, not string order
    assert math.isnan(result["10"]["auc"])  # group 10 holds only normal clips
    assert result["2"]["auc"] == 1.0
    with pytest.raises(ValueError, match="groups"):
        grouped_metrics([0, 1], [0.1, 0.9], ["a"], 0.5)


def _separable(n, seed):
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], n // 2)
    return labels, labels * 1.0 + rng.normal(size=n)


def test_bootstrap_ci_deterministic_and_contains_estimate():
    labels, scores = _separable(120, seed=1)
    ci = bootstrap_ci(labels, scores, roc_auc, n_boot=200, seed=3)
    assert ci == bootstrap_ci(labels, scores, roc_auc, n_boot=200, seed=3)
    assert ci != bootstrap_ci(labels, scores, roc_auc, n_boot=200, seed=4)
    low, high = ci
    assert low < roc_auc(labels, scores) < high
    assert 0.5 < low and high < 1.0


def test_bootstrap_ci_narrows_with_more_data():
    small = bootstrap_ci(*_separable(40, seed=5), roc_auc, n_boot=200)
    large = bootstrap_ci(*_separable(640, seed=5), roc_auc, n_boot=200)
    # Width scales about as 1 / sqrt(n): 16 times the clips, about a quarter the width.
    assert large[1] - large[0] < 0.5 * (small[1] - small[0])


def test_bootstrap_ci_skips_one_class_resamples():
    # One abnormal clip in five: about a third of resamples miss it and are NaN.
    labels, scores = [0, 0, 0, 0, 1], [0.1, 0.2, 0.3, 0.4, 0.9]
    low, high = bootstrap_ci(labels, scores, roc_auc, n_boot=100)
    assert (low, high) == (1.0, 1.0)  # every resample holding the abnormal clip is perfect
    assert all(map(math.isnan, bootstrap_ci([0, 0, 0], [0.1, 0.2, 0.3], roc_auc, n_boot=20)))


def test_bootstrap_ci_argument_errors():
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci(LABELS, SCORES, roc_auc, n_boot=0)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci(LABELS, SCORES, roc_auc, confidence=1.0)


@pytest.mark.parametrize(
    "labels, scores, message",
    [
        ([[0, 1]], [[0.1, 0.9]], "labels must be 1-D"),
        ([0, 1], [[0.1, 0.9]], "scores must be 1-D"),
        ([0, 1, 1], [0.1, 0.9], "equal lengths"),
        ([0, 2, 1], [0.1, 0.5, 0.9], "only 0"),
        ([0, -1], [0.1, 0.9], "only 0"),
        ([0, 1], [0.1, float("nan")], "finite"),
        ([], [], "empty"),
    ],
)
@pytest.mark.parametrize(
    "metric",
    [roc_auc, partial_auc, lambda y, s: binary_metrics(y, s, 0.5), best_threshold],
    ids=["roc_auc", "partial_auc", "binary_metrics", "best_threshold"],
)
def test_input_validation(metric, labels, scores, message):
    with pytest.raises(ValueError, match=message):
        metric(labels, scores)


def test_confusion_validation():
    with pytest.raises(ValueError, match="predictions must hold only 0"):
        confusion([0, 1], [0, 0.5])
    with pytest.raises(ValueError, match="equal lengths"):
        confusion([0, 1], [0])


def test_bool_labels_accepted():
    assert roc_auc(LABELS.astype(bool), SCORES) == pytest.approx(20 / 24)


def test_gamma_threshold_is_the_fitted_quantile_of_normal_scores_alone():
    rng = np.random.default_rng(0)
    normal = rng.gamma(shape=4.0, scale=0.5, size=2000) + 1.0
    threshold = best_threshold(np.zeros(normal.size), normal, criterion="gamma", target_fpr=0.1)
    assert np.mean(normal >= threshold) == pytest.approx(0.1, abs=0.02)
    with_anomalies = best_threshold(np.r_[np.zeros(normal.size), np.ones(3)], np.r_[normal, 0.0, 0.0, 0.0],
                                            criterion="gamma", target_fpr=0.1)
    assert with_anomalies == pytest.approx(threshold)  # abnormal clips play no part
    assert best_threshold(np.zeros(4), np.full(4, 2.0), "gamma", 0.1) > 2.0  # nothing to fit: flags nothing
    with pytest.raises(ValueError, match="needs at least three normal clips"):
        best_threshold(np.zeros(2), np.array([1.0, 2.0]), "gamma", 0.1)
