"""Presets, config files and overrides, and their errors."""

import json

import pytest

from pump_keras.config import (
    PRESETS, ConfigError, RunConfig, config_from_json, config_to_json, load_config, parse_override, preset, to_dict)


def test_paper_preset_is_the_papers_recipe():
    config = preset("paper")
    assert config.features.image_size == 224 and config.features.kind == "spectrogram"
    assert config.data.batch_size == 32 and config.data.split_ratios == (0.7, 0.2, 0.1)
    assert (config.model.name, config.model.efficientnetv2_s.attention) == ("efficientnetv2_s", "improved_cbam")
    train = config.train
    assert (train.epochs, train.learning_rate, train.final_learning_rate) == (200, 0.01, 0.001)
    assert (train.momentum, train.weight_decay, train.label_smoothing) == (0.9, 1e-4, 0.1)
    assert train.mixup_alpha == 0.2


def test_paper_preset_keeps_the_fixed_input_of_the_paper():
    features = preset("paper").features
    assert features.normalization == "fixed_db" and not features.frequency_channel
    assert features.image_shape == (224, 224) and not preset("paper").model.input_standardization
    assert preset("paper").train.optimizer == "sgd"


def test_only_the_quick_preset_adds_augmentation_the_paper_does_not_name():
    # The time roll is the learning benchmark's choice for `quick`; the paper
    # names MixUp and label smoothing only, so `paper` keeps to them.
    assert preset("quick").train.time_roll
    paper = preset("paper").train
    assert not paper.time_roll and paper.spec_augment_masks == 0 and paper.pseudo_anomaly_fraction == 0


def test_the_quick_presets_recipe_is_the_benchmarks_not_the_papers():
    # The learning benchmark found the paper preset's SGD + MixUp + smoothing
    # underfits a few hundred clips; `quick` says so by differing from `paper`.
    quick, paper = preset("quick").train, preset("paper").train
    assert (quick.optimizer, quick.learning_rate, quick.final_learning_rate) == ("adamw", 1e-3, 1e-5)
    assert (quick.mixup_alpha, quick.label_smoothing, quick.pseudo_anomaly_fraction) == (0.0, 0.0, 0.0)
    assert (paper.optimizer, paper.mixup_alpha, paper.label_smoothing) == ("sgd", 0.2, 0.1)


def test_paper_pretrain_preset_pretrains_on_the_minus_6_db_set_as_the_paper_does():
    # Paper section 2.1: the -6 dB MIMII pump set is the pretraining corpus.
    pretrain, paper = preset("paper_pretrain"), preset("paper")
    assert pretrain.data.snr_db == (-6.0,) and paper.data.snr_db is None
    assert pretrain.preset == "paper_pretrain" and pretrain.run_dir == "runs/paper_pretrain"
    assert (pretrain.model, pretrain.train, pretrain.features) == (paper.model, paper.train, paper.features)
    assert load_config("paper_pretrain", overrides=["data.data_dir=/data/mimii"]).data.snr_db == (-6.0,)


def test_quick_preset_is_cpu_sized_on_default_strength_faults():
    config = preset("quick")
    pixels = config.features.image_shape[0] * config.features.image_shape[1]
    assert pixels <= 96 * 96
    network = config.model.efficientnetv2_s
    assert network.width_multiplier < 1 and network.depth_multiplier < 1
    # The learning benchmark's choice: seven blocks carried over best (README, "quick").
    assert (network.width_multiplier, network.depth_multiplier) == (0.5, 0.1)
    assert config.train.epochs <= 60 and config.data.data_dir is None
    assert config.synthetic.fault_boost_db == 0.0  # never boosted so the demo looks good


def test_presets_are_fresh_copies():
    first = preset("quick")
    first.train.epochs = 1
    assert preset("quick").train.epochs != 1
    assert set(PRESETS) == {"paper", "paper_pretrain", "quick", "dcase2020_ae", "normal_only"}


def test_file_then_overrides(tmp_path):
    yaml_file = tmp_path / "settings.yaml"
    yaml_file.write_text("train:\n  epochs: 7\n  seed: 3\ndata:\n  snr_db: [-6]\n")
    config = load_config("paper", str(yaml_file), ["train.epochs=9", "model.options={plain_cnn: {kernel_size: 5}}"])
    assert config.train.epochs == 9 and config.train.seed == 3
    assert config.data.snr_db == (-6.0,)
    assert config.model.options == {"plain_cnn": {"kernel_size": 5}}
    assert config.features.image_size == 224  # untouched preset values stay

    json_file = tmp_path / "settings.json"
    json_file.write_text(json.dumps({"features": {"kind": "mel", "image_size": 128}}))
    config = load_config("quick", str(json_file))
    assert (config.features.kind, config.features.image_size) == ("mel", 128)


def test_json_round_trip():
    config = load_config("quick", overrides=["data.machine_ids=[0, 2]", "features.db_range=[-70, 10]"])
    assert config_from_json(config_to_json(config)) == config
    assert isinstance(config, RunConfig) and config.data.machine_ids == ("00", "02")
    assert config.features.db_range == (-70.0, 10.0)


@pytest.mark.parametrize("arguments, message", [
    (("fast", None, []), "Unknown preset 'fast'; available: dcase2020_ae, normal_only, paper, paper_pretrain, quick"),
    (("quick", None, ["train.epoch=3"]), "Unknown option train.epoch"),
    (("quick", None, ["trainer.epochs=3"]), "Unknown option trainer"),
    (("quick", None, ["train.epochs=three"]), "train.epochs must be int"),
    (("quick", None, ["train.strategy=ring"]), "strategy must be one of"),
    (("quick", None, ["train.epochs"]), "must look like section.field=value"),
    (("quick", None, ["features.kind=cqt"]), "Unknown feature kind 'cqt'"),
])
def test_bad_settings_are_named(arguments, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(*arguments)


def test_bad_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="Cannot read config file .*missing.yaml"):
        load_config("quick", str(tmp_path / "missing.yaml"))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="broken.json is not valid JSON"):
        load_config("quick", str(broken))
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config("quick", str(listing))


def test_override_values_are_yaml():
    assert parse_override("train.mixed_precision=bf16") == (("train", "mixed_precision"), "bf16")
    assert parse_override("data.snr_db=[-6, 0]") == (("data", "snr_db"), [-6, 0])
    assert parse_override("train.init_from=") == (("train", "init_from"), None)
    assert to_dict(load_config("quick", overrides=["train.learning_rate=1"]))["train"]["learning_rate"] == 1.0


def test_train_keeps_the_run_dir_of_its_config_file(tmp_path):
    from pump_keras.cli.train import build_parser, resolve_config

    def resolved(*argv):
        return resolve_config(build_parser().parse_args(list(argv)))

    settings = tmp_path / "settings.yaml"
    settings.write_text("run_dir: runs/mine\ntrain:\n  epochs: 7\n")
    assert resolved("--config", str(settings)).run_dir == "runs/mine"
    assert resolved("--config", str(settings), "--run-dir", "runs/flag").run_dir == "runs/flag"
    assert resolved("--config", str(settings), "--set", "run_dir=runs/set").run_dir == "runs/set"
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"train": {"epochs": 7}}))
    assert resolved("--config", str(plain)).run_dir == "runs/quick"
    assert resolved("--preset", "paper", "--config", str(plain)).run_dir == "runs/paper"
