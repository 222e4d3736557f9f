"""Versioned SavedModels that TF Serving serves from raw WAV bytes.

    saved_models/NAME/VERSION/   (what TF Serving's model base path holds)

Signatures: `serving_default` takes a batch of WAV file bytes and returns
`anomaly_score` (probability), `is_anomaly` (at the saved threshold) and
`logit`; the whole front end (decoding, channel choice, feature, image) runs
in the graph, exactly the training pipeline's in-graph path
(`features.wav_bytes_to_image`). `serving_images` takes ready `[B, N, N, C]`
images in [0, 1]. `assets.extra/pump_keras.json` records the threshold and
the feature config.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Optional

import keras
import tensorflow as tf

from pump_keras.config import FeatureConfig, to_dict
from pump_keras.features import to_backbone_channels, wav_bytes_to_image

METADATA_NAME = "pump_keras.json"


def next_version(model_dir: str) -> int:
    """One more than the highest numeric version folder in `model_dir` (1 when none)."""
    if not os.path.isdir(model_dir):
        return 1
    versions = [int(name) for name in os.listdir(model_dir) if name.isdigit()]
    return max(versions, default=0) + 1


def _outputs(model: keras.Model, images: tf.Tensor, threshold: float) -> dict:
    logits = tf.reshape(tf.cast(model(images, training=False), tf.float32), (-1,))
    scores = tf.sigmoid(logits)
    return {"anomaly_score": scores, "is_anomaly": scores >= threshold, "logit": logits}


def export_saved_model(model: keras.Model, features: FeatureConfig, out_dir: str, name: str,
                       version: Optional[int] = None, threshold: float = 0.5,
                       metadata: Optional[dict] = None) -> str:
    """Writes `out_dir/name/version/` atomically and returns its path.

    The SavedModel is written to a hidden folder beside the version folder
    and renamed into place, so a failed export leaves no version behind (TF
    Serving never sees a half-written one). An existing version is an error.
    """
    model_dir = os.path.join(out_dir, name)
    version = next_version(model_dir) if version is None else int(version)
    target = os.path.join(model_dir, str(version))
    if os.path.exists(target):
        raise FileExistsError(f"{target} exists; choose another version (next free: {next_version(model_dir)}).")
    size, channels = features.image_size, features.image_channels

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="wav_bytes")])
    def serve_wav(wav_bytes):
        images = tf.map_fn(lambda contents: wav_bytes_to_image(contents, features), wav_bytes,
                           fn_output_signature=tf.TensorSpec([size, size, 1], tf.float32))
        return _outputs(model, to_backbone_channels(images, features), threshold)

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, channels], tf.float32, name="images")])
    def serve_images(images):
        return _outputs(model, images, threshold)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve_wav)
    archive.add_endpoint("serving_images", serve_images)
    os.makedirs(model_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{version}.", dir=model_dir)
    try:
        archive.write_out(staging, verbose=False)
        info = {"threshold": threshold, "features": to_dict(features), **(metadata or {})}
        os.makedirs(os.path.join(staging, "assets.extra"), exist_ok=True)
        with open(os.path.join(staging, "assets.extra", METADATA_NAME), "w", encoding="utf-8") as handle:
            json.dump(info, handle, indent=2)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
