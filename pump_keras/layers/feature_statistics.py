"""A normal-only score from a feature map: its time statistics, and their distance from a machine's normal ones.

`TimeStatistics` pools a feature map over time into its per-row mean and
spread (a pump is stationary: where in the clip a sound falls does not
matter, which frequency row it falls in does). `GaussianDistanceLogit` holds
one machine's normal statistics (the per-feature mean and spread of its
training clips) and turns a clip's statistics into a logit,
`(distance - threshold) / spread`, like `ReferenceDistanceLogit`, so the
exported model is self-contained and its `anomaly_score > 0.5` exactly where
the run's threshold flags a clip.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="pump_keras")
class TimeStatistics(keras.layers.Layer):
    """`[batch, rows, columns, channels]` to `[batch, 2 * rows * channels]`: mean, then std over the columns."""

    def call(self, feature_map):
        feature_map = ops.cast(feature_map, "float32")
        mean = ops.mean(feature_map, axis=2)
        std = ops.sqrt(ops.maximum(ops.mean(ops.square(feature_map), axis=2) - ops.square(mean), 0.0))
        return ops.concatenate([ops.reshape(mean, (ops.shape(mean)[0], -1)),
                                ops.reshape(std, (ops.shape(std)[0], -1))], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 2 * int(input_shape[1]) * int(input_shape[3]))


@keras.saving.register_keras_serializable(package="pump_keras")
class GaussianDistanceLogit(keras.layers.Layer):
    """`[batch, D]` features to `[batch, 1]` logits: `(distance - threshold) / spread`.

    The distance is the mean squared z-score of the features under one
    machine's normal statistics (a diagonal Gaussian: `mean(((x - mu) / sigma)^2)`).

    Args:
        threshold: the decision threshold of the distance.
        spread: the distance's unit (e.g. the spread of normal validation
            distances); must be positive.
    """

    def __init__(self, threshold: float = 0.0, spread: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if not spread > 0:
            raise ValueError(f"spread must be positive, got {spread!r}.")
        self.threshold = float(threshold)
        self.spread = float(spread)

    def build(self, input_shape):
        size = int(input_shape[-1])
        self.normal_mean = self.add_weight(shape=(size,), initializer="zeros", trainable=False, name="normal_mean")
        self.normal_scale = self.add_weight(shape=(size,), initializer="ones", trainable=False, name="normal_scale")

    def set_statistics(self, mean, scale) -> None:
        """Stores a machine's per-feature normal mean and spread (`[D]` each; spread positive)."""
        mean, scale = np.asarray(mean, dtype=np.float32), np.asarray(scale, dtype=np.float32)
        if mean.shape != scale.shape or mean.ndim != 1:
            raise ValueError(f"mean and scale must be two [D] vectors, got shapes {mean.shape} and {scale.shape}.")
        if not np.all(scale > 0):
            raise ValueError("every scale must be positive.")
        if not self.built:
            self.build((None, mean.shape[0]))
        self.normal_mean.assign(mean)
        self.normal_scale.assign(scale)

    def call(self, features):
        z = ops.divide(ops.subtract(ops.cast(features, "float32"), self.normal_mean), self.normal_scale)
        distance = ops.mean(ops.square(z), axis=-1, keepdims=True)
        return ops.divide(ops.subtract(distance, self.threshold), self.spread)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 1)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold, "spread": self.spread}


def gaussian_statistics(features: np.ndarray, floor: float = 1e-3):
    """`(mean, scale)` of `[n, D]` normal features; the scale is the std plus `floor` (no feature divides by 0)."""
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0).astype(np.float32), (features.std(axis=0) + floor).astype(np.float32)


def gaussian_distances(features: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The mean squared z-score of each row of `features` (what `GaussianDistanceLogit` computes)."""
    z = (np.asarray(features, dtype=np.float64) - mean) / scale
    return np.mean(z ** 2, axis=1)


def machine_statistics(features: np.ndarray, machines) -> dict:
    """`{machine: (mean, scale)}` of each machine's rows of `[n, D]` normal `features` (`gaussian_statistics`)."""
    machines = np.asarray(machines)
    return {machine: gaussian_statistics(features[machines == machine]) for machine in np.unique(machines)}


def machine_distances(features: np.ndarray, machines, statistics: dict) -> np.ndarray:
    """Each row's `gaussian_distances` under its own machine's `statistics` (from `machine_statistics`).

    Raises:
        ValueError: a row's machine has no statistics (no training clip).
    """
    features, machines = np.asarray(features), np.asarray(machines)
    distances = np.zeros(len(machines))
    for machine in np.unique(machines):
        if machine not in statistics:
            raise ValueError(f"{machine} has no training clip.")
        members = machines == machine
        distances[members] = gaussian_distances(features[members], *statistics[machine])
    return distances


__all__ = ["TimeStatistics", "GaussianDistanceLogit", "gaussian_statistics", "gaussian_distances",
           "machine_statistics", "machine_distances"]
