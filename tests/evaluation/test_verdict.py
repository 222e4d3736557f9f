"""The plain-words comparison of the network with the simple baseline."""

import math

import numpy as np
import pytest

from pump_keras.config import EvalConfig
from pump_keras.evaluation.verdict import compare_with_baseline

RNG = np.random.default_rng(0)
LABELS = np.array([0] * 60 + [1] * 20)
GOOD = LABELS * 2.0 + RNG.normal(0, 0.5, LABELS.size)      # AUC near 1
POOR = LABELS * 0.3 + RNG.normal(0, 1.0, LABELS.size)      # AUC near 0.6
CONFIG = EvalConfig(bootstrap=300)


def test_a_clearly_better_network_is_said_to_win():
    result = compare_with_baseline(LABELS, GOOD, POOR, CONFIG)
    assert result["outcome"] == "better"
    assert result["difference_ci"][0] > 0
    assert result["model_auc"] > 0.95 and result["baseline_auc"] < 0.8
    assert result["text"].startswith("The network beats the simple baseline")
    assert f"{result['model_auc']:.3f}" in result["text"] and f"{result['baseline_auc']:.3f}" in result["text"]
    assert "80 test clips" in result["text"]


def test_a_worse_network_is_told_not_to_be_deployed():
    result = compare_with_baseline(LABELS, POOR, GOOD, CONFIG)
    assert result["outcome"] == "worse" and result["difference_ci"][1] < 0
    assert "does NOT beat" in result["text"] and "do not deploy" in result["text"]


def test_a_tie_is_unclear_and_the_interval_is_paired():
    noisy = GOOD + RNG.normal(0, 0.05, LABELS.size)
    result = compare_with_baseline(LABELS, GOOD, noisy, CONFIG)
    assert result["outcome"] == "unclear" and "cannot be told apart" in result["text"]
    # Paired: the same clips in both resamples, so the difference's interval is
    # far narrower than either AUC's own.
    width = result["difference_ci"][1] - result["difference_ci"][0]
    assert width < 0.5 * (result["model_auc_ci"][1] - result["model_auc_ci"][0])


def test_without_bootstrap_the_point_difference_decides():
    result = compare_with_baseline(LABELS, GOOD, POOR, EvalConfig(bootstrap=0))
    assert result["outcome"] == "better" and all(math.isnan(v) for v in result["difference_ci"])
    with pytest.raises(ValueError, match="same clips"):
        compare_with_baseline(LABELS, GOOD[:-1], POOR, CONFIG)
