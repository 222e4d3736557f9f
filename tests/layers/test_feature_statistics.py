"""The feature-statistics score: time statistics of a feature map, a diagonal-Gaussian logit, round trips."""

import keras
import numpy as np
import pytest

from pump_keras.layers.feature_statistics import (
    GaussianDistanceLogit, TimeStatistics, gaussian_distances, gaussian_statistics, machine_distances,
    machine_statistics)


def test_time_statistics_are_the_mean_then_the_std_over_columns_per_row_and_channel():
    maps = np.random.default_rng(0).normal(size=(3, 4, 5, 2)).astype(np.float32)
    out = keras.ops.convert_to_numpy(TimeStatistics()(maps))
    expected = np.concatenate([maps.mean(2).reshape(3, -1), maps.std(2).reshape(3, -1)], axis=1)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert TimeStatistics().compute_output_shape((None, 4, 5, 2)) == (None, 16)


def test_logit_is_the_scaled_mean_squared_z_score_and_survives_a_round_trip(tmp_path):
    normal = np.array([[0.0, 1.0], [2.0, 3.0], [1.0, 2.0]], np.float32)
    mean, scale = gaussian_statistics(normal, floor=0.0)
    np.testing.assert_allclose(mean, [1.0, 2.0])
    features = np.array([[1.0, 2.0], [1.0 + 2 * scale[0], 2.0]], np.float32)
    np.testing.assert_allclose(gaussian_distances(features, mean, scale), [0.0, 2.0], atol=1e-6)  # (2^2 + 0) / 2

    layer = GaussianDistanceLogit(threshold=0.5, spread=0.25)
    layer.set_statistics(mean, scale)
    expected = (np.array([[0.0], [2.0]]) - 0.5) / 0.25
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(features)), expected, atol=1e-5)
    inputs = keras.Input((2, 3, 1))
    model = keras.Model(inputs, GaussianDistanceLogit(threshold=0.5, spread=0.25)(TimeStatistics()(inputs)))
    model.layers[-1].set_statistics([0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 2.0, 2.0])
    model.save(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras")
    maps = np.arange(6, dtype=np.float32).reshape(1, 2, 3, 1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(maps)), keras.ops.convert_to_numpy(model(maps)))
    assert restored.layers[-1].get_config()["threshold"] == 0.5 and restored.layers[-1].get_config()["spread"] == 0.25


def test_options_and_statistics_are_checked():
    with pytest.raises(ValueError, match="spread"):
        GaussianDistanceLogit(spread=0.0)
    with pytest.raises(ValueError, match="two \\[D\\] vectors"):
        GaussianDistanceLogit().set_statistics([0.0, 1.0], [1.0])
    with pytest.raises(ValueError, match="positive"):
        GaussianDistanceLogit().set_statistics([0.0], [0.0])
    assert np.all(gaussian_statistics(np.ones((4, 3)))[1] > 0)  # the floor keeps a constant feature finite


def test_each_row_is_scored_under_its_own_machines_statistics():
    train = np.array([[0.0], [2.0], [10.0], [14.0]])
    statistics = machine_statistics(train, ["a", "a", "b", "b"])
    np.testing.assert_allclose(machine_distances(np.array([[1.0], [12.0]]), ["a", "b"], statistics), [0.0, 0.0])
    with pytest.raises(ValueError, match="c has no training clip"):
        machine_distances(np.array([[1.0]]), ["c"], statistics)
