"""Per-frequency standardisation of the input image, learnt from the training split.

`RowStandardization` maps an image `[batch, rows, columns, channels]` to
`(x - mean[row, channel]) / std[row, channel]`, with the mean and standard
deviation of each image row (a frequency band) taken over the training
split's images and their time axis. A band that is always loud and one that
is always quiet then look alike, so what stands out is a band that is louder
or quieter *than usual*: the deviation a fault causes. The logistic
regression baseline gets the same help from its `StandardScaler`.

The statistics are non-trainable weights: they are saved with the model,
and the exported model applies them to served audio exactly as in training.
Entries that do not vary at all (the frequency-position channel, whose value
is the same for every image) are passed through unchanged.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

MIN_STD = 1e-3  # below this a row is constant and passes unchanged


@keras.saving.register_keras_serializable(package="pump_keras")
class RowStandardization(keras.layers.Layer):
    """`(x - mean) / std` per image row and channel; statistics set by `set_statistics`.

    Until statistics are set it is the identity (mean 0, std 1).
    """

    def build(self, input_shape):
        rows, channels = input_shape[1], input_shape[-1]
        if rows is None or channels is None:
            raise ValueError(f"RowStandardization needs static rows and channels, got {input_shape}.")
        self.mean = self.add_weight(shape=(rows, 1, channels), initializer="zeros", trainable=False,
                                    name="mean")
        self.std = self.add_weight(shape=(rows, 1, channels), initializer="ones", trainable=False,
                                   name="std")

    def call(self, images):
        mean = ops.cast(self.mean, images.dtype)
        std = ops.cast(self.std, images.dtype)
        return (images - mean) / std

    def compute_output_shape(self, input_shape):
        return input_shape

    def set_statistics(self, batches) -> None:
        """Sets mean and std from image batches `[B, rows, columns, channels]`, over images and columns.

        `batches` is any iterable of arrays (e.g. a tf.data dataset's images);
        it is read once, in float64 sums, so its size is not bounded by memory.
        """
        count, total, squares = 0, 0.0, 0.0
        for batch in batches:
            batch = np.asarray(batch, dtype=np.float64)
            count += batch.shape[0] * batch.shape[2]
            total = total + batch.sum(axis=(0, 2))
            squares = squares + np.square(batch).sum(axis=(0, 2))
        if count == 0:
            raise ValueError("RowStandardization.set_statistics got no images.")
        mean = total / count
        std = np.sqrt(np.maximum(squares / count - mean ** 2, 0.0))
        constant = std < MIN_STD
        mean[constant], std[constant] = 0.0, 1.0
        self.mean.assign(mean[:, None, :].astype("float32"))
        self.std.assign(std[:, None, :].astype("float32"))


def with_row_standardization(model: keras.Model, name: str = "row_standardization") -> keras.Model:
    """`model` (functional, one image input) with a `RowStandardization` right after its input.

    The result is one flat functional model (layer names and weights as in
    `model`, plus the new layer's two), not a model nested in another.
    """
    images = keras.Input(model.input_shape[1:], name=model.inputs[0].name.split(":")[0] or "images")
    standardization = RowStandardization(name=name)

    def call_function(layer, *args, **kwargs):
        if args and args[0] is images:
            args = (standardization(images), *args[1:])
        return layer(*args, **kwargs)

    # The same layer objects, called again on the new input: weights are shared, not copied.
    return keras.models.clone_model(model, input_tensors=images, clone_function=lambda layer: layer,
                                    call_function=call_function)


def row_standardization(model: keras.Model):
    """The model's `RowStandardization` layer, or None."""
    for layer in model.layers:
        if isinstance(layer, RowStandardization):
            return layer
    return None


__all__ = ["RowStandardization", "with_row_standardization", "row_standardization", "MIN_STD"]
