"""Every preset is a valid config that builds its model and survives a JSON round trip."""

import dataclasses
import inspect

import pytest

from pump_keras.config import PRESETS, EfficientNetV2Options, config_from_json, config_to_json, load_config, preset
from pump_keras.models.registry import builder, model_inputs
from pump_keras.training.setup import build_model, model_options


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_its_model_and_round_trips(name):
    config = preset(name)
    assert config.preset == name and config.run_dir == f"runs/{name}"
    assert config_from_json(config_to_json(config)) == config
    model = build_model(config)
    if model_inputs(config.model.name) == "frames":  # frame vectors in, their reconstruction out
        assert tuple(model.input_shape[1:]) == tuple(model.output_shape[1:]) == config.features.vector_shape
        return
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


def test_dcase2020_ae_preset_is_the_official_recipe():
    config = preset("dcase2020_ae")
    features = config.features
    assert (features.kind, features.n_mels, features.n_fft, features.hop_length, features.context_frames) == (
        "mel", 128, 1024, 512, 5)
    assert features.vector_shape == (640,)
    assert (config.model.name, config.data.protocol, config.data.batch_size) == ("dcase2020_ae", "normal_only", 512)
    assert (config.train.optimizer, config.train.learning_rate, config.train.final_learning_rate,
            config.train.epochs, config.train.weight_decay) == ("adam", 1e-3, 1e-3, 100, 0.0)
    train, val, _ = config.data.split_ratios
    assert val / (train + val) == pytest.approx(0.1)  # the baseline's validation_split on DCASE's train/
    assert not config.export.enabled
    assert (config.evaluation.threshold_criterion, config.evaluation.target_fpr) == ("gamma", 0.1)
