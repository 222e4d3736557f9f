"""Everything a user can set: the typed config (`schema`), the named presets, and loading from files and overrides."""

from pump_keras.config.loading import (
    config_from_json, config_to_json, from_dict, load_config, parse_override, read_config_file)
from pump_keras.config.presets import PRESETS, paper_preset, paper_pretrain_preset, preset, quick_preset
from pump_keras.config.schema import (
    CHECKPOINT_METRICS, CLASS_BALANCE, CPU_ALLOCATORS, DEFAULT_DB_RANGES, DEFAULT_MAX_FPR, FEATURE_KINDS,
    LEGACY_MODEL_FIELDS, MIXED_PRECISION, NORMALIZATIONS, OPTIMIZERS, PAPER_MODEL, PROTOCOLS, STRATEGIES,
    THRESHOLD_CRITERIA, DataConfig, EfficientNetV2Options, EvalConfig, ExportConfig, FeatureConfig, ModelConfig,
    NormalOnlyConfig, RunConfig, SyntheticConfig, TrainConfig, replace, to_dict)
from pump_keras.errors import ConfigError

__all__ = [
    "CHECKPOINT_METRICS", "CLASS_BALANCE", "CPU_ALLOCATORS", "DEFAULT_DB_RANGES", "DEFAULT_MAX_FPR", "FEATURE_KINDS",
    "LEGACY_MODEL_FIELDS", "MIXED_PRECISION", "NORMALIZATIONS", "OPTIMIZERS", "PAPER_MODEL", "PROTOCOLS", "STRATEGIES",
    "THRESHOLD_CRITERIA",
    "DataConfig", "EfficientNetV2Options", "EvalConfig", "ExportConfig", "FeatureConfig", "ModelConfig",
    "NormalOnlyConfig", "RunConfig",
    "SyntheticConfig", "TrainConfig", "replace", "to_dict",
    "PRESETS", "paper_preset", "paper_pretrain_preset", "preset", "quick_preset",
    "config_from_json", "config_to_json", "from_dict", "load_config", "parse_override", "read_config_file",
    "ConfigError",
]
