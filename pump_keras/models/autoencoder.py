"""The DCASE 2020 Task 2 baseline: a dense autoencoder of stacked log-mel frames.

Koizumi et al., "Description and Discussion on DCASE2020 Challenge Task2:
Unsupervised Anomalous Sound Detection for Machine Condition Monitoring"
(2020), and the official Keras baseline (`keras_model.get_model`): four
Dense(128)-BatchNorm-ReLU layers, a Dense(8)-BatchNorm-ReLU bottleneck, four
more Dense(128)-BatchNorm-ReLU layers and a linear Dense back to the input
size, trained on normal clips only with Adam and the mean squared error. A
clip's anomaly score is the mean, over its frame vectors, of each vector's
mean squared reconstruction error (`reconstruction_errors`).
"""

from __future__ import annotations

import keras
from keras import layers, ops

from pump_keras.models.registry import register_model

DEFAULT_VECTOR_SHAPE = (640,)  # 128 mel bands x 5 frames


@register_model("dcase2020_ae", inputs="frames")
def dcase2020_ae(hidden_units: int = 128, hidden_layers: int = 4, bottleneck_units: int = 8,
                 input_shape=DEFAULT_VECTOR_SHAPE) -> keras.Model:
    """The baseline autoencoder: `[batch, D]` frame vectors to their reconstruction `[batch, D]`.

    Args:
        hidden_units: width of every hidden layer (the baseline's 128).
        hidden_layers: hidden layers on each side of the bottleneck (4).
        bottleneck_units: width of the code (8).
        input_shape: `(D,)`, the frame vector size (`n_mels * context_frames`).
    """
    for name, value in (("hidden_units", hidden_units), ("hidden_layers", hidden_layers),
                        ("bottleneck_units", bottleneck_units)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")
    input_shape = tuple(input_shape)
    if len(input_shape) != 1 or not isinstance(input_shape[0], int) or input_shape[0] < 1:
        raise ValueError(f"input_shape must be (D,) with D the frame vector size, got {input_shape!r}.")

    inputs = keras.Input(shape=input_shape, name="vectors")
    x = inputs
    widths = [hidden_units] * hidden_layers + [bottleneck_units] + [hidden_units] * hidden_layers
    for number, width in enumerate(widths, start=1):
        x = layers.Dense(width, name=f"dense{number}")(x)
        x = layers.BatchNormalization(name=f"bn{number}")(x)
        x = layers.Activation("relu", name=f"relu{number}")(x)
    outputs = layers.Dense(input_shape[0], name="reconstruction")(x)
    return keras.Model(inputs, outputs, name="dcase2020_ae")


def reconstruction_errors(vectors, reconstruction):
    """Each vector's mean squared reconstruction error, `[batch]` (the baseline's per-frame error)."""
    return ops.mean(ops.square(ops.subtract(vectors, reconstruction)), axis=-1)


__all__ = ["dcase2020_ae", "reconstruction_errors"]
