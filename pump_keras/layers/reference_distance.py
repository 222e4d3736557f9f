"""A normal-only score inside the model: distance from an embedding to a machine's normal training embeddings.

The exported model of a normal-only run is self-contained: the reference
embeddings (the machine's normal training clips) are a weight of this layer,
and its output is a logit, `(distance - threshold) / spread`, positive above
the machine's decision threshold, so the serving signatures' `anomaly_score`
(its sigmoid) and `is_anomaly` (score >= 0.5) mean what they mean for the
classifier.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from pump_keras.layers.angular_margin import l2_normalize


@keras.saving.register_keras_serializable(package="pump_keras")
class ReferenceDistanceLogit(keras.layers.Layer):
    """`[batch, D]` embeddings to `[batch, 1]` logits: `(distance - threshold) / spread`.

    The distance is the mean cosine distance to the `k` nearest references.

    Args:
        references: how many reference embeddings the layer holds (set them
            with `set_references`, or load them with the model).
        k: neighbours averaged.
        threshold: the decision threshold of the distance.
        spread: the distance's unit (e.g. the spread of normal validation
            distances); must be positive.
    """

    def __init__(self, references: int, k: int = 1, threshold: float = 0.0, spread: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(references, int) or references < 1:
            raise ValueError(f"references must be a positive int, got {references!r}.")
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}.")
        if not spread > 0:
            raise ValueError(f"spread must be positive, got {spread!r}.")
        self.references = references
        self.k = min(k, references)
        self.threshold = float(threshold)
        self.spread = float(spread)

    def build(self, input_shape):
        self.reference_embeddings = self.add_weight(
            shape=(self.references, int(input_shape[-1])), initializer="zeros", trainable=False,
            name="reference_embeddings")

    def set_references(self, embeddings) -> None:
        """Stores `[references, D]` embeddings."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if not self.built:
            self.build((None, embeddings.shape[-1]))
        self.reference_embeddings.assign(embeddings)

    def call(self, embeddings):
        cosine = ops.matmul(l2_normalize(ops.cast(embeddings, "float32")),
                            ops.transpose(l2_normalize(ops.convert_to_tensor(self.reference_embeddings))))
        nearest, _ = ops.top_k(cosine, self.k)  # the largest cosines are the smallest distances
        distance = ops.mean(1.0 - nearest, axis=-1, keepdims=True)
        return ops.divide(ops.subtract(distance, self.threshold), self.spread)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 1)

    def get_config(self):
        return {**super().get_config(), "references": self.references, "k": self.k, "threshold": self.threshold,
                "spread": self.spread}


__all__ = ["ReferenceDistanceLogit"]
