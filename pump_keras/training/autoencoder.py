"""The DCASE 2020 baseline's protocol: one autoencoder per machine and id, trained on normal clips only.

For each machine (`machine_group`: "pump/id_00") of the training split, a
`"frames"` model (`dcase2020_ae`) learns to reconstruct the frame vectors
(`pump_keras.audio.frames`) of that machine's normal training clips. A clip's
anomaly score is the mean, over its vectors, of each vector's mean squared
reconstruction error; each machine's decision threshold is chosen on its
validation clips (normal only) by `evaluation.threshold_criterion` (`"gamma"`
or `"fpr"`). The run directory gets one `.keras` file per machine under
`autoencoders/`, `metrics.json` (its `test` block averages the machines, as
DCASE tables do), `threshold.json` and the DCASE result files.

Resuming works machine by machine: a machine whose model was saved is not
trained again.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from pump_keras.audio.features import wav_bytes_to_waveform
from pump_keras.audio.frames import waveform_to_vectors
from pump_keras.config import FeatureConfig, RunConfig
from pump_keras.errors import TrainingError
from pump_keras.models import load_model
from pump_keras.models.autoencoder import reconstruction_errors
from pump_keras.run_dir import RunDirectory
from pump_keras.training import normal_only, recipe, setup
from pump_keras.training.normal_only import write_outputs

SCORE_NAME = "mean squared reconstruction error"


def clip_vectors(path: str, features: FeatureConfig) -> np.ndarray:
    """The frame vectors of one WAV file, `[vectors, n_mels * context_frames]` float32."""
    waveform = wav_bytes_to_waveform(tf.io.read_file(path), features, source=path)
    return waveform_to_vectors(waveform, features.sample_rate, features.n_fft, features.hop_length,
                               features.n_mels, features.context_frames).numpy()


def clip_scores(model: keras.Model, vectors: Sequence[np.ndarray], batch_size: int) -> np.ndarray:
    """Each clip's anomaly score: the mean over its vectors of their mean squared reconstruction error.

    The model runs eagerly in chunks of `batch_size` vectors: a dense
    network this small gains nothing from a traced predict function, and
    one per machine's model would be traced anew each time.
    """
    stacked = np.concatenate(vectors) if vectors else np.zeros((0, model.input_shape[-1]), np.float32)
    errors = np.concatenate([np.zeros(0, np.float32)] + [
        keras.ops.convert_to_numpy(reconstruction_errors(chunk, model(chunk, training=False)))
        for chunk in np.array_split(stacked, int(np.ceil(len(stacked) / batch_size))) if len(chunk)])
    bounds = np.cumsum([0] + [len(v) for v in vectors])
    return np.array([errors[start:stop].mean() for start, stop in zip(bounds[:-1], bounds[1:])], np.float64)


def model_file(group: str) -> str:
    """The run-relative path of machine `group`'s autoencoder ("pump/id_00" -> autoencoders/pump_id_00.keras)."""
    return os.path.join(RunDirectory.AUTOENCODERS, group.replace("/", "_") + ".keras")


def train_autoencoders(config: RunConfig, synthetic_data_dir: Callable, log: Callable[[str], None] = print):
    """Runs (or resumes) the run of `config`; returns `(metrics, files, machines trained now)`.

    `synthetic_data_dir(config, run, log)` gives the run's own recordings
    when the config names no data.
    """
    check_config(config)
    run, _, _, groups, _ = normal_only.prepare_run(config, synthetic_data_dir, log)
    os.makedirs(run.file(RunDirectory.AUTOENCODERS), exist_ok=True)
    scores: Dict[str, Dict[str, np.ndarray]] = {"val": {}, "test": {}}
    history: List[dict] = []
    trained = 0
    for group in sorted(groups["train"]):
        vectors = {name: [clip_vectors(r.path, config.features) for r in groups[name].get(group, [])]
                   for name in ("train", "val", "test")}
        path = run.file(model_file(group))
        if os.path.exists(path):
            log(f"{group}: {model_file(group)} is there (resumed run); not trained again.")
            model = load_model(path)
        else:
            model, rows = _fit(config, vectors, group, log)
            run.save_model(model, model_file(group))
            history += rows
            trained += 1
        for name in scores:
            scores[name][group] = clip_scores(model, vectors[name], config.data.batch_size)
    if history:  # the machines trained now, after those a resumed run had trained before
        trained_now = {row["machine"] for row in history}
        run.write_history([row for row in run.read_history() if row["machine"] not in trained_now] + history)
    result = write_outputs(run, config, groups, scores, SCORE_NAME)
    files = {name: run.file(name) for name in (
        RunDirectory.CONFIG, RunDirectory.MANIFEST, RunDirectory.AUTOENCODERS, RunDirectory.HISTORY,
        RunDirectory.METRICS, RunDirectory.THRESHOLD, RunDirectory.DCASE_RESULTS)}
    return result, files, trained


def _fit(config: RunConfig, vectors: dict, group: str, log: Callable[[str], None]):
    """One machine's autoencoder, trained on its training vectors; returns it and its history rows."""
    train = np.concatenate(vectors["train"]).astype(np.float32)
    val = np.concatenate(vectors["val"]).astype(np.float32) if vectors["val"] else None
    if not len(train):
        raise TrainingError(f"{group}: its training clips are shorter than {config.features.context_frames} "
                            "frames and give no vector to train on.")
    keras.utils.set_random_seed(recipe.derived_seed(config.train.seed, *map(ord, group)))
    model = setup.build_model(config)
    steps = int(np.ceil(len(train) / config.data.batch_size))
    model.compile(optimizer=recipe.make_optimizer(config.train, steps), loss="mean_squared_error",
                  jit_compile=config.train.jit_compile)
    log(f"{group}: training on {len(vectors['train'])} clips ({len(train)} vectors of {train.shape[1]})...")
    fitted = model.fit(train, train, batch_size=config.data.batch_size, epochs=config.train.epochs, shuffle=True,
                       validation_data=None if val is None else (val, val), verbose=config.train.verbose)
    epochs = len(fitted.history["loss"])
    rows = [{"epoch": epoch + 1, "machine": group, **{k: float(v[epoch]) for k, v in fitted.history.items()}}
            for epoch in range(epochs)]
    return model, rows


def machine_autoencoder(run_dir: str, machine: Optional[str] = None):
    """`(autoencoder, machine, threshold, spread)` of one machine of a finished run (see `machine_threshold`)."""
    machine, entry = normal_only.machine_threshold(run_dir, machine)
    path = os.path.join(run_dir, model_file(machine))
    if not os.path.exists(path):
        raise TrainingError(f"{run_dir} holds no {model_file(machine)}: train it first (python -m pump_keras.train).")
    return load_model(path), machine, entry["threshold_score"], max(entry.get("val_score_std", 1.0), 1e-12)


def check_config(config: RunConfig) -> None:
    """Raises unless the config is one the autoencoder protocol can run (`normal_only.check_config`, and more)."""
    normal_only.check_config(config)
    if config.train.mixup_alpha or config.train.label_smoothing:
        raise TrainingError("MixUp and label smoothing are classifier recipes; the autoencoder takes neither "
                            "(set them to 0).")


__all__ = ["SCORE_NAME", "clip_vectors", "clip_scores", "model_file", "train_autoencoders", "machine_autoencoder",
           "check_config"]
