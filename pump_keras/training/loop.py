"""One training run, epoch by epoch: resumable, deterministic for a seed, with every file in the run directory."""

from __future__ import annotations

import functools
import json
import math
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import keras
import numpy as np
import tensorflow as tf

from pump_keras.config import RunConfig, replace, to_dict
from pump_keras.data.index import check_audio_headers
from pump_keras.data.pipeline import make_dataset
from pump_keras.data.prepare import prepare_splits
from pump_keras.data.split import describe_splits, write_manifest
from pump_keras.data.synthetic import generate_dataset
from pump_keras.errors import TrainingError
from pump_keras.evaluation.baselines import run_baselines
from pump_keras.evaluation.scoring import evaluate_model, predict_scores, threshold_record
from pump_keras.files import atomic_write_bytes, atomic_write_json
from pump_keras.models import registry
from pump_keras.run_dir import RunDirectory, check_manifest_paths
from pump_keras.training import custom_loop, recipe, setup
from pump_keras.training.autoencoder import train_autoencoders
from pump_keras.training.id_embedding import train_id_embedding


@dataclass
class TrainResult:
    """Where a run's outputs went, and its test metrics."""

    run_dir: str
    epochs_run: int
    resumed_from_epoch: int
    metrics: dict
    files: Dict[str, str]


def synthetic_data_dir(config: RunConfig, run: RunDirectory, log: Callable) -> str:
    """The run's own synthetic recordings (generated once, deterministic for the config)."""
    folder = run.file(RunDirectory.SYNTHETIC)
    marker = os.path.join(folder, RunDirectory.SYNTHETIC_MARKER)
    expected = to_dict(config.synthetic)
    if os.path.exists(marker):
        with open(marker, encoding="utf-8") as handle:
            if json.load(handle) == json.loads(json.dumps(expected)):
                return folder
    started = time.perf_counter()
    paths = generate_dataset(folder, config.synthetic, log=log if config.train.verbose else None)
    atomic_write_json(marker, expected)
    log(f"Generated {len(paths)} synthetic clips in {folder} ({time.perf_counter() - started:.1f} s).")
    return folder


def check_splits(splits: dict, batch_size: int) -> None:
    """Both classes in training and validation, and at least one full batch of training clips."""
    for name in ("train", "val"):
        labels = {r.label for r in splits.get(name, [])}
        if labels != {0, 1}:
            missing = sorted({0, 1} - labels)
            raise TrainingError(f"The {name} split has no {' or '.join('abnormal' if m else 'normal' for m in missing)} "
                                "clips: training needs both classes there (add data or change data.split_ratios).")
    if batch_size > len(splits["train"]):
        raise TrainingError(f"data.batch_size {batch_size} is larger than the training split "
                            f"({len(splits['train'])} clips): lower the batch size or add data.")


class _LearningRateLogger(keras.callbacks.Callback):
    """Adds the learning rate at the epoch's end to the logs (history and TensorBoard)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class _RunProgress(keras.callbacks.ProgbarLogger):
    """Keras' progress output, numbering epochs out of the run's total (one `fit` runs one epoch)."""

    def __init__(self, total_epochs: int):
        super().__init__()
        self.total_epochs = total_epochs

    def set_params(self, params):
        super().set_params({**params, "epochs": self.total_epochs})
        self.epochs = self.total_epochs


def baseline_scores(splits: dict, config: RunConfig, run: RunDirectory, log: Callable) -> Optional[np.ndarray]:
    """The log-mel logistic regression's test scores on the run's split, or None without a test split."""
    if not splits.get("test"):
        return None
    started = time.perf_counter()
    scores = run_baselines(splits, config.features, eval_split="test", cache_dir=run.file(RunDirectory.CACHE),
                           log=log if config.train.verbose else None)
    log(f"Baseline (log-mel logistic regression) fitted in {time.perf_counter() - started:.1f} s.")
    return scores["logistic_regression"]


def improves(row: dict, best: Optional[float], metric: str) -> bool:
    """Whether this epoch's `metric` beats the best so far (lower loss, higher AUC; ties keep the earlier).

    With `"last"` every epoch improves on the ones before it.
    """
    if metric == "last" or best is None:
        return True
    value = row[metric]
    return value < best if metric == "val_loss" else value > best


def write_scalars(log_dir: str, row: dict) -> None:
    """Writes one epoch's logs as TensorBoard scalars (the custom loop's stand-in for the callback)."""
    writer = tf.summary.create_file_writer(os.path.join(log_dir, "epochs"))
    with writer.as_default():
        for name, value in row.items():
            if name != "epoch":
                tf.summary.scalar(name, value, step=row["epoch"])
    writer.close()


def restore_checkpoint(model: keras.Model, run: RunDirectory, iterations: int) -> None:
    """Loads the checkpoint of the last completed epoch (model, optimizer) into `model`.

    The checkpoint is recognised by its optimizer step count: a pending
    checkpoint written just before an interruption is used (and put in
    place) if the state had recorded its epoch, and dropped otherwise.
    """
    for name in (RunDirectory.LAST_PENDING, RunDirectory.LAST):
        if not run.exists(name):
            continue
        try:
            model.load_weights(run.file(name))
        except Exception as error:  # a truncated or foreign file: say which, not the zip library's words
            if name == RunDirectory.LAST_PENDING:  # an interrupted commit's file; the committed one follows
                continue
            raise TrainingError(f"{run.file(name)} cannot be read ({type(error).__name__}: {error}); the "
                                "checkpoint is damaged. Restore it, or remove "
                                f"{run.file(RunDirectory.STATE)} to start the run over.") from error
        if int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == iterations:
            if name == RunDirectory.LAST_PENDING:
                os.replace(run.file(RunDirectory.LAST_PENDING), run.file(RunDirectory.LAST))
            return
    raise TrainingError(f"{run.path}: no checkpoint matches the saved state ({iterations} steps); "
                        f"the run cannot be resumed. Remove {run.file(RunDirectory.STATE)} to start over.")


def copy_checkpoint(run: RunDirectory, source: str, target: str) -> None:
    """Copies the checkpoint `source` of the run directory to `target`, atomically."""
    with open(run.file(source), "rb") as handle:
        atomic_write_bytes(run.file(target), handle.read())


def complete_best_checkpoint(run: RunDirectory, state: dict) -> None:
    """Makes `best.keras` the committed last epoch's checkpoint when the state records that epoch as best.

    `best.keras` is written only after `state.json` has recorded its epoch,
    from `last.keras`, so it is never newer than the state; called again on
    resume, it finishes a commit that was interrupted before the copy.
    """
    if state.get("best_epoch") is not None and state["best_epoch"] == state["epochs_completed"]:
        copy_checkpoint(run, RunDirectory.LAST, RunDirectory.BEST)


def train(config: RunConfig, log: Callable[[str], None] = print) -> TrainResult:
    """Runs (or resumes) the training run of `config`; see `RunDirectory` for its files.

    A model that takes frame vectors (the DCASE 2020 autoencoder) runs the
    normal-only autoencoder protocol instead (`pump_keras.training.autoencoder`),
    and an image model under `data.protocol="normal_only"` our machine-id
    method (`pump_keras.training.id_embedding`).
    """
    setup.configure_runtime(config.train)
    if registry.model_inputs(config.model.name) == "frames":
        result, files, trained = train_autoencoders(config, synthetic_data_dir, log)
        return TrainResult(config.run_dir, trained * config.train.epochs, 0, result, files)
    if config.data.protocol == "normal_only":
        result, files, epochs_run = train_id_embedding(config, synthetic_data_dir, log)
        return TrainResult(config.run_dir, epochs_run, config.train.epochs - epochs_run, result, files)
    strategy = setup.make_strategy(config.train)
    allocator = setup.cpu_allocator_in_use()
    if allocator != config.train.cpu_allocator:
        log(f"Note: TensorFlow's runtime started before this run, with its {allocator} CPU allocator, "
            f"not the configured {config.train.cpu_allocator!r}; results are the same, only the speed "
            "differs (train first in a fresh process to get it).")
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        with custom_loop.worker_loss_as_error(config.train):
            return _train_under(strategy, config, log)
    return _train_under(strategy, config, log)


def agree_on_resume_epoch(strategy: tf.distribute.Strategy, config: RunConfig, epochs_completed: int) -> None:
    """Checks that every worker of a multi-worker run resumes after the same epoch (a collective).

    Each worker resumes from its own copy of the run; workers that have
    completed different epochs would train in lockstep on different epochs
    (different data order and learning rate) and end with different models.

    Raises:
        TrainingError: the workers' saved states differ; every worker raises it.
    """
    completed = custom_loop.gather_tasks(strategy, epochs_completed)
    if len(set(completed.values())) == 1:
        return
    has_chief = any(task_type == "chief" for task_type, _ in completed)
    folders = {task: setup.task_run_dir(config.run_dir, *task, has_chief) for task in completed}
    listed = ", ".join(f"{task_type} {task_id} ({os.path.join(folders[task_type, task_id], RunDirectory.STATE)}): "
                       f"{epochs}" for (task_type, task_id), epochs in sorted(completed.items()))
    ahead = max(completed, key=completed.get)
    raise TrainingError(
        f"The workers have completed different numbers of epochs ({listed}); resuming them would train "
        "different models. Nothing was changed. Every worker holds the same model after an epoch, so copy "
        f"the run directory that is furthest ({folders[ahead]}) over the others, or start over in new run "
        "directories.")


def _train_under(strategy: tf.distribute.Strategy, config: RunConfig, log: Callable[[str], None]) -> TrainResult:
    """`train` once the runtime and the strategy are set up."""
    multiworker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    run = RunDirectory(setup.worker_run_dir(config.run_dir, strategy))
    resuming = run.check(config)
    data_config, splits = _checked_splits(config, run, resuming, log)
    steps_per_epoch = math.ceil(len(splits["train"]) / data_config.batch_size)
    with strategy.scope():
        model = setup.build_model(config)
        recipe.compile_model(model, config.train, steps_per_epoch)
    state = run.read_state() if resuming else None
    if multiworker:
        agree_on_resume_epoch(strategy, config, state["epochs_completed"] if state else 0)
    state = _initial_state(model, state, config, data_config, splits, run, steps_per_epoch, log)
    if not resuming:
        os.makedirs(run.path, exist_ok=True)
        run.write_config(config)  # then the manifest: a resume rewrites a missing one identically
        write_manifest(run.file(RunDirectory.MANIFEST), splits)
    resumed_from = state["epochs_completed"]

    cache_dir = run.file(RunDirectory.CACHE)
    evaluation = {name: recipe.evaluation_batches(make_dataset(
        splits[name], config.features, data_config, training=False, cache_dir=cache_dir, name=name))
        for name in ("val", "test") if splits.get(name)}
    _run_epochs(model, strategy, config, data_config, splits, evaluation, state, run)

    if config.train.checkpoint_metric == "last":
        copy_checkpoint(run, RunDirectory.LAST, RunDirectory.BEST)
    model.load_weights(run.file(RunDirectory.BEST))
    if config.train.verbose:
        log(f"Evaluating {RunDirectory.BEST} (epoch {state['best_epoch']}) on "
            + " and ".join(f"{len(splits[name])} {name}" for name in evaluation) + " clips...")
    predict = functools.partial(custom_loop.predict_logits, strategy=strategy) if multiworker else predict_scores
    result = evaluate_model(model, evaluation, splits, predict,
                            baseline_test_scores=baseline_scores(splits, config, run, log),
                            eval_config=config.evaluation)
    result["best_epoch"] = state["best_epoch"]
    result["checkpoint_metric"] = config.train.checkpoint_metric
    run.write_json(RunDirectory.THRESHOLD, threshold_record(result["threshold_logit"], config.evaluation))
    run.write_json(RunDirectory.METRICS, result)
    files = {name: run.file(name) for name in (
        RunDirectory.CONFIG, RunDirectory.MANIFEST, RunDirectory.BEST, RunDirectory.LAST, RunDirectory.HISTORY,
        RunDirectory.LOGS, RunDirectory.METRICS, RunDirectory.THRESHOLD)}
    return TrainResult(run.path, state["epochs_completed"] - resumed_from, resumed_from, result, files)


def _checked_splits(config: RunConfig, run: RunDirectory, resuming: bool, log: Callable[[str], None]):
    """The run's data config (its own synthetic recordings when it names no data) and its checked splits.

    A new run's data is checked before anything is recorded, so a corrected
    command is not refused as "another config".
    """
    data_config = config.data
    if data_config.data_dir is None and data_config.split_file is None:
        data_config = replace(data_config, data_dir=synthetic_data_dir(config, run, log))
    splits = prepare_splits(data_config, config.features, run.path if resuming else None)
    manifest = run.file(RunDirectory.MANIFEST) if resuming else data_config.split_file
    check_manifest_paths(splits, data_config.data_dir, manifest)
    if resuming:  # a new run's files were checked as they were split
        check_audio_headers([r for records in splits.values() for r in records], config.features.sample_rate)
    log(describe_splits(splits))
    check_splits(splits, data_config.batch_size)
    return data_config, splits


def _initial_state(model: keras.Model, state: Optional[dict], config: RunConfig, data_config, splits: dict,
                   run: RunDirectory, steps_per_epoch: int, log: Callable[[str], None]) -> dict:
    """Restores a resumed run's checkpoint into `model`, or initialises a new one; returns the state."""
    if state is not None:
        state.setdefault("best_value", state.pop("best_val_loss", None))  # runs written before checkpoint_metric
        restore_checkpoint(model, run, state["epochs_completed"] * steps_per_epoch)
        if config.train.checkpoint_metric != "last":
            complete_best_checkpoint(run, state)
        log(f"Resuming {run.path} after epoch {state['epochs_completed']} of {config.train.epochs}.")
        return state
    described = setup.initialize_from(model, config.train.init_from, splits)
    if described:
        log(f"Initialised from {described}.")
    elif setup.fit_input_statistics(model, (images for images, _ in make_dataset(
            splits["train"], config.features, replace(data_config, cache=False), training=False))):
        log("Input standardisation fitted on the training split.")
    return {"epochs_completed": 0, "history": [], "best_value": None, "best_epoch": None}


def _run_epochs(model: keras.Model, strategy: tf.distribute.Strategy, config: RunConfig, data_config,
                splits: dict, evaluation: dict, state: dict, run: RunDirectory) -> None:
    """Trains the remaining epochs, committing checkpoint and state after each (`state` is updated)."""
    multiworker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    cache_dir = run.file(RunDirectory.CACHE)
    weights = recipe.class_weights([r.label for r in splits["train"]], config.train.class_balance)
    callbacks = [_LearningRateLogger(), keras.callbacks.TensorBoard(run.file(RunDirectory.LOGS))]
    if config.train.verbose:
        callbacks.append(_RunProgress(config.train.epochs))

    for epoch in range(state["epochs_completed"], config.train.epochs):
        setup.reseed(model, config.train.seed, epoch)
        epoch_data = replace(data_config, shuffle_seed=recipe.derived_seed(config.train.seed, epoch, 0))
        batches = recipe.training_batches(
            make_dataset(splits["train"], config.features, epoch_data, training=True,
                         cache_dir=cache_dir, name="train"),
            config.train, weights, epoch, fixed_channels=int(config.features.frequency_channel))
        if multiworker:
            row = {"epoch": epoch + 1, **custom_loop.run_epoch(
                model, strategy, batches, evaluation["val"], epoch, config.train)}
            write_scalars(run.file(RunDirectory.LOGS), row)
        else:
            history = model.fit(batches, validation_data=evaluation["val"], initial_epoch=epoch,
                                epochs=epoch + 1, callbacks=callbacks, verbose=config.train.verbose)
            row = {"epoch": epoch + 1, **{k: float(v[-1]) for k, v in history.history.items()}}
        state["history"].append(row)
        state["epochs_completed"] = epoch + 1
        if improves(row, state["best_value"], config.train.checkpoint_metric):
            state["best_value"] = row.get(config.train.checkpoint_metric, epoch + 1)  # "last": the epoch
            state["best_epoch"] = epoch + 1
        # Commit order: the new checkpoint beside the old, the state, then the
        # swap, then best.keras (never ahead of the state); `restore_checkpoint`
        # and `complete_best_checkpoint` finish or discard a half-done commit.
        run.save_model(model, RunDirectory.LAST_PENDING)
        run.write_history(state["history"])
        run.write_json(RunDirectory.STATE, state)
        os.replace(run.file(RunDirectory.LAST_PENDING), run.file(RunDirectory.LAST))
        if config.train.checkpoint_metric != "last":  # "last" copies last.keras once, below
            complete_best_checkpoint(run, state)
