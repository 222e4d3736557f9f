"""The exported normal-only score: distance to reference embeddings as a logit, and its round trip."""

import keras
import numpy as np
import pytest

from pump_keras.layers.reference_distance import ReferenceDistanceLogit


def test_logit_is_the_scaled_distance_above_the_threshold(tmp_path):
    references = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], np.float32)
    layer = ReferenceDistanceLogit(3, k=2, threshold=0.2, spread=0.5)
    layer.set_references(references)
    embeddings = np.array([[3.0, 0.0], [1.0, 1.0]], np.float32)
    # Row 1: distances 0, 1, 2 -> the two nearest average 0.5. Row 2: 1 - 0.707 twice.
    expected = (np.array([[0.5], [1 - 2 ** -0.5]]) - 0.2) / 0.5
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(embeddings)), expected, atol=1e-6)

    inputs = keras.Input((2,))
    model = keras.Model(inputs, layer(inputs))
    model.save(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(embeddings)), expected, atol=1e-6)
    assert restored.layers[-1].get_config()["k"] == 2


def test_k_is_capped_at_the_references_and_options_are_checked():
    assert ReferenceDistanceLogit(2, k=5).k == 2
    for options in ({"references": 0}, {"references": 2, "k": 0}, {"references": 2, "spread": 0.0}):
        with pytest.raises(ValueError):
            ReferenceDistanceLogit(**options)
