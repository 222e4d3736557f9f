"""Every preset is a valid config that builds its model and survives a JSON round trip."""

import dataclasses
import inspect

import pytest

from pump_keras.config import PRESETS, EfficientNetV2Options, config_from_json, config_to_json, load_config, preset
from pump_keras.models.registry import builder
from pump_keras.training.setup import build_model, model_options


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_its_model_and_round_trips(name):
    config = preset(name)
    assert config.preset == name and config.run_dir == f"runs/{name}"
    assert config_from_json(config_to_json(config)) == config
    model = build_model(config)
    assert tuple(model.input_shape[1:]) == config.features.input_shape
    assert tuple(model.output_shape[1:]) == (1,)  # one logit per clip


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_switching_the_model_on_any_preset_just_works(name):
    # The preset's scaling is the paper network's own section: another model ignores it.
    config = load_config(name, overrides=["model.name=plain_cnn"])
    assert model_options(config.model, config.features.input_shape) == {"input_shape": config.features.input_shape}
    options = model_options(load_config(name, overrides=["model.name=plain_cnn", "model.options.plain_cnn.filters=[8]"])
                            .model, config.features.input_shape)
    assert options["filters"] == [8]


def test_the_paper_networks_config_section_has_its_builders_defaults():
    # The config cannot import the models, so the defaults are written twice; this keeps them one fact.
    parameters = inspect.signature(builder("efficientnetv2_s")).parameters
    for option in dataclasses.fields(EfficientNetV2Options):
        assert option.default == parameters[option.name].default, option.name
