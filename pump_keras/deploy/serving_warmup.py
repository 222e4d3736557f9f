"""TF Serving's warm-up file: `assets.extra/tf_serving_warmup_requests`.

TF Serving replays the requests in this file when it loads a version, so
the first real request does not pay for loading kernels and allocating
buffers. The file is a TFRecord of serialized
`tensorflow.serving.PredictionLog` protos. The tensorflow-serving-api
package is not needed: the few fields used are written here in protobuf's
wire format (tensorflow_serving/apis/prediction_log.proto, predict.proto,
model.proto):

    PredictionLog  { predict_log (6): PredictLog }
    PredictLog     { request (1): PredictRequest }
    PredictRequest { model_spec (1): ModelSpec, inputs (2): map<string, TensorProto> }
    ModelSpec      { name (1): string, signature_name (3): string }

A map entry is a message `{ key (1), value (2) }`; TensorProto comes from
TensorFlow itself (`tf.make_tensor_proto`).
"""

from __future__ import annotations

import io
import wave
from typing import Dict

import numpy as np
import tensorflow as tf

WARMUP_FILE = "tf_serving_warmup_requests"

# The warm-up clip: quiet seeded noise, so every feature step sees ordinary
# numbers (silence would make the clip-normalised image 0 / 0).
WARMUP_NOISE_RMS = 0.01
WARMUP_SEED = 0

_LENGTH_DELIMITED = 2


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def length_delimited(field_number: int, payload: bytes) -> bytes:
    """One protobuf field of wire type 2 (string, bytes or embedded message)."""
    return _varint(field_number << 3 | _LENGTH_DELIMITED) + _varint(len(payload)) + payload


def predict_request(model_name: str, signature_name: str, inputs: Dict[str, bytes]) -> bytes:
    """A serialized PredictRequest; `inputs` maps input names to serialized TensorProtos."""
    model_spec = length_delimited(1, model_name.encode("utf-8")) + \
        length_delimited(3, signature_name.encode("utf-8"))
    request = length_delimited(1, model_spec)
    for name, tensor in inputs.items():
        request += length_delimited(2, length_delimited(1, name.encode("utf-8")) + length_delimited(2, tensor))
    return request


def prediction_log(request: bytes) -> bytes:
    """A serialized PredictionLog holding a PredictLog of one serialized PredictRequest."""
    return length_delimited(6, length_delimited(1, request))


def warmup_clip(frames: int, sample_rate: int) -> bytes:
    """A mono 16-bit PCM WAV file of `frames` samples of quiet seeded noise."""
    noise = np.random.default_rng(WARMUP_SEED).normal(0.0, WARMUP_NOISE_RMS, frames)
    samples = np.clip(np.round(noise * 32768), -32768, 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(sample_rate)
        writer.writeframes(samples.tobytes())
    return buffer.getvalue()


def write_warmup_file(path: str, model_name: str, wav_bytes: bytes, signature_name: str = "serving_default",
                      input_name: str = "wav_bytes") -> None:
    """Writes a warm-up file of one request: a batch of the one WAV file `wav_bytes`."""
    tensor = tf.make_tensor_proto([wav_bytes]).SerializeToString()
    record = prediction_log(predict_request(model_name, signature_name, {input_name: tensor}))
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(record)
