"""The normal-only benchmark's tables (`benchmarks/normal_only.py`): every method side by side, per condition and id."""

import importlib.util
import os

import pytest

from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def normal_only():
    pytest.MonkeyPatch().syspath_prepend(os.path.join(REPO_ROOT, "benchmarks"))  # it imports `learning`
    spec = importlib.util.spec_from_file_location("normal_only_benchmark",
                                                  os.path.join(REPO_ROOT, "benchmarks", "normal_only.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tables_put_the_simple_baseline_beside_both_trained_methods(normal_only):
    def seed(ours, ae, logmel):
        return {"ours": {"pump/id_00": {"auc": ours, "pauc": 0.5}},
                "dcase_ae": {"pump/id_00": {"auc": ae, "pauc": 0.5}},
                "logmel_gaussian": {"pump/id_00": {"auc": logmel, "pauc": 0.5}}}
    runs = [seed(0.9, 0.8, 0.95), seed(0.75, 0.8, 0.85)]
    results = {"snr0": {model: [run[model] for run in runs] for model in normal_only.COLUMNS}}
    table = normal_only.table(results, ["snr0"])
    assert "logmel_gaussian AUC" in table.splitlines()[0]
    assert table.splitlines()[2] == ("| snr0 | 0.825 +- 0.106 | 0.500 +- 0.000 | 0.800 +- 0.000 | 0.500 +- 0.000 "
                                     "| 0.900 +- 0.071 | 0.500 +- 0.000 | +0.025 |")
    assert normal_only.per_id(results, ["snr0"]) == {"snr0 pump/id_00": pytest.approx(
        {"ours": 0.825, "dcase_ae": 0.8, "logmel_gaussian": 0.9})}
