"""Runtime setup of a run: seeds and determinism, precision, strategy, the model and its initial weights."""

from __future__ import annotations

import inspect
import os
from typing import Mapping, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from pump_keras.config import MIXED_PRECISION, PAPER_MODEL, ModelConfig, RunConfig, TrainConfig
from pump_keras.data.split import leaked_examples, read_manifest
from pump_keras.errors import InitError
from pump_keras.layers.standardization import row_standardization, with_row_standardization
from pump_keras.models import build, registry
from pump_keras.models.efficientnet_v2 import load_keras_application_weights
from pump_keras.run_dir import RunDirectory
from pump_keras.training.cpu_allocator import select_cpu_allocator
from pump_keras.training.recipe import derived_seed


def configure_runtime(config: TrainConfig) -> None:
    """Chooses the CPU allocator, seeds every generator, sets determinism and the precision policy."""
    select_cpu_allocator(config.cpu_allocator)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    policy = MIXED_PRECISION.get(config.mixed_precision, "float32")
    keras.mixed_precision.set_global_policy(policy)


def cpu_allocator_in_use() -> str:
    """`"bfc"` or `"default"`: the host allocator TensorFlow's runtime runs with (starts the runtime)."""
    # Only BFC accounts for a tiny tensor (one 256-byte chunk). TensorFlow's
    # own allocator either keeps no statistics (raises) or, in builds that
    # route large buffers through a BFC pool of their own, counts large
    # buffers only; so a large probe cannot tell the two apart.
    try:
        before = tf.config.experimental.get_memory_info("CPU:0")["current"]
        probe = tf.fill([3], 1.0)
        after = tf.config.experimental.get_memory_info("CPU:0")["current"]
        del probe
    except (ValueError, RuntimeError, KeyError):
        return "default"
    return "bfc" if after > before else "default"


def make_strategy(config: TrainConfig) -> tf.distribute.Strategy:
    """The tf.distribute strategy of `config.strategy`.

    `auto`: all local GPUs mirrored when there are several, else the default
    (one device). `mirrored`: all local GPUs, or all logical CPU devices when
    there is no GPU. `multiworker`: MultiWorkerMirroredStrategy from `TF_CONFIG`.
    """
    if config.strategy == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("strategy 'multiworker' needs TF_CONFIG naming the cluster and this worker's task.")
        # Before anything lists devices: that starts the runtime, and the
        # collective ops of this strategy must be configured before it starts.
        options = tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=config.collective_timeout_s or None)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    gpus = tf.config.list_logical_devices("GPU")
    if config.strategy == "mirrored" or (config.strategy == "auto" and len(gpus) > 1):
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices=devices)
    return tf.distribute.get_strategy()


def task_run_dir(run_dir: str, task_type: Optional[str], task_id: int, has_chief: bool) -> str:
    """The run directory of one task of a cluster: `run_dir` for the chief, else `run_dir.TYPE-N`."""
    if task_type in (None, "chief") or (task_type == "worker" and task_id == 0 and not has_chief):
        return run_dir
    return f"{run_dir}.{task_type}-{task_id}"


def worker_run_dir(run_dir: str, strategy: tf.distribute.Strategy) -> str:
    """The run directory this process writes: `run_dir` on the chief, `run_dir.worker-N` on other workers.

    Every multi-worker process computes the same model; only the chief's
    files are the run's, the others keep their own copy (for their resume).
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return run_dir
    return task_run_dir(run_dir, resolver.task_type, resolver.task_id,
                        "chief" in resolver.cluster_spec().as_dict())


def model_options(model: ModelConfig, input_shape) -> dict:
    """Builder keyword arguments: the chosen model's own options (`ModelConfig`) and the input shape."""
    if model.name not in registry.available_models():
        raise ValueError(f"Unknown model {model.name!r}; available: {', '.join(registry.available_models())}.")
    accepted = inspect.signature(registry.builder(model.name)).parameters
    options = model.builder_options()
    unknown = sorted(set(options) - set(accepted) | ({"input_shape"} & set(options)))
    if unknown:
        section = f"model.{model.name}" if model.name == PAPER_MODEL else f"model.options.{model.name}"
        raise ValueError(f"Model {model.name!r} has no option {unknown[0]!r} ({section}.{unknown[0]}); "
                         f"its options: {', '.join(p for p in accepted if p != 'input_shape')}.")
    return {"input_shape": tuple(input_shape), **options}


def build_model(config: RunConfig) -> keras.Model:
    """The run's model, built from its config (inside the caller's strategy scope)."""
    frames = registry.model_inputs(config.model.name) == "frames"
    shape = config.features.vector_shape if frames else config.features.input_shape
    model = build(config.model.name, **model_options(config.model, shape))
    if config.model.input_standardization and not frames:
        model = with_row_standardization(model)
    return model


def fit_input_statistics(model: keras.Model, images) -> bool:
    """Sets the model's `RowStandardization` from training image batches; False if it has none."""
    layer = row_standardization(model)
    if layer is None:
        return False
    layer.set_statistics(images)
    return True


def reseed(model: keras.Model, seed: int, epoch: int) -> None:
    """Sets every seed generator of `model` (dropout, stochastic depth) from the seed and epoch.

    An epoch's randomness then depends on the run seed and the epoch alone,
    so a resumed run draws what an uninterrupted one draws.
    """
    states = [v for v in model.variables if v.path.endswith("seed_generator_state")]
    for index, state in enumerate(states):
        state.assign(np.array([derived_seed(seed, epoch, 2, index), 0], dtype=state.dtype))


def source_model_path(source: str) -> str:
    """The `.keras` file an `init_from` names: the file itself, or a run's best (else last) model."""
    if os.path.isdir(source):
        for name in (RunDirectory.BEST, RunDirectory.LAST):
            candidate = os.path.join(source, name)
            if os.path.exists(candidate):
                return candidate
        raise InitError(f"init_from {source} is a folder without best.keras or last.keras.")
    if not os.path.exists(source):
        raise InitError(f"init_from {source} does not exist.")
    return source


def source_manifest_path(source: str) -> Optional[str]:
    """The split manifest of the run an `init_from` comes from (its folder's `split.csv`), if there is one."""

    folder = source if os.path.isdir(source) else os.path.dirname(os.path.abspath(source))
    manifest = os.path.join(folder, RunDirectory.MANIFEST)
    return manifest if os.path.isfile(manifest) else None


def check_no_split_leak(source: str, splits: Mapping[str, Sequence]) -> None:
    """Raises if the source run learnt from or selected on a val or test recording of `splits`.

    Refused: a test recording here that was in the source's train or val
    split, and a val recording here that was in the source's train split.
    A val recording that was the source's val too keeps its role (the same
    split seed and ratios give that), so it is allowed. Recordings are
    compared by clip key, so one recording at another SNR counts as the
    same. Sources without a manifest beside them (a bare `.keras` file,
    Keras weights) are not checked.
    """
    manifest = source_manifest_path(source)
    if manifest is None:
        return
    source_splits = read_manifest(manifest)
    seen = {r.clip_key: name for name in ("train", "val") for r in source_splits[name]}
    forbidden = {"val": ("train",), "test": ("train", "val")}
    leaked = sorted({(r.clip_key, name, seen[r.clip_key]) for name in ("val", "test")
                     for r in splits.get(name, []) if seen.get(r.clip_key) in forbidden[name]})
    if not leaked:
        return
    examples = leaked_examples([f"{key} ({ours} here, {theirs} there)" for key, ours, theirs in leaked])
    raise InitError(
        f"init_from {source}: {len(leaked)} recording(s) of this run's val/test splits were in the "
        f"train/val splits of the source run ({manifest}), so its weights learnt from or were "
        f"selected on them: "
        f"{examples}. Split both runs with the same data.split_seed and data.split_ratios "
        "(a recording's split depends only on those and its clip key), or start without init_from."
    )


def initialize_from(model: keras.Model, source: Optional[str],
                    splits: Optional[Mapping[str, Sequence]] = None) -> Optional[str]:
    """Copies weights into `model` from another run, a `.keras` file or a Keras EfficientNetV2S weights file.

    With `splits` (this run's), first checks that the source run did not
    learn from this run's val/test recordings (`check_no_split_leak`).
    Returns a one-line description, or None without a source.

    Raises:
        InitError: the source's architecture does not match (first mismatch
            named), or the source run has seen this run's val/test recordings.
    """
    if not source:
        return None
    path = source_model_path(source)
    if splits is not None:
        check_no_split_leak(source, splits)
    if not path.endswith(".keras"):
        try:
            counts = load_keras_application_weights(model, path)
        except (ValueError, OSError) as error:
            raise InitError(f"init_from {path}: cannot load it as keras.applications EfficientNetV2S "
                            f"weights into {model.name}: {error}") from error
        return f"Keras EfficientNetV2S weights from {path}: {counts['loaded']} layers loaded, {counts['skipped']} skipped"
    try:
        other = keras.saving.load_model(path, compile=False)
    except Exception as error:  # a corrupt or foreign file: say which
        raise InitError(f"init_from {path}: cannot load the model ({type(error).__name__}: {error}).") from error
    ours, theirs = model.weights, other.weights
    for index, (a, b) in enumerate(zip(ours, theirs)):
        if tuple(a.shape) != tuple(b.shape):
            raise InitError(f"init_from {path}: architecture differs from {model.name}: weight {index} "
                            f"{a.path} has shape {tuple(a.shape)}, the source's {b.path} {tuple(b.shape)}.")
    if len(ours) != len(theirs):
        raise InitError(f"init_from {path}: architecture differs from {model.name}: "
                        f"{len(theirs)} weights in the source, {len(ours)} here.")
    model.set_weights(other.get_weights())
    return f"weights of {path}"
