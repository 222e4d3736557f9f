"""ArcFace logits by hand, and the layer's save/load round trip."""

import math

import keras
import numpy as np
import pytest

from pump_keras.layers.angular_margin import ArcMarginLogits, OwnClassesLogit


def test_margin_widens_the_true_class_angle_only(tmp_path):
    layer = ArcMarginLogits(3, scale=10.0, margin=0.3)
    embeddings = np.array([[1.0, 0.2], [-0.5, 1.0]], np.float32)
    layer.build((None, 2))
    centers = np.array([[1.0, 0.0, -1.0], [0.0, 1.0, 1.0]], np.float32)
    layer.centers.assign(centers)
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    cosine = unit @ (centers / np.linalg.norm(centers, axis=0, keepdims=True))
    plain = keras.ops.convert_to_numpy(layer(embeddings))
    np.testing.assert_allclose(plain, 10.0 * cosine, rtol=1e-5)
    labels = np.array([0, 2])
    margin = keras.ops.convert_to_numpy(layer(embeddings, labels))
    expected = 10.0 * cosine
    for row, label in enumerate(labels):
        expected[row, label] = 10.0 * math.cos(math.acos(cosine[row, label]) + 0.3)
    np.testing.assert_allclose(margin, expected, rtol=1e-5, atol=1e-5)


def test_past_pi_the_target_keeps_falling():
    layer = ArcMarginLogits(2, scale=1.0, margin=0.5)
    layer.build((None, 2))
    layer.centers.assign(np.array([[1.0, 0.0], [0.0, 1.0]], np.float32))
    angles = np.linspace(2.5, 3.1, 7)  # theta + m passes pi
    embeddings = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    target = keras.ops.convert_to_numpy(layer(embeddings, np.zeros(7, np.int32)))[:, 0]
    assert np.all(np.diff(target) < 0)


def test_round_trip_in_a_model(tmp_path):
    embeddings = keras.Input((4,))
    labels = keras.Input((), dtype="int32")
    model = keras.Model([embeddings, labels], ArcMarginLogits(5, name="arcface")(embeddings, labels))
    data = [np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32), np.array([0, 4, 2], np.int32)]
    model.save(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(data)), keras.ops.convert_to_numpy(model(data)),
                               atol=1e-6)
    assert restored.get_layer("arcface").get_config()["margin"] == 0.5


@pytest.mark.parametrize("options, pattern", [({"classes": 0}, "classes"), ({"classes": 2, "scale": 0}, "scale"),
                                              ({"classes": 2, "margin": 2.0}, "margin")])
def test_bad_options(options, pattern):
    with pytest.raises(ValueError, match=pattern):
        ArcMarginLogits(**options)


def test_own_classes_logit_is_the_scaled_neg_log_prob_of_the_machines_classes(tmp_path):
    logits = np.log(np.array([[0.2, 0.3, 0.5]], np.float32))
    layer = OwnClassesLogit([1, 1, 0], threshold=0.1, spread=2.0)
    expected = (-np.log(0.5) - 0.1) / 2.0
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(logits)), [[expected]], atol=1e-6)
    inputs = keras.Input((3,))
    model = keras.Model(inputs, layer(inputs))
    model.save(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(logits)), [[expected]], atol=1e-6)
    assert restored.layers[-1].get_config()["own"] == [1, 1, 0]
    for own in ([], [0, 0], [2, 1]):
        with pytest.raises(ValueError, match="0/1 mask"):
            OwnClassesLogit(own)
