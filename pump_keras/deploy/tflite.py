"""TensorFlow Lite models for edge devices: spectrogram images in, one logit out.

    from pump_keras.deploy.tflite import write_tflite, representative_images, TFLiteScorer, image_for_file
    calibration = representative_images(splits["train"], config.features)
    write_tflite(model, "int8", "pump_int8.tflite", calibration)
    scores = TFLiteScorer("pump_int8.tflite").scores(images)

DecodeWav and the package's in-graph WAV parsing are no TFLite builtins, so
the TFLite model starts at the image: float32 `[B, H, W, C]` in [0, 1] ->
logit `[B, 1]`. The device must reproduce the host preprocessing of
`image_for_file`, the training front end: one channel of the WAV (decoded
as `int16 / 32768`), the feature of `FeatureConfig.kind` (periodic Hann
STFT, `n_fft`, `hop_length`, centred frames), its `normalization` onto
[0, 1] (`features.normalize_db`), low frequencies at the bottom row, a
bilinear resize to `image_shape`, and the plane repeated to
`image_channels` (the last one the row position when `frequency_channel`). The
values to use are the feature config a SavedModel records under `"features"`
in `assets.extra/pump_keras.json` (`pump_keras.deploy.export`), with the
threshold beside it.

Variants (`VARIANTS`):

* `"float32"`: the Keras model as it is.
* `"dynamic_range"`: int8 weights, float activations (`Optimize.DEFAULT`
  without a dataset); activations are quantized on the fly per inference.
* `"int8"`: int8 weights and activations (builtin int8 kernels),
  calibrated on `representative_images` from the training split. The input
  and output tensors stay float32 (the converter's default
  `inference_input_type`/`inference_output_type`): callers feed the same
  images and read the same logit; the model quantizes on entry and
  dequantizes at the end. SimAM's arithmetic and any DIV stay float
  (`FLOAT_LAYERS_IN_INT8`, `FLOAT_OPS_IN_INT8`; int8 cannot hold SimAM's
  energy term), so an int8-only accelerator runs those ops on the CPU, if
  it takes the model at all.

Conversion uses `TFLiteConverter.from_concrete_functions` with a
`tf.Module` holding the model's variables as `trackable_obj` (with the
Keras 3 model itself there, it converted without error to NaN logits; TF
2.21, Keras 3.15). That is 2.5x faster than the route of Keras'
`model.export(..., format="litert")` (an `ExportArchive` SavedModel, then
`from_saved_model`), which also admits Flex ops (`SELECT_TF_OPS`) that
plain edge runtimes lack; here only builtins.
"""

from __future__ import annotations

import os
import re
import time
import warnings
from typing import Iterable, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from pump_keras.audio.features import to_backbone_channels
from pump_keras.config import FeatureConfig
from pump_keras.data.pipeline import load_image
from pump_keras.files import atomic_write_bytes
from pump_keras.layers.attention import ImprovedCBAM, SimAM

VARIANTS = ("float32", "dynamic_range", "int8")

# What the int8 variant leaves in float (dequantize -> op -> quantize).
# SimAM's energy `d^2 / (4 (v + lambda)) + 1/2` is heavy-tailed and its
# divisor spans channel variances orders of magnitude apart, and int8 has one
# scale per tensor: quantized, the divisor of quiet channels rounds to 0 and
# TFLite's int8 DIV stops ("div.cc ... data[i] != 0 was not true"), and with
# DIV alone in float a trained improved-CBAM model's test AUC fell and its
# scores moved far from the float model's. So every op of a layer holding
# SimAM runs in float except its FULLY_CONNECTED (the channel MLP, whose
# weights stay int8): the AUC of the float model, scores close to its, and
# less latency than the float model on one CPU thread
# (`tests/deploy/test_tflite.py` holds the parity bounds).
# Models without these layers (attention "se", ...) are int8 throughout
# (any DIV aside).
FLOAT_OPS_IN_INT8 = ("DIV",)
FLOAT_LAYERS_IN_INT8 = (SimAM, ImprovedCBAM)

# TF 2.21 warns on every tf.lite.Interpreter that it moves to ai_edge_litert (same API).
_INTERPRETER_DEPRECATION = r"(?s).*tf\.lite\.Interpreter is deprecated"


# --- host preprocessing

def image_for_file(path, feature_config: FeatureConfig) -> np.ndarray:
    """The model input `[H, W, C]` float32 of one WAV file: the training pipeline's own code."""
    image = load_image(tf.constant(os.fspath(path)), feature_config)
    return to_backbone_channels(image, feature_config).numpy()


def representative_images(records: Sequence, feature_config: FeatureConfig,
                          limit: int = 100) -> np.ndarray:
    """Images `[K, H, W, C]` of at most `limit` training-split records, for int8 calibration.

    With more records than `limit`, they are taken evenly spaced over the
    list (a split is sorted by path, so this spans machine ids and classes).
    """
    if not records:
        raise ValueError("representative_images needs at least one record (the training split).")
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}.")
    positions = np.unique(np.linspace(0, len(records) - 1, min(limit, len(records))).round().astype(int))
    return np.stack([image_for_file(records[i].path, feature_config) for i in positions])


# --- conversion

def _logit_converter(model: keras.Model) -> tf.lite.TFLiteConverter:
    """A converter of `model` as images `[B, H, W, C]` -> float32 logits `[B, 1]` (free batch)."""
    spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32, name="images")

    @tf.function(input_signature=[spec])
    def logit(images):
        return tf.cast(model(images, training=False), tf.float32)

    # The converter saves `trackable_obj` with the function as a SavedModel;
    # it must hold the tf.Variables behind the Keras variables.
    variables = tf.Module()
    variables.weights = [variable.value for variable in model.variables]
    return tf.lite.TFLiteConverter.from_concrete_functions(
        [logit.get_concrete_function()], trackable_obj=variables)


def _calibration_dataset(images: Iterable[np.ndarray]):
    """The converter's representative dataset: one `[1, H, W, C]` image per step."""
    images = np.asarray(images, dtype=np.float32)

    def generate():
        for image in images:
            yield [image[np.newaxis]]

    return generate


def convert(model: keras.Model, variant: str,
            representative_images: Optional[np.ndarray] = None) -> bytes:
    """The TFLite flatbuffer of `model` as `variant` (see `VARIANTS`).

    `representative_images` (`[K, H, W, C]`, training split) are required for
    `"int8"` and refused otherwise.
    """
    if variant not in VARIANTS:
        raise ValueError(f"Unknown TFLite variant {variant!r}; expected one of {VARIANTS}.")
    needs_images = variant == "int8"
    if needs_images and (representative_images is None or len(representative_images) == 0):
        raise ValueError("The int8 variant needs representative_images from the training split.")
    if not needs_images and representative_images is not None:
        raise ValueError(f"The {variant} variant takes no representative_images.")
    converter = _logit_converter(model)
    if variant == "float32":
        return converter.convert()
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "dynamic_range":
        return converter.convert()
    converter.representative_dataset = _calibration_dataset(representative_images)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    # Selective quantization: TF's documented way to keep ops in float is
    # the quantization debugger's denylist (its debug model is a by-product).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_INTERPRETER_DEPRECATION)
        options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(FLOAT_OPS_IN_INT8))
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=_calibration_dataset(representative_images),
            debug_options=options)
        nodes = _float_nodes(model, debugger.calibrated_model)
        if nodes:
            options.denylisted_nodes = nodes
            debugger.options = options  # quantizes the calibrated model again
        return debugger.get_nondebug_quantized_model()


def _all_layers(model: keras.Model) -> list:
    """The layers of `model` and of the models nested in it."""
    layers = []
    for layer in model.layers:
        layers.append(layer)
        if isinstance(layer, keras.Model):
            layers.extend(_all_layers(layer))
    return layers


def _float_nodes(model: keras.Model, calibrated_model: bytes) -> list:
    """Output tensor names of the ops inside `FLOAT_LAYERS_IN_INT8` layers, but FULLY_CONNECTED."""
    names = [layer.name for layer in _all_layers(model) if isinstance(layer, FLOAT_LAYERS_IN_INT8)]
    if not names:
        return []
    # Tensor names carry the Keras layer's name scope (`.../block4a_improved_cbam_1/add_4`).
    inside = re.compile(r"(^|/)(%s)(_\d+)?/" % "|".join(map(re.escape, names)))
    interpreter = _interpreter(calibrated_model, None)
    tensor_names = {detail["index"]: detail["name"] for detail in interpreter.get_tensor_details()}
    # Op types and outputs have no public accessor; TF's debugger reads them the same way.
    return sorted({tensor_names[index]
                   for op in interpreter._get_ops_details() if op["op_name"] != "FULLY_CONNECTED"
                   for index in op["outputs"] if inside.search(tensor_names[index])})


def write_tflite(model: keras.Model, variant: str, path: str,
                 representative_images: Optional[np.ndarray] = None) -> str:
    """Converts `model` and writes it to `path` atomically; returns `path`."""
    atomic_write_bytes(path, convert(model, variant, representative_images))
    return path


# --- inference on the host

def _interpreter(model, num_threads: Optional[int]) -> tf.lite.Interpreter:
    """An interpreter of a `.tflite` path or of flatbuffer bytes."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_INTERPRETER_DEPRECATION)
        if isinstance(model, bytes):
            return tf.lite.Interpreter(model_content=model, num_threads=num_threads)
        return tf.lite.Interpreter(model_path=os.fspath(model), num_threads=num_threads)


class TFLiteScorer:
    """Runs a TFLite model of this module on batches of images.

    Args:
        path: the `.tflite` file.
        num_threads: interpreter threads (`None`: TFLite's default).
    """

    def __init__(self, path: str, num_threads: Optional[int] = None):
        self.path = os.fspath(path)
        self.interpreter = _interpreter(self.path, num_threads)
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        self.image_shape = tuple(int(v) for v in self._input["shape"][1:])
        self._batch_size = None
        # A fixed batch of 1 is looped over; a free batch dimension is resized.
        self._resizable = int(self._input["shape_signature"][0]) == -1

    def _prepare(self, batch_size: int) -> None:
        if batch_size != self._batch_size:
            self.interpreter.resize_tensor_input(self._input["index"], [batch_size, *self.image_shape])
            self.interpreter.allocate_tensors()
            self._batch_size = batch_size

    def _run(self, images: np.ndarray) -> np.ndarray:
        self._prepare(len(images))
        self.interpreter.set_tensor(self._input["index"], images)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._output["index"]).reshape(-1)

    def logits(self, images) -> np.ndarray:
        """Logits `[B]` float32 of images `[B, H, W, C]` in [0, 1]."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 4 or images.shape[1:] != self.image_shape:
            raise ValueError(f"Expected images of shape [B, {', '.join(map(str, self.image_shape))}], "
                             f"got {images.shape}.")
        if len(images) == 0:
            return np.zeros([0], np.float32)
        if self._resizable:
            return self._run(images)
        return np.concatenate([self._run(image[np.newaxis]) for image in images])

    def scores(self, images) -> np.ndarray:
        """Anomaly scores `[B]` (sigmoid of the logits)."""
        logits = self.logits(images).astype(np.float64)
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


def describe(path: str, images, num_threads: int = 1) -> dict:
    """Size of a `.tflite` file and its median CPU latency per image (batch 1, after one warm-up).

    Returns `{"bytes": int, "latency_ms": float}`; one thread by default, as on a small device.
    """
    scorer = TFLiteScorer(path, num_threads=num_threads)
    images = np.asarray(images, dtype=np.float32)
    scorer.logits(images[:1])
    times = []
    for image in images:
        start = time.perf_counter()
        scorer._run(image[np.newaxis])
        times.append(time.perf_counter() - start)
    return {"bytes": os.path.getsize(path), "latency_ms": 1000.0 * float(np.median(times))}


__all__ = ["VARIANTS", "FLOAT_OPS_IN_INT8", "FLOAT_LAYERS_IN_INT8", "convert", "write_tflite", "TFLiteScorer",
           "image_for_file", "representative_images", "describe"]
