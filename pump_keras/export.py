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

The threshold is the one `pump_keras.evaluate` chose on validation
(`RUN/threshold.json`), else training's own choice (`RUN/metrics.json`), else
0.5 with a warning. `assets.extra/pump_keras.json` records it with the
feature config. The version folder appears whole or not at all.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import warnings
from typing import Optional, Tuple

from pump_keras.tf_log_level import quiet_tensorflow_logs

quiet_tensorflow_logs()

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from pump_keras.config import FeatureConfig, to_dict  # noqa: E402
from pump_keras.features import (  # noqa: E402
    to_backbone_channels, wav_bytes_to_image, waveform_to_image)

METADATA_NAME = "pump_keras.json"


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
    for name, key in (("threshold.json", "threshold_probability"), ("metrics.json", "threshold_probability")):
        path = os.path.join(run_dir, name)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                values = json.load(handle)
            if key in values:
                return float(values[key]), f"{name} (chosen on validation)"
    warnings.warn(f"{run_dir} has no threshold (run pump_keras.evaluate); is_anomaly uses 0.5.")
    return 0.5, "default 0.5 (no threshold saved)"


def _outputs(model: keras.Model, images: tf.Tensor, threshold: float) -> dict:
    logits = tf.reshape(tf.cast(model(images, training=False), tf.float32), (-1,))
    scores = tf.sigmoid(logits)
    return {"anomaly_score": scores, "is_anomaly": scores >= threshold, "logit": logits}


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
        check = tf.debugging.assert_equal(
            sample_rate, features.sample_rate,
            message=f"sample_rate must be {features.sample_rate} Hz, the rate the model was trained on")
        with tf.control_dependencies([check]):
            images = tf.map_fn(lambda waveform: waveform_to_image(waveform, features), waveforms,
                               fn_output_signature=image_spec)
        return _outputs(model, to_backbone_channels(images, features), threshold)

    @tf.function(input_signature=[tf.TensorSpec([None, rows, columns, channels], tf.float32, name="images")])
    def serve_images(images):
        return _outputs(model, images, threshold)

    return {"serving_default": serve_wav, "serving_waveforms": serve_waveforms, "serving_images": serve_images}


def export_saved_model(model: keras.Model, features: FeatureConfig, model_dir: str,
                       version: Optional[int] = None, threshold: float = 0.5,
                       metadata: Optional[dict] = None) -> str:
    """Writes `model_dir/version/` atomically and returns its path.

    The SavedModel is written to a hidden folder beside the version folder
    and renamed into place, so a failed export leaves no version behind (TF
    Serving never sees a half-written one). An existing version is an error.
    """
    version = next_version(model_dir) if version is None else int(version)
    if version < 1:
        raise ValueError(f"version must be a positive integer, got {version}.")
    target = os.path.join(model_dir, str(version))
    if os.path.exists(target):
        raise FileExistsError(f"{target} exists; choose another version (next free: {next_version(model_dir)}).")
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, function in serving_functions(model, features, threshold).items():
        archive.add_endpoint(name, function)
    os.makedirs(model_dir, exist_ok=True)
    remove_staging_folders(model_dir)
    staging = tempfile.mkdtemp(prefix=f".{version}.", dir=model_dir)
    try:
        archive.write_out(staging, verbose=False)
        info = {"threshold": threshold, "features": to_dict(features), **(metadata or {})}
        os.makedirs(os.path.join(staging, "assets.extra"), exist_ok=True)
        with open(os.path.join(staging, "assets.extra", METADATA_NAME), "w", encoding="utf-8") as handle:
            json.dump(info, handle, indent=2)
        os.chmod(staging, 0o755)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def export_run(run_dir: str, model_dir: str, version: Optional[int] = None) -> str:
    """Exports a run's best model with its threshold and feature config; returns the version folder."""
    from pump_keras.evaluation import load_run_config
    from pump_keras.models import load_model

    config = load_run_config(run_dir)
    best = os.path.join(run_dir, "best.keras")
    if not os.path.exists(best):
        raise FileNotFoundError(f"{run_dir} holds no best.keras: train it first (python -m pump_keras.train).")
    threshold, source = run_threshold(run_dir)
    return export_saved_model(load_model(best), config.features, model_dir, version, threshold,
                              metadata={"run_dir": os.path.abspath(run_dir), "threshold_source": source,
                                        "model": to_dict(config.model)})


def main(argv=None) -> int:
    """Runs the CLI; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m pump_keras.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--out", required=True, help="the model folder, e.g. saved_models/pump_anomaly")
    parser.add_argument("--version", type=int, help="version number (default: the next free one)")
    args = parser.parse_args(argv)
    try:
        path = export_run(args.run_dir, args.out, args.version)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
