"""RowStandardization: per-frequency input standardisation inside the model."""

import keras
import numpy as np
import pytest

from pump_keras.config import FeatureConfig, ModelConfig, RunConfig
from pump_keras.layers.standardization import RowStandardization, row_standardization, with_row_standardization
from pump_keras.models import build, load_model
from pump_keras.training import setup


def images(count=6, rows=32, columns=40, seed=0):
    rng = np.random.default_rng(seed)
    band_levels = np.linspace(-3.0, 5.0, rows)[None, :, None, None]  # each row its own level
    planes = band_levels + rng.normal(0.0, 0.5, (count, rows, columns, 1)) * np.linspace(0.5, 2, rows)[None, :, None, None]
    position = np.broadcast_to(np.linspace(1, 0, rows)[None, :, None, None], (count, rows, columns, 1))
    return np.concatenate([planes, planes, position], axis=-1).astype("float32")


def test_statistics_standardise_each_row_and_spare_constant_channels():
    data = images()
    layer = RowStandardization()
    layer.build(data.shape)
    np.testing.assert_array_equal(layer(data), data)  # identity before statistics
    layer.set_statistics([data[:4], data[4:]])  # streamed in two batches
    out = keras.ops.convert_to_numpy(layer(data))
    np.testing.assert_allclose(out[..., :2].mean(axis=(0, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out[..., :2].std(axis=(0, 2)), 1.0, atol=1e-4)
    np.testing.assert_array_equal(out[..., 2], data[..., 2])  # the frequency position passes
    with pytest.raises(ValueError, match="no images"):
        layer.set_statistics([])


@pytest.mark.parametrize("name,options", [
    ("efficientnetv2_s", {"width_multiplier": 0.25, "depth_multiplier": 0.25}),
    ("plain_cnn", {}),
])
def test_prepended_to_any_model_flat_and_round_trips(tmp_path, name, options):
    data = images(rows=32, columns=32)
    model = build(name, input_shape=(32, 32, 3), **options)
    reference = keras.ops.convert_to_numpy(model(data))
    wrapped = with_row_standardization(model)
    assert isinstance(wrapped.layers[1], RowStandardization)
    assert not any(isinstance(layer, keras.Model) for layer in wrapped.layers)  # flat, not nested
    np.testing.assert_allclose(keras.ops.convert_to_numpy(wrapped(data)), reference, rtol=1e-5, atol=1e-6)
    row_standardization(wrapped).set_statistics([data])
    changed = keras.ops.convert_to_numpy(wrapped(data))
    assert not np.allclose(changed, reference)
    path = str(tmp_path / "model.keras")
    wrapped.save(path)
    loaded = load_model(path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(data)), changed, rtol=1e-5, atol=1e-6)
    config = row_standardization(loaded).get_config()
    assert RowStandardization.from_config(config).name == config["name"]


def test_the_model_config_switches_it_on():
    config = RunConfig(features=FeatureConfig(image_size=32, frequency_channel=True),
                       model=ModelConfig(name="plain_cnn", input_standardization=True))
    model = setup.build_model(config)
    assert row_standardization(model) is not None
    assert setup.fit_input_statistics(model, [images(rows=32, columns=32)])
    plain = setup.build_model(RunConfig(features=FeatureConfig(image_size=32), model=ModelConfig(name="plain_cnn")))
    assert row_standardization(plain) is None and not setup.fit_input_statistics(plain, [])
