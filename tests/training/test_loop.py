"""`python -m pump_keras.train` end to end: it learns, it is deterministic, it resumes, it refuses bad input.

The quick preset runs once in full (about a minute and a half on two cores)
and must beat the log-mel logistic regression on its split; determinism and resuming use a shorter run of the same recipe
(`SHORT`, about 25 s): twice uninterrupted, once killed mid-training and
started again with the same command.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pump_keras.models import load_model
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow  # trains models or runs commands end to end

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


def train_command(run_dir, *extra):
    return [sys.executable, "-m", "pump_keras.train", "--run-dir", str(run_dir),
            "--set", f"export.out_dir={run_dir}-models", "--verbose", "2", *extra]


def run_train(run_dir, *extra, check=True):
    result = subprocess.run(train_command(run_dir, *extra), cwd=REPO_ROOT, env=ENV,
                            capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def weights(path):
    return [np.asarray(w) for w in load_model(path).get_weights()]


def metrics_of(run_dir):
    with open(os.path.join(run_dir, "metrics.json")) as handle:
        return json.load(handle)


SHORT = ("--epochs", "6", "--set", "synthetic.clips_per_class=16", "--set", "synthetic.abnormal_clips_per_id=8",
         "--no-export")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("quick") / "run"
    return run_dir, run_train(run_dir)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("short") / "run"
    run_train(run_dir, *SHORT)
    return run_dir


def test_quick_preset_beats_the_baseline_at_default_fault_strength(quick_run):
    # The learning test: the default command (fixed seeds, deterministic
    # kernels) on the generator's default-strength faults must rank the test
    # clips at least as well as the log-mel logistic regression on the same split.
    run_dir, result = quick_run
    first_line = result.stdout.splitlines()[0]
    assert "SYNTHETIC" in first_line and "quick" in first_line
    assert "CPU allocator" not in result.stdout  # the CLI's runtime got the configured one
    metrics = metrics_of(run_dir)
    test, verdict = metrics["test"], metrics["verdict"]
    assert {"accuracy", "balanced_accuracy", "f1", "auc", "pauc"} <= set(test)
    assert verdict["model_auc"] == pytest.approx(test["auc"])
    assert verdict["model_auc"] >= verdict["baseline_auc"], verdict["text"]
    assert metrics["baseline"]["test"]["auc"] == pytest.approx(verdict["baseline_auc"])
    assert f"network AUC {test['auc']:.3f}" in result.stdout and verdict["text"] in result.stdout
    assert set(metrics["test_per_machine_id"]) == {"pump/id_00", "pump/id_02", "pump/id_04", "pump/id_06", "all"}
    for name in ("config.json", "split.csv", "best.keras", "last.keras", "history.csv", "metrics.json",
                 "threshold.json"):
        assert os.path.isfile(os.path.join(run_dir, name)), name
    # One threshold per run: training writes it, and the export serves it.
    threshold = json.loads((run_dir / "threshold.json").read_text())
    assert threshold["threshold_logit"] == metrics["threshold_logit"] and threshold["chosen_on"] == "val"
    assert threshold["criterion"] == "balanced_accuracy"
    assert any(name.startswith("events") for _, _, files in os.walk(run_dir / "logs") for name in files)
    history = open(run_dir / "history.csv").read().splitlines()
    assert len(history) == 1 + 60 and "learning_rate" in history[0] and "val_auc" in history[0]
    # The run keeps its last epoch (the learning benchmark's choice), whatever the validation loss did.
    assert metrics["checkpoint_metric"] == "last" and metrics["best_epoch"] == 60
    assert "Epoch 60/60" in result.stdout and "Done in" in result.stdout
    saved_model = f"{run_dir}-models/pump_anomaly/1"
    assert os.path.isfile(os.path.join(saved_model, "saved_model.pb"))
    exported = json.loads(open(os.path.join(saved_model, "assets.extra", "pump_keras.json")).read())
    assert exported["threshold"] == pytest.approx(threshold["threshold_probability"])
    assert exported["threshold_source"].startswith("threshold.json")
    assert str(saved_model) in result.stdout


def test_killed_run_resumes_to_the_uninterrupted_result(short_run, tmp_path):
    """Also the determinism check: another process, the same seed, bit-identical weights and metrics."""
    reference = short_run
    run_dir = tmp_path / "killed"
    process = subprocess.Popen(train_command(run_dir, *SHORT), cwd=REPO_ROOT, env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = run_dir / "state.json"
    deadline = time.time() + 400
    try:
        while time.time() < deadline:
            if state.exists() and json.loads(state.read_text())["epochs_completed"] >= 2:
                break
            assert process.poll() is None, "training ended before it could be interrupted"
            time.sleep(0.1)
        time.sleep(0.3)  # into the next epoch
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    completed = json.loads(state.read_text())["epochs_completed"]
    assert 2 <= completed < 6
    result = run_train(run_dir, *SHORT)
    assert f"after epoch {completed} of 6" in result.stdout
    assert metrics_of(run_dir) == metrics_of(reference)
    for name in ("best.keras", "last.keras"):
        for a, b in zip(weights(run_dir / name), weights(reference / name)):
            np.testing.assert_array_equal(a, b)
    assert open(run_dir / "history.csv").read() == open(reference / "history.csv").read()


def test_another_config_in_the_run_directory_is_refused(quick_run):
    run_dir, _ = quick_run
    before = {name: os.path.getmtime(run_dir / name) for name in ("config.json", "best.keras", "metrics.json")}
    result = run_train(run_dir, "--epochs", "3", check=False)
    assert result.returncode == 2
    assert "holds a run with another config" in result.stderr and "train.epochs: 60 -> 3" in result.stderr
    assert before == {name: os.path.getmtime(run_dir / name) for name in before}


def cli_error(capsys, run_dir, *extra):
    """Runs the CLI in this process (the errors come before any training); returns (status, stderr)."""
    from pump_keras.cli.train import main

    status = main(["--run-dir", str(run_dir), "--verbose", "0", *extra])
    return status, capsys.readouterr().err


def test_unknown_preset_and_option_are_clear_errors(tmp_path, capsys):
    for extra, message in [(("--preset", "fast"), "Unknown preset 'fast'"),
                           (("--set", "train.epoch=3"), "Unknown option train.epoch")]:
        status, errors = cli_error(capsys, tmp_path / "run", *extra)
        assert status == 2 and message in errors, errors
    assert not (tmp_path / "run").exists()


def test_data_without_both_classes_is_refused_before_anything_is_written(tmp_path, capsys):
    from pump_keras.config import SyntheticConfig
    from pump_keras.data.synthetic import generate_dataset

    data = tmp_path / "data"
    generate_dataset(str(data), SyntheticConfig(clips_per_class=3, seconds=0.5, machine_ids=("00",)))
    for path in (data / "0_dB_pump" / "pump" / "id_00" / "abnormal").iterdir():
        path.unlink()
    status, errors = cli_error(capsys, tmp_path / "run", "--data-dir", str(data))
    assert status == 2 and "no abnormal clips" in errors, errors
    assert not (tmp_path / "run" / "config.json").exists()


def test_batch_larger_than_the_training_split_is_refused(tmp_path, capsys):
    status, errors = cli_error(capsys, tmp_path / "run", "--batch-size", "1000")
    assert status == 2
    assert re.search(r"batch_size 1000 is larger than the training split \(\d+ clips\)", errors), errors
    assert not (tmp_path / "run" / "config.json").exists()


def test_init_from_another_architecture_is_refused(tmp_path, capsys):
    from pump_keras.models import build

    other = tmp_path / "other.keras"
    build("plain_cnn", input_shape=(64, 64, 3)).save(other)
    status, errors = cli_error(capsys, tmp_path / "run", "--init-from", str(other))
    assert status == 2
    assert "architecture differs" in errors and str(other) in errors, errors
    assert not (tmp_path / "run" / "config.json").exists()


def resumable_copy(run_dir, folder):
    """A copy of a finished run whose manifest points at the copy's own recordings."""
    import shutil

    from pump_keras.data.split import read_manifest, write_manifest

    shutil.copytree(run_dir, folder, ignore=shutil.ignore_patterns("cache", "logs"))
    splits = read_manifest(folder / "split.csv")
    moved = {name: [replace_path(r, str(r.path).replace(str(run_dir), str(folder), 1)) for r in records]
             for name, records in splits.items()}
    write_manifest(folder / "split.csv", moved)
    return moved


def replace_path(record, path):
    import dataclasses

    return dataclasses.replace(record, path=path)


def test_resume_names_the_damaged_or_missing_file(short_run, tmp_path, capsys):
    run_dir = tmp_path / "copy"
    splits = resumable_copy(short_run, run_dir)
    manifest = (run_dir / "split.csv").read_text()

    # A manifest that reaches outside the data folder.
    outside = tmp_path / "elsewhere.wav"
    outside.write_bytes(open(splits["test"][0].path, "rb").read())
    (run_dir / "split.csv").write_text(manifest.replace(splits["test"][0].path, str(outside)))
    status, errors = cli_error(capsys, run_dir, *SHORT)
    assert status == 2 and f"lists {outside} (test split), which is outside the data folder" in errors, errors
    (run_dir / "split.csv").write_text(manifest)

    # A recording removed since the run started.
    missing = splits["test"][0].path
    os.rename(missing, tmp_path / "moved.wav")
    status, errors = cli_error(capsys, run_dir, *SHORT)
    assert status == 2 and errors.startswith(f"error: {missing}: cannot read file"), errors
    os.rename(tmp_path / "moved.wav", missing)

    # An empty state.json, then a truncated last.keras.
    state = (run_dir / "state.json").read_bytes()
    (run_dir / "state.json").write_text("")
    status, errors = cli_error(capsys, run_dir, *SHORT)
    assert status == 2 and f"error: {run_dir / 'state.json'} is empty" in errors, errors
    (run_dir / "state.json").write_bytes(state)
    last = (run_dir / "last.keras").read_bytes()
    (run_dir / "last.keras").write_bytes(last[: len(last) // 2])
    status, errors = cli_error(capsys, run_dir, *SHORT)
    assert status == 2 and f"error: {run_dir / 'last.keras'} cannot be read" in errors, errors
    assert (run_dir / "state.json").read_bytes() == state


def test_best_checkpoint_is_never_newer_than_the_committed_state(tmp_path, monkeypatch):
    from pump_keras.config import load_config
    from pump_keras.run_dir import RunDirectory
    from pump_keras.training import loop

    config = load_config("quick", overrides=[
        f"run_dir={tmp_path / 'run'}", "train.epochs=2", "train.checkpoint_metric=val_loss", "train.verbose=0",
        "synthetic.clips_per_class=8", "synthetic.abnormal_clips_per_id=8", "synthetic.seconds=1.0",
        "export.enabled=false"])
    monkeypatch.setattr(loop, "improves", lambda row, best, metric: True)  # every epoch becomes the best
    write_json = RunDirectory.write_json

    def killed_before_the_second_state(self, name, values):
        if name == RunDirectory.STATE and values["epochs_completed"] == 2:
            raise KeyboardInterrupt
        write_json(self, name, values)

    monkeypatch.setattr(RunDirectory, "write_json", killed_before_the_second_state)
    with pytest.raises(KeyboardInterrupt):
        loop.train(config, log=lambda line: None)
    run_dir = tmp_path / "run"
    assert json.loads((run_dir / "state.json").read_text())["best_epoch"] == 1
    for a, b in zip(weights(run_dir / "best.keras"), weights(run_dir / "last.keras")):  # epoch 1's, both
        np.testing.assert_array_equal(a, b)
    monkeypatch.setattr(RunDirectory, "write_json", write_json)
    result = loop.train(config, log=lambda line: None)
    assert result.resumed_from_epoch == 1 and result.metrics["best_epoch"] == 2
    assert (run_dir / "best.keras").read_bytes() == (run_dir / "last.keras").read_bytes()


def test_the_next_export_removes_a_killed_exports_staging_folder(tmp_path):
    import keras

    from pump_keras.config import FeatureConfig
    from pump_keras.deploy.export import export_saved_model

    features = FeatureConfig(image_size=32)
    inputs = keras.Input(features.input_shape)
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(inputs)))
    staging = tmp_path / "models" / ".1.k1lled00"
    (staging / "variables").mkdir(parents=True)
    (tmp_path / "models" / ".keep").write_text("a user's file")
    path = export_saved_model(model, features, str(tmp_path / "models"))
    assert path == str(tmp_path / "models" / "1") and os.path.isfile(os.path.join(path, "saved_model.pb"))
    assert sorted(os.listdir(tmp_path / "models")) == [".keep", "1"]


# The entry points whose work imports TensorFlow (`python -m pump_keras.X`).
TENSORFLOW_ENTRY_POINTS = ("train", "evaluate", "export", "predict", "demo", "ablate")

# Imports one entry point with TensorFlow and Keras blocked: prints the C++ log
# level at the moment the module first asks for either, else after its import.
LOG_LEVEL_PROBE = """
import importlib, importlib.abc, os, sys

class Probe(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("tensorflow", "keras"):
            print("LEVEL", os.environ.get("TF_CPP_MIN_LOG_LEVEL"), flush=True)
            os._exit(0)

sys.meta_path.insert(0, Probe())
importlib.import_module(sys.argv[1])
print("LEVEL", os.environ.get("TF_CPP_MIN_LOG_LEVEL"), flush=True)
"""


def test_every_entry_point_quiets_tensorflow_before_importing_it_unless_the_user_chose():
    # TensorFlow reads TF_CPP_MIN_LOG_LEVEL once, at its import; 3 keeps its
    # C++ start-up lines ("failed call to cuInit", "NodeDef mentions attribute") away.
    for user_level, expected in ((None, "3"), ("0", "0")):
        env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
        if user_level is not None:
            env["TF_CPP_MIN_LOG_LEVEL"] = user_level
        for name in TENSORFLOW_ENTRY_POINTS:
            result = subprocess.run([sys.executable, "-c", LOG_LEVEL_PROBE, f"pump_keras.{name}"], cwd=REPO_ROOT,
                                    env=env, capture_output=True, text=True, timeout=120)
            assert result.stdout.strip() == f"LEVEL {expected}", (name, user_level, result.stdout, result.stderr)


def test_evaluation_reports_its_progress(short_run, tmp_path):
    from pump_keras.evaluation.report import evaluate_run

    run_dir = tmp_path / "copy"
    counts = {name: len(records) for name, records in resumable_copy(short_run, run_dir).items()}
    lines = []
    evaluate_run(str(run_dir), plots=False, log=lines.append)
    steps = [line.split(" (")[0] for line in lines]
    assert steps[:4] == [f"Scoring {counts['val']} validation clips with {run_dir / 'best.keras'}...",
                         f"Scoring {counts['test']} test clips...", "Metrics with 1000 bootstrap resamples...",
                         "Baselines on the same clips..."], lines
    for name, count in (("train", counts["train"]), ("val", counts["val"]), ("eval", counts["test"])):
        assert f"Baseline log-mel features of {count} {name} clips..." in steps, lines  # nothing cached in the copy
    assert lines[-1].startswith("Report: ")
