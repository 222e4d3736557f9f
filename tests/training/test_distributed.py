"""Training under tf.distribute: the custom loop against `fit`, two CPU replicas, two workers.

Every case runs in fresh processes: logical CPU devices and the collective
ops of MultiWorkerMirroredStrategy must be configured before TensorFlow
starts. GPUs are hidden so that the replica counts are the same everywhere.
"""

import csv
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow  # trains models or runs commands end to end

ENV = {**{k: v for k, v in os.environ.items() if k != "TF_CONFIG"},
       "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": "-1"}
# 96 clips: train 72 (4 full batches and a half), val 16, test 8
SMALL = ["synthetic.clips_per_class=12", "synthetic.abnormal_clips_per_id=12", "data.split_ratios=[0.7, 0.2, 0.1]"]
TIMEOUT = 600  # seconds per process; a run takes well under a minute on two idle cores

TWO_CPU_REPLICAS = """
import tensorflow as tf
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
"""

# The custom loop on two replicas against `fit` on one device, for a model
# without batch normalisation (whose batch statistics differ per replica):
# 33 clips in batches of 16, so the last batch has one clip and one replica
# gets none. Then a model with batch normalisation for its moving statistics.
EQUIVALENCE = TWO_CPU_REPLICAS + """
import json
import keras
import numpy as np
from pump_keras.config import replace
from pump_keras.config import preset
from pump_keras.training import custom_loop, recipe

config = replace(preset("quick").train, epochs=2, verbose=0)


def tiny_model(batch_norm):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    if batch_norm:
        x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    recipe.compile_model(model, config, steps_per_epoch=3)
    return model


rng = np.random.default_rng(0)
images = rng.normal(size=(33, 8, 8, 3)).astype("float32")
labels = (rng.random((33, 1)) > 0.5).astype("float32")
sample_weights = rng.uniform(0.5, 2.0, 33).astype("float32")
train = tf.data.Dataset.from_tensor_slices((images, labels, sample_weights)).batch(16)
val = tf.data.Dataset.from_tensor_slices((images[:21], labels[:21])).batch(16)

reference = tiny_model(batch_norm=False)
history = reference.fit(train, validation_data=val, epochs=1, verbose=0).history
fit_logs = {k: float(v[-1]) for k, v in history.items()}
fit_logs["learning_rate"] = float(reference.optimizer.learning_rate)

strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
with strategy.scope():
    model = tiny_model(batch_norm=False)
logs = custom_loop.run_epoch(model, strategy, train, val, 0, config)
weight_diff = max(float(np.abs(a - b).max()) for a, b in zip(reference.get_weights(), model.get_weights()))
logits = custom_loop.predict_logits(model, val, strategy)
direct = np.asarray(model(images[:21], training=False), np.float64).reshape(-1)

with strategy.scope():
    normalised = tiny_model(batch_norm=True)
for epoch in range(2):
    custom_loop.run_epoch(normalised, strategy, train, val, epoch, config)
statistics = {v.path: [np.asarray(copy).tolist() for copy in v.value.values]
              for v in normalised.non_trainable_variables if "moving" in v.path}
steps = custom_loop.epoch_steps(normalised, strategy)
print("RESULT " + json.dumps({
    "replicas": strategy.num_replicas_in_sync, "fit_logs": fit_logs, "logs": logs,
    "weight_diff": weight_diff, "logits": logits.tolist(), "logits_dtype": str(logits.dtype),
    "direct": direct.tolist(), "statistics": statistics,
    "traces": [steps.train_step.experimental_get_tracing_count(),
               steps.val_step.experimental_get_tracing_count()]}))
"""

# `train` of the quick preset with strategy "mirrored" on two CPU replicas (fit).
MIRRORED_TRAIN = TWO_CPU_REPLICAS + """
import sys
from pump_keras.config import load_config
from pump_keras.training import loop, setup

made = []
make_strategy = setup.make_strategy
setup.make_strategy = lambda config: made.append(make_strategy(config)) or made[-1]
config = load_config("quick", overrides=[f"run_dir={sys.argv[1]}", "train.strategy=mirrored", "train.epochs=2",
                                          "export.enabled=false", "train.verbose=0", *sys.argv[2:]])
result = loop.train(config)
print("STRATEGY", type(made[0]).__name__, made[0].num_replicas_in_sync)
print("EPOCHS", result.epochs_run)
"""

# Each worker prints the clip numbers its replica gets from 37 clips in batches of 16.
SHARDS = """
import json
import numpy as np
import tensorflow as tf
from pump_keras.training import custom_loop

strategy = tf.distribute.MultiWorkerMirroredStrategy()
seen = [np.asarray(value).tolist() for batch in custom_loop.distribute(strategy, tf.data.Dataset.range(37).batch(16))
        for value in strategy.experimental_local_results(batch)]
print("SEEN " + json.dumps(seen))
"""


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tagged(stdout, tag):
    lines = [line[len(tag) + 1:] for line in stdout.splitlines() if line.startswith(tag + " ")]
    assert lines, f"no {tag} line in the output:\n{stdout[-3000:]}"
    return lines[-1]


def run_script(script, *args):
    result = subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=REPO_ROOT, env=ENV,
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result.stdout


def run_two_workers(command, folder, expected=(0, 0), on_start=None):
    """Runs `command` as worker 0 and worker 1 of a local cluster; returns each one's output.

    Both must exit with `expected` within the timeout; on any failure both are
    killed. `on_start(processes, log_paths)` runs once both have started.
    """
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    processes, logs = [], []
    try:
        for index in range(2):
            env = {**ENV, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
            log = open(folder / f"worker-{index}.log", "w+")
            logs.append(log)
            processes.append(subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log,
                                              stderr=subprocess.STDOUT, text=True))
        if on_start is not None:
            on_start(processes, [folder / f"worker-{index}.log" for index in range(2)])
        deadline = time.monotonic() + TIMEOUT
        while any(p.poll() is None for p in processes):
            failed = [p for p, code in zip(processes, expected) if p.poll() not in (None, code)]
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        outputs = []
        for log in logs:
            log.seek(0)
            outputs.append(log.read())
        codes = [p.poll() for p in processes]
        assert codes == list(expected), f"exit codes {codes} (None: still running after {TIMEOUT} s)\n" + "\n".join(
            f"--- worker {i} ---\n{out[-4000:]}" for i, out in enumerate(outputs))
        return outputs
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for log in logs:
            log.close()


def load_weights(path):
    import keras

    import pump_keras.models  # noqa: F401  (registers the custom layers)

    return keras.saving.load_model(path, compile=False).get_weights()


def history_rows(run_dir):
    with open(os.path.join(run_dir, "history.csv")) as handle:
        return list(csv.DictReader(handle))


def assert_finite_test_metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.json")) as handle:
        metrics = json.load(handle)
    test = metrics["test"]
    assert {"accuracy", "balanced_accuracy", "f1", "auc", "pauc"} <= set(test), test
    assert all(math.isfinite(test[k]) for k in ("accuracy", "balanced_accuracy", "f1", "auc", "pauc")), test
    assert test["n"] > 0 and math.isfinite(metrics["threshold_logit"])
    return metrics


def test_custom_loop_on_two_replicas_matches_fit_on_one_device():
    result = json.loads(tagged(run_script(EQUIVALENCE), "RESULT"))
    assert result["replicas"] == 2
    fit_logs, logs = result["fit_logs"], result["logs"]
    assert set(logs) == {"loss", "auc", "accuracy", "val_loss", "val_auc", "val_accuracy", "learning_rate"}
    assert set(fit_logs) == set(logs)
    for key in logs:
        assert logs[key] == pytest.approx(fit_logs[key], rel=1e-5, abs=1e-6), (key, logs, fit_logs)
    # Same gradients step by step: the global sample-weighted mean, the one-clip batch included.
    assert result["weight_diff"] < 1e-5
    assert result["logits_dtype"] == "float64" and len(result["logits"]) == 21
    np.testing.assert_allclose(result["logits"], result["direct"], rtol=1e-6, atol=1e-6)
    # Moving statistics: learned, and the same on both replicas.
    assert len(result["statistics"]) == 2
    for path, (first, second) in result["statistics"].items():
        assert first == second, path
    assert any(abs(v) > 1e-4 for v in result["statistics"]["batch_normalization/moving_mean"][0])
    # One trace per step for full and partial batches over two epochs.
    assert result["traces"] == [1, 1]


def test_train_with_mirrored_strategy_on_two_cpu_replicas(tmp_path):
    run_dir = tmp_path / "mirrored"
    stdout = run_script(MIRRORED_TRAIN, run_dir, *SMALL)
    assert tagged(stdout, "STRATEGY") == "MirroredStrategy 2"
    assert tagged(stdout, "EPOCHS") == "2"
    assert_finite_test_metrics(run_dir)
    assert [row["epoch"] for row in history_rows(run_dir)] == ["1", "2"]


def test_two_workers_share_every_batch_without_loss_or_overlap(tmp_path):
    outputs = run_two_workers([sys.executable, "-c", SHARDS], tmp_path)
    first, second = (json.loads(tagged(out, "SEEN")) for out in outputs)
    assert len(first) == len(second) == 3  # the same number of steps on each worker
    assert sorted(i for batch in first + second for i in batch) == list(range(37))
    for mine, theirs, start in zip(first, second, (0, 16, 32)):  # each global batch split in order
        assert mine + theirs == list(range(start, min(start + 16, 37)))


def test_two_workers_train_identical_models(tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "pump_keras.train", "--run-dir", str(run_dir),
               "--set", "train.strategy=multiworker", *(a for s in SMALL for a in ("--set", s)),
               "--epochs", "2", "--no-export", "--verbose", "2"]
    outputs = run_two_workers(command, tmp_path)
    chief, other = run_dir, tmp_path / "run.worker-1"
    for out in outputs:
        assert "Epoch 2/2" in out and "val_auc" in out, out[-3000:]
    for name in ("last.keras", "best.keras"):
        ours, theirs = load_weights(chief / name), load_weights(other / name)
        assert len(ours) == len(theirs) > 0
        for a, b in zip(ours, theirs):
            np.testing.assert_array_equal(a, b)
    rows = history_rows(chief)
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert set(rows[0]) == {"epoch", "loss", "auc", "accuracy", "val_loss", "val_auc", "val_accuracy",
                            "learning_rate"}
    assert all(math.isfinite(float(v)) for row in rows for v in row.values())
    assert history_rows(other) == rows
    assert assert_finite_test_metrics(chief) == assert_finite_test_metrics(other)
    # The same clips in the same order on both workers (each generated its own copy).
    clips = [[(row["split"], row["clip_key"]) for row in csv.DictReader(open(folder / "split.csv"))]
             for folder in (chief, other)]
    assert clips[0] == clips[1]
    assert any(name.startswith("events") for _, _, files in os.walk(chief / "logs") for name in files)


def multiworker_command(run_dir, *extra):
    return [sys.executable, "-m", "pump_keras.train", "--run-dir", str(run_dir),
            "--set", "train.strategy=multiworker", *(a for s in SMALL for a in ("--set", s)),
            "--no-export", "--verbose", "2", *extra]


def test_workers_that_completed_different_epochs_refuse_to_resume(tmp_path):
    from pump_keras.cli.train import build_parser, resolve_config
    from pump_keras.config import config_to_json

    run_dir = tmp_path / "run"
    command = multiworker_command(run_dir, "--epochs", "3")
    config = resolve_config(build_parser().parse_args(command[3:]))
    states = {}
    for folder, epochs in ((run_dir, 2), (tmp_path / "run.worker-1", 1)):
        folder.mkdir()
        (folder / "config.json").write_text(config_to_json(config))
        states[folder] = json.dumps({"epochs_completed": epochs, "history": [], "best_value": None,
                                     "best_epoch": None})
        (folder / "state.json").write_text(states[folder])
    outputs = run_two_workers(command, tmp_path, expected=(2, 2))
    for out in outputs:
        assert "error: The workers have completed different numbers of epochs" in out, out[-3000:]
        assert f"worker 0 ({run_dir / 'state.json'}): 2" in out and f"worker 1 ({run_dir}.worker-1" in out
        assert "Traceback" not in out
    for folder, state in states.items():
        assert (folder / "state.json").read_text() == state
        assert not (folder / "last.keras").exists()


def test_a_worker_lost_mid_run_stops_the_others_with_a_clear_error(tmp_path):
    def kill_worker_1_once_it_has_split_the_data(processes, logs):
        # By then the cluster has formed; worker 0 is at or near its first collective.
        deadline = time.monotonic() + TIMEOUT
        while "normal / " not in logs[1].read_text():
            assert time.monotonic() < deadline and processes[1].poll() is None, logs[1].read_text()[-3000:]
            time.sleep(0.2)
        processes[1].kill()
        processes[1].wait()

    started = time.monotonic()
    command = multiworker_command(tmp_path / "run", "--epochs", "2", "--set", "train.collective_timeout_s=30")
    outputs = run_two_workers(command, tmp_path, expected=(2, -signal.SIGKILL),
                              on_start=kill_worker_1_once_it_has_split_the_data)
    assert "error: Lost contact with another worker (" in outputs[0], outputs[0][-3000:]
    assert "Traceback" not in outputs[0]
    assert time.monotonic() - started < TIMEOUT / 2


def test_collectives_of_a_multiworker_run_time_out_as_configured():
    script = """
from pump_keras.config import TrainConfig
from pump_keras.training import setup
for timeout in (7.0, 0.0):
    strategy = setup.make_strategy(TrainConfig(strategy="multiworker", collective_timeout_s=timeout))
    print("TIMEOUT", strategy.extended._communication_options.timeout_seconds)
"""
    cluster = {"worker": [f"127.0.0.1:{free_ports(1)[0]}"]}
    env = {**ENV, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}})}
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert [line for line in result.stdout.splitlines() if line.startswith("TIMEOUT")] == [
        "TIMEOUT 7.0", "TIMEOUT None"]
