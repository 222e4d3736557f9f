"""`python -m pump_keras.evaluate` on a small trained run: threshold, intervals, baselines, report."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from pump_keras.config import EvalConfig
from pump_keras.evaluation import metrics
from pump_keras.evaluation.report import choose_threshold, metrics_with_intervals, sigmoid
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow  # trains models or runs commands end to end

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def cli(module, *arguments):
    return subprocess.run([sys.executable, "-m", module, *arguments], cwd=REPO_ROOT, env=ENV,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("evaluate") / "run"
    result = cli("pump_keras.train", "--run-dir", str(run_dir), "--epochs", "3", "--no-export", "--verbose", "0",
                 "--set", "synthetic.clips_per_class=16", "--set", "synthetic.abnormal_clips_per_id=8")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return run_dir


def evaluate(capsys, *arguments):
    """`python -m pump_keras.evaluate ARGUMENTS` in this process; returns (status, stdout, stderr)."""
    from pump_keras.cli.evaluate import main

    status = main(list(arguments))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_evaluate_writes_threshold_report_and_baselines(small_run, capsys):
    status, out, errors = evaluate(capsys, "--run-dir", str(small_run), "--bootstrap", "200")
    assert status == 0, errors[-3000:]
    assert "logistic_regression" in out and "majority" in out
    report_dir = small_run / "report"
    evaluation = json.loads((report_dir / "evaluation.json").read_text())
    threshold = json.loads((small_run / "threshold.json").read_text())
    assert threshold["criterion"] == "balanced_accuracy" and threshold["chosen_on"] == "val"
    assert threshold["threshold_probability"] == pytest.approx(sigmoid(threshold["threshold_logit"]))
    model = evaluation["model"]
    for name in ("accuracy", "balanced_accuracy", "f1", "auc", "pauc"):
        low, high = model[f"{name}_ci"]
        assert low <= model[name] <= high, name
    assert model["tn"] + model["fp"] + model["fn"] + model["tp"] == evaluation["n_clips"]
    assert set(evaluation["per_machine_id"]) == {"pump/id_00", "pump/id_02", "pump/id_04", "pump/id_06", "all"}
    assert set(evaluation["per_snr"]) == {"0 dB", "all"}
    majority = evaluation["baselines"]["majority"]
    assert majority["auc"] == 0.5 and majority["recall"] == 0.0
    assert majority["accuracy"] == pytest.approx(1 - evaluation["abnormal_share"])
    assert 0.0 <= evaluation["baselines"]["logistic_regression"]["auc"] <= 1.0
    report = (report_dir / "report.md").read_text()
    assert "## Model and baselines (same split)" in report and "| logistic regression |" in report
    # The first thing a reader sees: who won, with both AUCs and their intervals.
    verdict = evaluation["verdict"]
    assert report.splitlines()[2] == f"**Verdict: {verdict['text']}**"
    assert verdict["model_auc"] == pytest.approx(model["auc"])
    assert verdict["baseline_auc"] == pytest.approx(evaluation["baselines"]["logistic_regression"]["auc"])
    assert f"{verdict['model_auc']:.3f} [" in verdict["text"] and verdict["outcome"] in ("better", "worse", "unclear")
    for figure in ("roc", "confusion", "scores", "training_curves", "spectrograms", "explanation"):
        png = report_dir / f"{figure}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure
        assert f"({figure}.png)" in report
    # The DCASE-format files of the same clips: the per-id AUCs are the report's.
    dcase = report_dir / "dcase"
    assert sorted(p.name for p in dcase.glob("anomaly_score_*.csv")) == [
        f"anomaly_score_pump_id_{i}.csv" for i in ("00", "02", "04", "06")]
    rows = {row["id"]: row for row in evaluation["dcase"]["results"]["pump"]["rows"]}
    for machine_id, row in rows.items():
        assert row["auc"] == pytest.approx(evaluation["per_machine_id"][f"pump/id_{machine_id}"]["auc"])
    assert "`dcase/`" in report
    assert (dcase / "result.csv").read_text().startswith("pump\nid,AUC,pAUC,pAUC (sklearn McClish)\n")


def test_false_alarm_criterion_and_bad_run_directory(small_run, tmp_path, capsys):
    status, _, errors = evaluate(capsys, "--run-dir", str(small_run), "--criterion", "fpr", "--target-fpr", "0.0",
                                 "--bootstrap", "0", "--no-plots", "--no-baselines")
    assert status == 0, errors[-3000:]
    evaluation = json.loads((small_run / "report" / "evaluation.json").read_text())
    assert evaluation["threshold"]["criterion"] == "fpr"
    status, _, errors = evaluate(capsys, "--run-dir", str(tmp_path))
    assert status == 2 and "not a pump_keras run directory" in errors
    status, _, errors = evaluate(capsys, "--run-dir", str(small_run), "--criterion", "fpr")
    assert status == 2 and "needs target_fpr" in errors


def copy_clips(records, folder):
    """Copies `records` into `folder` as <machine>/id_XX/<class>/NAME.wav; returns the folder."""
    for record in records:
        target = folder / record.machine / f"id_{record.machine_id}" / ("abnormal" if record.label else "normal")
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(record.path, target / os.path.basename(record.path))
    return folder


def test_another_folder_is_scored_whole_or_split_at_the_snrs_chosen_not_the_runs(small_run, tmp_path, capsys):
    from pump_keras.data.split import read_manifest

    run_dir = tmp_path / "run"
    shutil.copytree(small_run, run_dir, ignore=shutil.ignore_patterns("cache", "report", "logs"))
    config = json.loads((run_dir / "config.json").read_text())
    config["data"]["snr_db"] = [0.0]  # trained on 0 dB only
    (run_dir / "config.json").write_text(json.dumps(config))
    splits = read_manifest(run_dir / "split.csv")
    other = tmp_path / "other"
    copy_clips(splits["test"], other / "-6_dB_pump")
    copy_clips(splits["test"], other / "min12dB")
    quiet = ("--no-plots", "--no-baselines", "--bootstrap", "0")

    def evaluation(*arguments):
        status, _, errors = evaluate(capsys, "--run-dir", str(run_dir), *quiet, *arguments)
        assert status == 0, errors[-3000:]
        return json.loads((run_dir / "report" / "evaluation.json").read_text())

    whole = evaluation("--data-dir", str(other), "--split", "all")
    assert whole["split"] == "all" and whole["n_clips"] == 2 * len(splits["test"])
    assert set(whole["per_snr"]) == {"-6 dB", "-12 dB", "all"}
    chosen = evaluation("--data-dir", str(other), "--split", "all", "--snr-db", "-12")
    assert chosen["n_clips"] == len(splits["test"]) and set(chosen["per_snr"]) == {"-12 dB", "all"}
    # The README's example: the run's test recordings of a -6 dB folder.
    resplit = evaluation("--data-dir", str(other / "-6_dB_pump"), "--split", "test")
    assert 0 < resplit["n_clips"] <= len(splits["test"]) and set(resplit["per_snr"]) == {"-6 dB", "all"}

    seen = copy_clips(splits["train"][:3], tmp_path / "seen" / "6dB")
    status, _, errors = evaluate(capsys, "--run-dir", str(run_dir), *quiet, "--data-dir", str(seen), "--split", "all")
    assert status == 2 and "3 recording(s) to evaluate were in the train/val split" in errors
    status, _, errors = evaluate(capsys, "--run-dir", str(run_dir), *quiet, "--split", "all")
    assert status == 2 and "give it with --data-dir" in errors
    status, _, errors = evaluate(capsys, "--run-dir", str(run_dir), *quiet, "--data-dir", str(other),
                                 "--split", "all", "--snr-db", "3")
    assert status == 2 and "no files at SNR 3 dB" in errors


def test_threshold_criteria_on_a_hand_example():
    labels = np.array([0, 0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.8, 0.7, 0.9])
    # Balanced accuracy: >= 0.7 flags 0.7, 0.8, 0.9: TPR 1, TNR 3/4 -> 0.875, the best.
    assert choose_threshold(labels, scores, EvalConfig()) == 0.7
    # At most 0 false alarms: only >= 0.9 (0.8 is normal).
    assert choose_threshold(labels, scores, EvalConfig(threshold_criterion="fpr", target_fpr=0.0)) == 0.9


def test_intervals_are_the_bootstrap_of_each_metric():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 60 + [1] * 20)
    scores = labels + rng.normal(0, 0.8, labels.size)
    config = EvalConfig(bootstrap=300, seed=4)
    result = metrics_with_intervals(labels, scores, 0.5, config)
    expected = metrics.bootstrap_ci(labels, scores, metrics.roc_auc, n_boot=300, confidence=0.95, seed=4)
    assert result["auc_ci"] == list(expected)
    assert result["auc_ci"][0] < result["auc"] < result["auc_ci"][1]
    assert "auc_ci" not in metrics_with_intervals(labels, scores, 0.5, EvalConfig(bootstrap=0))


def test_reports_keep_machines_with_the_same_id_apart():
    from pump_keras.data.index import ClipRecord
    from pump_keras.training.loop import evaluate_model

    def record(machine, label, i):
        name = "abnormal" if label else "normal"
        return ClipRecord(path=f"/d/0_dB_{machine}/{machine}/id_00/{name}/{i:08d}.wav", label=label,
                          machine=machine, machine_id="00", snr_db=0.0, clip_key=f"{machine}/id_00/{name}/{i:08d}")

    clips = [record(machine, label, i) for machine in ("fan", "pump") for label in (0, 1) for i in range(3)]
    splits = {"val": clips, "test": clips}
    scores = np.array([-1.0, -2.0, -3.0, 1.0, 2.0, 3.0, 1.0, 2.0, 3.0, -1.0, -2.0, -3.0])
    result = evaluate_model(None, {"val": None, "test": None}, splits, predict=lambda model, data: scores)
    per_machine = result["test_per_machine_id"]
    assert set(per_machine) == {"fan/id_00", "pump/id_00", "all"}
    assert per_machine["fan/id_00"]["auc"] == 1.0 and per_machine["pump/id_00"]["auc"] == 0.0
