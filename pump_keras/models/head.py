"""What every model shares: its image input and its head (dropout, then one float32 logit)."""

from __future__ import annotations

import keras
from keras import layers

INPUT_NAME = "images"


def image_input(input_shape) -> keras.KerasTensor:
    """The model input: a batch of `input_shape` images in [0, 1], named `images`."""
    return keras.Input(shape=tuple(input_shape), name=INPUT_NAME)


def logit_head(features, dropout_rate: float, kernel_initializer="glorot_uniform"):
    """Pooled `features` -> dropout (when the rate is above 0) -> one float32 logit per image.

    float32 even under a mixed-precision policy, so the loss and the scores
    are computed at full precision.
    """
    x = features
    if dropout_rate > 0:
        x = layers.Dropout(dropout_rate, name="top_dropout")(x)
    return layers.Dense(1, kernel_initializer=kernel_initializer, dtype="float32", name="logit")(x)
