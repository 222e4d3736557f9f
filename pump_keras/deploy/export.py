"""Versioned SavedModels that TF Serving serves from raw WAV bytes: `python -m pump_keras.export`.

    python -m pump_keras.export --run-dir runs/quick --out saved_models/pump_anomaly [--version N]

writes `saved_models/pump_anomaly/N/` (TF Serving's model base path holds
numbered versions). Signatures:

* `serving_default`: `wav_bytes` (a batch of whole WAV files, `tf.string`) ->
  `anomaly_score` (probability), `is_anomaly` (at the saved threshold) and
  `logit`. Decoding (PCM and WAVE_FORMAT_EXTENSIBLE), channel choice, feature
  and image run in the graph: the training pipeline's in-graph path
  (`features.wav_bytes_to_image`).
* `serving_waveforms`: `waveforms` `[batch, samples]` float32 in [-1, 1] and
  `sample_rate` (int32) -> the same outputs.
* `serving_images`: ready `[batch, N, N, C]` images in [0, 1] -> the same outputs.

The threshold is the run's one threshold, chosen on validation
(`RUN/threshold.json`: written at the end of training, rewritten by
`pump_keras.evaluate` with its criterion; runs trained before that file
existed fall back to `RUN/metrics.json`), else
0.5 with a warning. `assets.extra/pump_keras.json` records it with the
feature config, the training clip length and sample rate (`clip`) and the
model's provenance (`provenance`: data source, synthetic or not, test metrics
beside the baseline, package version, commit); see `pump_keras.deploy.model_info`.
`assets.extra/tf_serving_warmup_requests` holds one request with a clip of
the training length, which TF Serving replays on loading. The version folder
appears whole or not at all. A model trained on synthetic recordings is
never exported into a model folder that holds a model trained on real data
(it would become the version TF Serving serves).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tempfile
import time
import warnings
from typing import Callable, Optional, Tuple

import keras
import tensorflow as tf

from pump_keras import __version__
from pump_keras.audio.decode import check
from pump_keras.audio.features import to_backbone_channels, wav_bytes_to_image, wav_bytes_to_waveform, waveform_to_image
from pump_keras.audio.frames import waveform_to_vectors
from pump_keras.audio.wavfile import read_wav_header
from pump_keras.config import DataConfig, FeatureConfig, RunConfig, to_dict
from pump_keras.data.split import ManifestError, read_manifest
from pump_keras.deploy.model_info import METADATA_NAME, ModelInfoError, is_synthetic, read_model_info
from pump_keras.deploy.serving_warmup import WARMUP_FILE, warmup_clip, write_warmup_file
from pump_keras.errors import ExportError, TrainingError, WavFormatError
from pump_keras.models import load_model, model_inputs
from pump_keras.models.autoencoder import reconstruction_errors
from pump_keras.run_dir import RunDirectory, load_run_config
from pump_keras.training.autoencoder import machine_autoencoder
from pump_keras.training.id_embedding import machine_scorer

Log = Callable[[str], None]
PIXEL_SLACK = 1e-6  # how far outside [0, 1] `serving_images` still takes a pixel



def _quiet(message: str) -> None:
    pass


def next_version(model_dir: str) -> int:
    """One more than the highest numeric version folder in `model_dir` (1 when none)."""
    if not os.path.isdir(model_dir):
        return 1
    versions = [int(name) for name in os.listdir(model_dir) if name.isdigit()]
    return max(versions, default=0) + 1


def remove_staging_folders(model_dir: str) -> list:
    """Removes the hidden staging folders (`.N.xxxxxxxx`) that killed exports left in `model_dir`.

    Returns the removed paths. An export into the same folder running at this
    moment would lose its staging folder and fail; exports into one model
    folder run one at a time.
    """
    if not os.path.isdir(model_dir):
        return []
    removed = []
    for name in sorted(os.listdir(model_dir)):
        version, _, suffix = name[1:].partition(".")
        path = os.path.join(model_dir, name)
        if name.startswith(".") and version.isdigit() and suffix and os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def run_threshold(run_dir: str) -> Tuple[float, str]:
    """The probability threshold of a run and where it came from."""
    for name in (RunDirectory.THRESHOLD, RunDirectory.METRICS):  # metrics.json: runs from before threshold.json
        path = os.path.join(run_dir, name)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                values = json.load(handle)
            if "threshold_probability" in values:
                return float(values["threshold_probability"]), f"{name} (chosen on validation)"
    warnings.warn(f"{run_dir} has no threshold (run pump_keras.evaluate); is_anomaly uses 0.5.")
    return 0.5, "default 0.5 (no threshold saved)"


def _outputs(model: keras.Model, images: tf.Tensor, threshold: float) -> dict:
    return _outputs_of_logits(tf.reshape(tf.cast(model(images, training=False), tf.float32), (-1,)), threshold)


def _outputs_of_logits(logits: tf.Tensor, threshold: float) -> dict:
    scores = tf.sigmoid(logits)
    return {"anomaly_score": scores, "is_anomaly": scores >= threshold, "logit": logits}


def _sample_rate_check(sample_rate: tf.Tensor, features: FeatureConfig) -> tf.Operation:
    """Asserts that waveforms given to a signature come at the rate the model was trained on."""
    return tf.debugging.assert_equal(
        sample_rate, features.sample_rate,
        message=f"sample_rate must be {features.sample_rate} Hz, the rate the model was trained on")


def frame_serving_functions(autoencoder: keras.Model, features: FeatureConfig, threshold: float,
                            spread: float) -> dict:
    """The signatures of one machine's DCASE 2020 autoencoder: WAV bytes or waveforms in (no images).

    Each clip's score is the baseline's (the mean squared reconstruction
    error of its frame vectors), and its logit `(score - threshold) /
    spread`, so `anomaly_score` (the sigmoid) is above 0.5 exactly where the
    run's threshold flags the clip.
    """
    def clip_logit(waveform):
        vectors = waveform_to_vectors(waveform, features.sample_rate, features.n_fft, features.hop_length,
                                      features.n_mels, features.context_frames)
        errors = reconstruction_errors(vectors, autoencoder(vectors, training=False))
        return (tf.reduce_mean(tf.cast(errors, tf.float32)) - threshold) / spread

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="wav_bytes")])
    def serve_wav(wav_bytes):
        logits = tf.map_fn(lambda contents: clip_logit(wav_bytes_to_waveform(contents, features)), wav_bytes,
                           fn_output_signature=tf.float32)
        return _outputs_of_logits(logits, 0.5)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="waveforms"),
                                  tf.TensorSpec([], tf.int32, name="sample_rate")])
    def serve_waveforms(waveforms, sample_rate):
        with tf.control_dependencies([_sample_rate_check(sample_rate, features)]):
            logits = tf.map_fn(clip_logit, waveforms, fn_output_signature=tf.float32)
        return _outputs_of_logits(logits, 0.5)

    return {"serving_default": serve_wav, "serving_waveforms": serve_waveforms}


def serving_functions(model: keras.Model, features: FeatureConfig, threshold: float) -> dict:
    """The three signature functions (tf.functions with input signatures) by signature name."""
    rows, columns, channels = features.input_shape
    image_spec = tf.TensorSpec([rows, columns, 1], tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="wav_bytes")])
    def serve_wav(wav_bytes):
        images = tf.map_fn(lambda contents: wav_bytes_to_image(contents, features), wav_bytes,
                           fn_output_signature=image_spec)
        return _outputs(model, to_backbone_channels(images, features), threshold)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="waveforms"),
                                  tf.TensorSpec([], tf.int32, name="sample_rate")])
    def serve_waveforms(waveforms, sample_rate):
        with tf.control_dependencies([_sample_rate_check(sample_rate, features)]):
            images = tf.map_fn(lambda waveform: waveform_to_image(waveform, features), waveforms,
                               fn_output_signature=image_spec)
        return _outputs(model, to_backbone_channels(images, features), threshold)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, None], tf.float32, name="images")])
    def serve_images(images):
        # The shape is checked here, not by the input signature: TF Serving
        # feeds tensors without checking a signature's static shape.
        shape = tf.shape(images)
        valid = check(tf.constant("images"), [
            (tf.reduce_all(tf.equal(shape[1:], [rows, columns, channels])),
             lambda: tf.strings.format("shape {}, but the model takes [batch, {}, {}, {}]",
                                       (shape, rows, columns, channels))),
            # A float32 rounding's worth of slack: the image step's resize
            # can put a clipped 1.0 at 1.0000001.
            (tf.reduce_all((images >= -PIXEL_SLACK) & (images <= 1.0 + PIXEL_SLACK)),
             lambda: tf.strings.format("values from {} to {}, but pixels must be finite and lie in [0, 1]",
                                       (tf.reduce_min(images), tf.reduce_max(images)))),
        ])
        with tf.control_dependencies([valid]):
            images = tf.ensure_shape(tf.identity(images), [None, rows, columns, channels])
        return _outputs(model, images, threshold)

    return {"serving_default": serve_wav, "serving_waveforms": serve_waveforms, "serving_images": serve_images}


def strict_json_values(value):
    """`value` with every NaN or infinite float replaced by None, so `json.dumps(allow_nan=False)` takes it."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: strict_json_values(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json_values(item) for item in value]
    return value


def check_export_target(model_dir: str, version: Optional[int], synthetic: bool) -> None:
    """Refuses an export before anything is written (or trained).

    `FileExistsError` when `model_dir/version` exists; `ExportError` when a
    model trained on synthetic recordings would join a model folder holding
    a model trained on real data (or one without a record of its data): TF
    Serving serves the highest version, so the demonstration would replace
    the real model.
    """
    if version is not None:
        target = os.path.join(model_dir, str(int(version)))
        if os.path.exists(target):
            raise FileExistsError(f"{target} exists; choose another version (next free: {next_version(model_dir)}).")
    if not synthetic or not os.path.isdir(model_dir):
        return
    real = []
    for name in sorted((n for n in os.listdir(model_dir) if n.isdigit()), key=int):
        try:
            recorded_synthetic = is_synthetic(read_model_info(os.path.join(model_dir, name)))
        except ModelInfoError:
            recorded_synthetic = False
        if not recorded_synthetic:
            real.append(name)
    if real:
        raise ExportError(
            f"{model_dir} holds version(s) {', '.join(real)} trained on real data (or of unknown data); a model "
            "trained on SYNTHETIC recordings would become the version TF Serving serves. Export it under "
            f"another name (--set export.name={os.path.basename(os.path.normpath(model_dir))}_synthetic), "
            "or skip the export (--no-export).")


def export_saved_model(model: keras.Model, features: FeatureConfig, model_dir: str,
                       version: Optional[int] = None, threshold: float = 0.5,
                       metadata: Optional[dict] = None, model_name: Optional[str] = None,
                       log: Log = _quiet, functions: Optional[dict] = None) -> str:
    """Writes `model_dir/version/` atomically and returns its path.

    The SavedModel is written to a hidden folder beside the version folder
    and renamed into place, so a failed export leaves no version behind (TF
    Serving never sees a half-written one). An existing version is an error,
    and so is a synthetic-data model joining real ones (`check_export_target`;
    `metadata["provenance"]["synthetic"]` says which it is). With
    `metadata["clip"]` (`frames`, `sample_rate`) the TF Serving warm-up file
    carries a clip of that length, requested as model `model_name` (default:
    the folder name). `log` receives a line per step. `functions` replaces
    the image model's signatures (`serving_functions`), e.g. with
    `frame_serving_functions`.
    """
    synthetic = bool(((metadata or {}).get("provenance") or {}).get("synthetic"))
    check_export_target(model_dir, version, synthetic)
    version = next_version(model_dir) if version is None else int(version)
    if version < 1:
        raise ValueError(f"version must be a positive integer, got {version}.")
    target = os.path.join(model_dir, str(version))
    started = time.perf_counter()
    log(f"Exporting {target}: tracing the serving signatures.")
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, function in (functions or serving_functions(model, features, threshold)).items():
        step = time.perf_counter()
        archive.add_endpoint(name, function)
        log(f"  traced {name} ({time.perf_counter() - step:.0f} s)")
    os.makedirs(model_dir, exist_ok=True)
    remove_staging_folders(model_dir)
    staging = tempfile.mkdtemp(prefix=f".{version}.", dir=model_dir)
    try:
        step = time.perf_counter()
        archive.write_out(staging, verbose=False)
        log(f"  wrote the SavedModel ({time.perf_counter() - step:.0f} s)")
        info = strict_json_values({"threshold": threshold, "features": to_dict(features), **(metadata or {})})
        extra = os.path.join(staging, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        with open(os.path.join(extra, METADATA_NAME), "w", encoding="utf-8") as handle:
            json.dump(info, handle, indent=2, allow_nan=False)
        clip = info.get("clip")
        if clip:
            name = model_name or os.path.basename(os.path.normpath(model_dir))
            write_warmup_file(os.path.join(extra, WARMUP_FILE), name,
                              warmup_clip(int(clip["frames"]), int(clip["sample_rate"])))
            log(f"  wrote the TF Serving warm-up request ({clip['seconds']:.3g} s clip)")
        else:
            log("  no training clip length recorded: no TF Serving warm-up request")
        os.chmod(staging, 0o755)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log(f"Exported {target} in {time.perf_counter() - started:.0f} s.")
    return target


def trains_on_synthetic(data: DataConfig) -> bool:
    """Whether a run with this data config trains on its own synthetic recordings."""
    return data.data_dir is None and data.split_file is None


def training_clip_length(run_dir: str, tolerance: float) -> Optional[dict]:
    """The training split's clip length (median), its range and sample rate, from `RUN/split.csv`'s headers.

    None when the manifest is missing or none of its training files can be read.
    """
    try:
        records = read_manifest(os.path.join(run_dir, RunDirectory.MANIFEST))["train"]
    except ManifestError:
        return None
    headers = []
    for record in records:
        try:
            headers.append(read_wav_header(record.path))
        except (OSError, WavFormatError):
            continue
    if not headers:
        return None
    rates = [h.sample_rate for h in headers]
    rate = max(set(rates), key=rates.count)
    frames = sorted(h.frames for h in headers if h.sample_rate == rate)
    median = frames[len(frames) // 2]
    return {"seconds": median / rate, "frames": median, "sample_rate": rate, "length_tolerance": tolerance,
            "training_files": len(frames), "shortest_seconds": frames[0] / rate,
            "longest_seconds": frames[-1] / rate}


def source_commit() -> Optional[str]:
    """The git commit of the package's source, or None outside a git checkout."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=os.path.dirname(os.path.abspath(__file__)),
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def run_provenance(config: RunConfig, run_dir: str) -> dict:
    """Where a run's model came from: data, synthetic or not, test metrics beside the baseline, version, commit."""
    synthetic = trains_on_synthetic(config.data)
    if synthetic:
        source = os.path.join(os.path.abspath(run_dir), RunDirectory.SYNTHETIC)
    else:
        source = os.path.abspath(config.data.split_file or config.data.data_dir)
    metrics = {}
    metrics_path = os.path.join(run_dir, RunDirectory.METRICS)
    if os.path.exists(metrics_path):
        with open(metrics_path, encoding="utf-8") as handle:
            metrics = json.load(handle)
    baseline = metrics.get("baseline") or {}
    return {"synthetic": synthetic, "data_source": source,
            "synthetic_config": to_dict(config.synthetic) if synthetic else None,
            "snr_db": config.data.snr_db, "machine_ids": config.data.machine_ids,
            "test_metrics": metrics.get("test"),
            "baseline": {"name": baseline.get("name"), "test": baseline.get("test")} if baseline else None,
            "verdict": (metrics.get("verdict") or {}).get("text"),
            "package_version": __version__, "commit": source_commit()}


def run_metadata(run_dir: str, config: RunConfig) -> dict:
    """What an export of this run records beside threshold and features (see `pump_keras.deploy.model_info`)."""
    return {"run_dir": os.path.abspath(run_dir), "model": to_dict(config.model),
            "clip": training_clip_length(run_dir, config.export.clip_length_tolerance),
            "provenance": run_provenance(config, run_dir)}


def check_exportable(config: RunConfig, run_dir: str = "this run") -> None:
    """Raises `ExportError` for a run the SavedModel export cannot serve (a normal-only run without a machine)."""
    if config.data.protocol == "normal_only" and config.export.enabled and config.export.machine is None:
        raise ExportError("A normal-only run's SavedModel serves one machine: set export.machine "
                          "(e.g. --set export.machine=pump/id_00), or train with --no-export and export each "
                          "machine later (python -m pump_keras.export --machine ...).")


def _export_normal_only(run_dir: str, config: RunConfig, model_dir: str, version: Optional[int], log: Log,
                        machine: Optional[str]) -> str:
    """Exports one machine's scorer of a normal-only run (ours, or the per-machine autoencoders)."""
    functions = None
    try:
        if model_inputs(config.model.name) == "frames":
            model, machine, threshold, spread = machine_autoencoder(run_dir, machine)
            functions = frame_serving_functions(model, config.features, threshold, spread)
        else:
            model, machine = machine_scorer(run_dir, machine)
    except TrainingError as error:
        raise ExportError(str(error)) from error
    metadata = {**run_metadata(run_dir, config), "machine": machine,
                "threshold_source": f"threshold.json ({machine}, chosen on normal validation clips)"}
    check_export_target(model_dir, version, metadata["provenance"]["synthetic"])
    log(f"Exporting the normal-only scorer of {machine}.")
    return export_saved_model(model, config.features, model_dir, version, 0.5, metadata=metadata, log=log,
                              functions=functions)


def export_run(run_dir: str, model_dir: str, version: Optional[int] = None, log: Log = _quiet,
               machine: Optional[str] = None) -> str:
    """Exports a run's best model with its threshold, feature config and provenance; returns the version folder.

    A normal-only run exports the scorer of one machine (`machine`, else
    `export.machine`, else the run's only one): its embedder with that
    machine's reference embeddings (`machine_scorer`), or that machine's
    autoencoder (`frame_serving_functions`), and its threshold, so the
    SavedModel's `anomaly_score` is above 0.5 exactly where the run's
    per-machine threshold flags a clip.
    """
    config = load_run_config(run_dir)
    if config.data.protocol == "normal_only" or model_inputs(config.model.name) == "frames":
        return _export_normal_only(run_dir, config, model_dir, version, log, machine or config.export.machine)
    best = os.path.join(run_dir, RunDirectory.BEST)
    if not os.path.exists(best):
        raise FileNotFoundError(f"{run_dir} holds no best.keras: train it first (python -m pump_keras.train).")
    threshold, source = run_threshold(run_dir)
    metadata = {**run_metadata(run_dir, config), "threshold_source": source}
    check_export_target(model_dir, version, metadata["provenance"]["synthetic"])
    log(f"Loading {best}.")
    return export_saved_model(load_model(best), config.features, model_dir, version, threshold,
                              metadata=metadata, log=log)
