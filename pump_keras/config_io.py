"""Presets, and a `RunConfig` from a preset, a JSON/YAML file and `section.field=value` overrides."""

from __future__ import annotations

import copy
import dataclasses
import json
import typing
from typing import Iterable, Optional

import yaml

from pump_keras.config import (
    DataConfig, FeatureConfig, ModelConfig, RunConfig, SyntheticConfig, TrainConfig,
    to_dict)


class ConfigError(ValueError):
    """A config file, preset or override that cannot be used; the message says which and why."""


def paper_preset() -> RunConfig:
    """The paper's recipe: 224 px spectrograms, improved-CBAM EfficientNetV2-S, 200 epochs.

    The paper's values: 224 px `spectrogram` images, batch 32, 200 epochs,
    cosine decay 0.01 -> 0.001, MixUp and label smoothing (no values given),
    BCE on logits, 7:2:1 split. Ours, where the paper is silent: SGD with
    momentum 0.9 and L2 weight decay 1e-4 (the common PyTorch recipe), MixUp
    alpha 0.2, smoothing 0.1, class weights, the fixed dB window. All SNR
    folders of `data_dir` are used; `paper_pretrain_preset` is the paper's
    pretraining on -6 dB. Deterministic kernels are off: on GPUs they cost
    speed and some have none.
    """
    return RunConfig(
        preset="paper",
        run_dir="runs/paper",
        data=DataConfig(batch_size=32, split_ratios=(0.7, 0.2, 0.1)),
        features=FeatureConfig(kind="spectrogram", image_size=224),
        model=ModelConfig(name="efficientnetv2_s", attention="improved_cbam"),
        train=TrainConfig(epochs=200, learning_rate=0.01, final_learning_rate=0.001,
                          deterministic=False),
    )


def paper_pretrain_preset() -> RunConfig:
    """The paper's pretraining (its section 2.1): the `paper` recipe on the -6 dB MIMII folder only.

    The paper pretrains on the low-SNR -6 dB pump set "to improve the
    adaptability of the model in the real industrial environment", then
    fine-tunes; it does not say on which recordings, so the fine-tuning run
    is the user's choice (`paper` with `train.init_from` set to this run).
    """
    config = paper_preset()
    return dataclasses.replace(config, preset="paper_pretrain", run_dir="runs/paper_pretrain",
                               data=dataclasses.replace(config.data, snr_db=(-6.0,)))


def quick_preset() -> RunConfig:
    """CPU-sized and tuned on the learning benchmark (`benchmarks/learning.py`).

    The paper's network (improved-CBAM EfficientNetV2-S) at half width and a
    tenth of its depth (one block per stage, two in the last: seven in all),
    on an input chosen by the benchmark: 128 mel bands by 32
    time columns (a pump is stationary: rows matter more than columns), each
    clip standardised by its own dB mean and spread, the frequency position
    as the third channel, each band standardised by the training split's
    statistics (`model.input_standardization`). The recipe is the
    benchmark's, not the paper's: the `paper` preset's SGD with MixUp and
    label smoothing underfits a few hundred clips (training AUC about 0.85 after
    60 epochs), so AdamW at 1e-3 decaying to 1e-5 with weight decay 1e-4, no
    MixUp, no label smoothing, no made-up anomalies, 60 epochs, each
    training image rolled along time by a random shift (`train.time_roll`:
    a stationary pump sounds the same from any start), the last epoch kept.
    Made for the built-in synthetic recordings at the generator's
    default fault strength (48 normal and 24 abnormal 2-second clips per
    machine id at 0 dB, split 6:2:2 so the test split is not tiny): the whole
    loop in a few minutes on two cores. With its seeds, the default run is
    the learning benchmark's 0 dB condition at seed 0.
    """
    return RunConfig(
        preset="quick",
        run_dir="runs/quick",
        data=DataConfig(batch_size=16, split_ratios=(0.6, 0.2, 0.2)),
        features=FeatureConfig(kind="mel", image_size=128, image_width=32, normalization="clip",
                               frequency_channel=True),
        model=ModelConfig(width_multiplier=0.5, depth_multiplier=0.1, drop_connect_rate=0.0,
                          input_standardization=True),
        train=TrainConfig(epochs=60, optimizer="adamw", learning_rate=1e-3, final_learning_rate=1e-5,
                          weight_decay=1e-4, mixup_alpha=0.0, label_smoothing=0.0, time_roll=True),
        synthetic=SyntheticConfig(clips_per_class=48, abnormal_clips_per_id=24, seconds=2.0, snr_db=(0.0,)),
    )


PRESETS = {"paper": paper_preset, "paper_pretrain": paper_pretrain_preset, "quick": quick_preset}


def preset(name: str) -> RunConfig:
    """A fresh copy of preset `name`."""
    if name not in PRESETS:
        raise ConfigError(f"Unknown preset {name!r}; available: {', '.join(sorted(PRESETS))}.")
    return PRESETS[name]()


def read_config_file(path: str) -> dict:
    """The dict in a JSON or YAML config file (by extension; YAML otherwise)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as error:
        raise ConfigError(f"Cannot read config file {path}: {error.strerror}.") from error
    try:
        values = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"Config file {path} is not valid {'JSON' if path.endswith('.json') else 'YAML'}: {error}") from error
    if not isinstance(values, dict):
        raise ConfigError(f"Config file {path} must hold a mapping of sections, got {type(values).__name__}.")
    return values


def parse_override(text: str) -> tuple:
    """`"train.epochs=3"` -> `(("train", "epochs"), 3)`; values are read as YAML scalars/lists."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"Override {text!r} must look like section.field=value (e.g. train.epochs=3).")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(f"Override {text!r}: cannot read the value: {error}") from error
    return tuple(part.strip() for part in key.split(".")), parsed


def _merge(base: dict, update: dict, where: str = "") -> dict:
    """`base` updated recursively by `update`; unknown keys are reported by `from_dict`."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "options":
            merged[key] = _merge(merged[key], value, f"{where}{key}.")
        else:
            merged[key] = value
    return merged


def _coerce(value, annotation, where: str):
    """Lists to tuples where the field is a tuple; ints to floats where it is a float."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union:
        if value is None:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _coerce(value, non_none[0], where) if len(non_none) == 1 else value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}.")
        return tuple(value)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float, bool, str) and not isinstance(value, annotation):
        raise ConfigError(f"{where} must be {annotation.__name__}, got {value!r}.")
    return value


def from_dict(cls, values: dict, where: str = ""):
    """Builds dataclass `cls` from nested dicts; unknown or ill-typed keys are errors."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where or cls.__name__} must be a mapping, got {values!r}.")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"Unknown option {where}{unknown[0]}; {cls.__name__} has: {', '.join(sorted(fields))}.")
    kwargs = {}
    for name, value in values.items():
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            kwargs[name] = from_dict(annotation, value, f"{where}{name}.")
        else:
            kwargs[name] = _coerce(value, annotation, f"{where}{name}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where.rstrip('.') or cls.__name__}: {error}") from error


def load_config(preset_name: str = "quick", path: Optional[str] = None,
                overrides: Iterable[str] = ()) -> RunConfig:
    """The run config: preset, then the file (if any), then each override in order."""
    values = to_dict(preset(preset_name))
    if path:
        values = _merge(values, read_config_file(path))
    for text in overrides:
        keys, value = parse_override(text)
        update = value
        for key in reversed(keys):
            update = {key: update}
        values = _merge(values, update)
    return from_dict(RunConfig, values)


def config_from_json(text: str) -> RunConfig:
    """A `RunConfig` from the JSON a run directory holds."""
    return from_dict(RunConfig, json.loads(text))


def config_to_json(config: RunConfig) -> str:
    """The JSON of a `RunConfig`, keys in field order."""
    return json.dumps(to_dict(config), indent=2) + "\n"


__all__ = ["ConfigError", "PRESETS", "preset", "paper_preset", "paper_pretrain_preset", "quick_preset",
           "load_config", "read_config_file", "parse_override", "from_dict", "config_from_json", "config_to_json"]
