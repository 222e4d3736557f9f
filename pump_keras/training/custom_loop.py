"""A distributed custom training loop, for MultiWorkerMirroredStrategy where Keras' `fit` fails.

Keras 3's `fit` does not run under `tf.distribute.MultiWorkerMirroredStrategy`
(keras-team/keras#20585), so a multi-worker run trains its epochs here. One
call of `run_epoch` does what one `fit` epoch of the compiled model does:

batches -> shard (DATA policy) -> per replica: forward (training=True),
sample-weighted BCE over the GLOBAL batch, gradients -> all-reduced update
-> metrics; then the moving statistics are averaged over the replicas, and
a distributed validation pass reports `val_*`.

Sharding: a batch of `B` clips is split into one slice per replica (TF's
rebatching, which keeps each global batch whole across the workers), and the
DATA auto-shard policy gives every worker its own slices. Every worker runs
the same pipeline with the same seeds (shuffle, MixUp), so the slices of the
workers are disjoint and together exactly the batch: nothing is dropped or
read twice, the last partial batch included (tested).

Loss: each replica sums `weight * bce` over its slice and divides by the
global number of clips in that step (all-reduced, so a partial last batch is
a mean over its real size), and the optimizer sums the replicas' gradients:
the step's gradient is that of `fit`'s sample-weighted mean over the batch.
A replica left without clips by a small last batch skips the forward pass
(batch statistics of nothing would be NaN) and adds zero gradients.

Moving statistics: batch normalisation updates each replica's copy of its
moving mean and variance from that replica's slice only, so after an
epoch's steps every such variable is set to its mean over the replicas;
every worker then holds the same weights, and evaluates and saves the same
model.

Prediction (`predict_logits`) is a plain forward pass on each worker:
every worker holds identical weights, so each computes every clip's logit
locally, in order, with no gathering and no collective to keep in step.
"""

from __future__ import annotations

import contextlib
import re
import time
import weakref
from typing import Dict, List, Tuple

import keras
import numpy as np
import tensorflow as tf

from pump_keras.config import TrainConfig
from pump_keras.errors import WorkerLostError
from pump_keras.training import recipe

# What a collective raises when a peer is gone: TensorFlow's health check
# aborts the collectives (Unavailable), or one times out (DeadlineExceeded).
COLLECTIVE_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                     tf.errors.AbortedError, tf.errors.CancelledError)

TASK_TYPES = ("chief", "worker")


def gather_tasks(strategy: tf.distribute.Strategy, value: int) -> Dict[Tuple[str, int], int]:
    """`value` of every task of the cluster, by `(task_type, task_id)`.

    A collective: every worker must call it, and each gets the same answer.
    """
    resolver = strategy.cluster_resolver
    row = tf.constant([[TASK_TYPES.index(resolver.task_type), resolver.task_id, value]], tf.float32)
    per_replica = strategy.experimental_distribute_values_from_function(lambda context: row)
    rows = np.asarray(strategy.gather(per_replica, axis=0)).round().astype(int)
    return {(TASK_TYPES[kind], task_id): int(got) for kind, task_id, got in rows}


@contextlib.contextmanager
def worker_loss_as_error(config: TrainConfig):
    """Turns the errors of a collective whose peers are gone into a `WorkerLostError` that says what to do."""
    try:
        yield
    except COLLECTIVE_ERRORS as error:
        # TensorFlow prefixes the op's name in braces; the first line after it says what happened.
        reason = re.sub(r"^\{\{.*?\}\}\s*", "", error.message or "").strip().splitlines()
        reason = reason[0].rstrip(":") if reason else type(error).__name__
        limit = f"{config.collective_timeout_s:g} s" if config.collective_timeout_s else "no limit"
        raise WorkerLostError(
            f"Lost contact with another worker ({reason}; train.collective_timeout_s: {limit}). "
            "This worker stopped; its run directory keeps the last completed epoch. "
            "Run the same command on every worker again to resume.") from error


def distribute(strategy: tf.distribute.Strategy, dataset: tf.data.Dataset):
    """`dataset` (batches of the global batch size) split over the strategy's replicas.

    The DATA policy shards the (rebatched) elements, not files: the pipeline
    starts from in-memory file names, which FILE sharding cannot split, and
    AUTO would fall back to DATA with a warning.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


def per_example_loss_fn(loss: keras.losses.Loss) -> keras.losses.Loss:
    """The compiled loss, unreduced: one value per clip (label smoothing and all)."""
    if not isinstance(loss, keras.losses.Loss):
        raise ValueError(f"The custom loop needs a compiled keras.losses.Loss object, got {loss!r}.")
    return type(loss).from_config({**loss.get_config(), "reduction": None})


def _is_replica_statistic(variable) -> bool:
    """A float non-trainable mirrored variable updated per replica (moving mean/variance)."""
    value = getattr(variable, "value", variable)
    return (isinstance(value, tf.distribute.DistributedValues)
            and value.aggregation == tf.VariableAggregation.NONE
            and value.dtype.is_floating)


class _EpochSteps:
    """The traced steps and the metrics of one model under one strategy, kept across epochs.

    The metrics are new instances of the recipe's compiled ones (`loss`, then
    `recipe.make_metrics()`: `auc`, `accuracy`), one set for training and one
    for validation, made in the strategy's scope so that every replica
    accumulates its own share and a read sums them over all workers. As in
    `fit`, the metrics are unweighted and the loss sample-weighted. The
    functions hold the model through a weak reference, so the module cache
    does not keep models alive.
    """

    def __init__(self, model: keras.Model, strategy: tf.distribute.Strategy):
        self.strategy = strategy
        model_ref = weakref.ref(model)
        loss_fn = per_example_loss_fn(model.loss)
        with strategy.scope():
            self.train_metrics = [keras.metrics.Mean(name="loss"), *recipe.make_metrics()]
            self.val_metrics = [keras.metrics.Mean(name="loss"), *recipe.make_metrics()]
        train_loss, *train_others = self.train_metrics
        val_loss, *val_others = self.val_metrics

        def regularization(model):
            return tf.add_n([tf.cast(v, tf.float32) for v in model.losses]) if model.losses else 0.0

        def train_replica(images, labels, sample_weights):
            model = model_ref()
            variables = model.trainable_variables
            count = tf.shape(labels)[0]
            global_count = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, count)

            def forward():
                with tf.GradientTape() as tape:
                    logits = tf.cast(model(images, training=True), tf.float32)
                    losses = tf.cast(loss_fn(labels, logits), tf.float32) * tf.cast(sample_weights, tf.float32)
                    penalty = regularization(model)
                    step_loss = tf.nn.compute_average_loss(losses, global_batch_size=global_count)
                    step_loss += tf.nn.scale_regularization_loss(penalty)
                    scaled = model.optimizer.scale_loss(step_loss)
                gradients = tape.gradient(scaled, variables)
                gradients = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
                             for g, v in zip(gradients, variables)]
                return gradients, logits, losses + penalty

            def empty():
                return ([tf.zeros_like(v) for v in variables], tf.zeros((0, 1), tf.float32),
                        tf.zeros((0,), tf.float32))

            gradients, logits, losses = tf.cond(count > 0, forward, empty)
            model.optimizer.apply_gradients(zip(gradients, variables))
            train_loss.update_state(losses)
            for metric in train_others:
                metric.update_state(labels, logits)

        def val_replica(images, labels):
            model = model_ref()
            logits = tf.cast(model(images, training=False), tf.float32)
            val_loss.update_state(tf.cast(loss_fn(labels, logits), tf.float32) + regularization(model))
            for metric in val_others:
                metric.update_state(labels, logits)

        def average_statistics():
            context = tf.distribute.get_replica_context()
            for variable in model_ref().non_trainable_variables:
                if _is_replica_statistic(variable):
                    local = tf.identity(variable.value)  # this replica's copy, on its device
                    variable.assign(context.all_reduce(tf.distribute.ReduceOp.MEAN, local))

        self.train_step = tf.function(lambda batch: strategy.run(train_replica, args=batch),
                                      reduce_retracing=True)
        self.val_step = tf.function(lambda batch: strategy.run(val_replica, args=batch),
                                    reduce_retracing=True)
        self.sync_statistics = tf.function(lambda: strategy.run(average_statistics))


_STEPS: "weakref.WeakKeyDictionary[keras.Model, _EpochSteps]" = weakref.WeakKeyDictionary()


def epoch_steps(model: keras.Model, strategy: tf.distribute.Strategy) -> _EpochSteps:
    """The cached steps of `model` under `strategy` (made on first use, so traced once per run)."""
    steps = _STEPS.get(model)
    if steps is None or steps.strategy is not strategy:
        steps = _STEPS[model] = _EpochSteps(model, strategy)
    return steps


def _results(metrics: List[keras.metrics.Metric], prefix: str = "") -> Dict[str, float]:
    """Metric results over all replicas and workers (read in cross-replica context)."""
    return {prefix + m.name: float(keras.ops.convert_to_numpy(m.result())) for m in metrics}


def run_epoch(model: keras.Model, strategy: tf.distribute.Strategy, train_batches: tf.data.Dataset,
              val_batches: tf.data.Dataset, epoch: int, config: TrainConfig) -> dict:
    """Trains one epoch of the compiled `model` under `strategy`; returns the epoch's logs like `fit`.

    `train_batches` yields `(images, labels [B, 1], sample_weights [B])` and
    `val_batches` `(images, labels [B, 1])`, `B` being the global batch size
    (the last batch may be smaller). The logs: `loss, auc, accuracy`
    (training, the loss sample-weighted), `val_loss, val_auc, val_accuracy`
    (all validation clips, unweighted) and the `learning_rate` at the end.
    Every worker must call this with the same data (collectives run in step).
    """
    started = time.perf_counter()
    steps = epoch_steps(model, strategy)
    for metric in steps.train_metrics + steps.val_metrics:
        metric.reset_state()
    # Each step is traced once, for any batch size (the last, partial batch
    # included), on the first epoch; later calls of any size reuse that trace.
    train_data = distribute(strategy, train_batches)
    steps.train_step.get_concrete_function(train_data.element_spec)
    for batch in train_data:
        steps.train_step(batch)
    steps.sync_statistics()
    val_data = distribute(strategy, val_batches)
    steps.val_step.get_concrete_function(val_data.element_spec)
    for batch in val_data:
        steps.val_step(batch)
    logs = {**_results(steps.train_metrics), **_results(steps.val_metrics, "val_")}
    logs["learning_rate"] = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    if config.verbose:
        shown = " - ".join(f"{name}: {value:.4g}" for name, value in logs.items())
        print(f"Epoch {epoch + 1}/{config.epochs} - {time.perf_counter() - started:.0f}s - {shown}", flush=True)
    return logs


_FORWARD: "weakref.WeakKeyDictionary[keras.Model, tf.types.experimental.GenericFunction]" = (
    weakref.WeakKeyDictionary())


def predict_logits(model: keras.Model, dataset: tf.data.Dataset, strategy: tf.distribute.Strategy) -> np.ndarray:
    """Logits of every clip of an unshuffled dataset of `(images, labels)`, in record order.

    A plain forward pass on this worker, outside `strategy.run` (so
    `strategy` is not used): the workers hold identical weights, so each
    computes all logits itself; nothing is sharded, gathered or reordered,
    and no collective has to run in step. Evaluation sets are small; the
    cost is that every worker predicts every clip.
    """
    forward = _FORWARD.get(model)
    if forward is None:
        model_ref = weakref.ref(model)
        forward = _FORWARD[model] = tf.function(lambda images: model_ref()(images, training=False),
                                                reduce_retracing=True)
    logits = [np.asarray(forward(images), dtype=np.float64).reshape(-1) for images, _ in dataset]
    return np.concatenate(logits) if logits else np.zeros((0,), np.float64)
