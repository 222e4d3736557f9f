"""pump_keras: hear when an industrial pump goes wrong.

Audio -> spectrogram image -> EfficientNetV2-S with improved CBAM attention
-> normal/abnormal, after "EfficientNetV2 Pump Anomaly Detection Method Based
on Improved CBAM".

The public API (`__all__`) is below; everything else is internal and may
change. Names load on first use, so `import pump_keras` stays cheap and a
command can set TensorFlow's log level before TensorFlow is imported.

    import pump_keras

    config = pump_keras.load_config("quick", overrides=["run_dir=runs/mine"])
    result = pump_keras.train_run(config)            # train, or resume
    report = pump_keras.evaluate_run(config.run_dir)  # RUN/report/report.md
    folder = pump_keras.export_run(config.run_dir, "saved_models/pump_anomaly")
    scorer = pump_keras.load_scorer(folder)           # WAV bytes in, scores out
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> (module, name in that module)
_PUBLIC = {
    # configuration
    "RunConfig": ("pump_keras.config", "RunConfig"),
    "DataConfig": ("pump_keras.config", "DataConfig"),
    "FeatureConfig": ("pump_keras.config", "FeatureConfig"),
    "ModelConfig": ("pump_keras.config", "ModelConfig"),
    "TrainConfig": ("pump_keras.config", "TrainConfig"),
    "EvalConfig": ("pump_keras.config", "EvalConfig"),
    "ExportConfig": ("pump_keras.config", "ExportConfig"),
    "SyntheticConfig": ("pump_keras.config", "SyntheticConfig"),
    "PRESETS": ("pump_keras.config", "PRESETS"),
    "preset": ("pump_keras.config", "preset"),
    "load_config": ("pump_keras.config", "load_config"),
    "replace": ("pump_keras.config", "replace"),
    # data
    "index_dataset": ("pump_keras.data.index", "index_dataset"),
    "generate_dataset": ("pump_keras.data.synthetic", "generate_dataset"),
    # models
    "build_model": ("pump_keras.training.setup", "build_model"),
    "load_model": ("pump_keras.models", "load_model"),
    "load_run_config": ("pump_keras.run_dir", "load_run_config"),
    "available_models": ("pump_keras.models", "available_models"),
    # train, evaluate, deploy
    "train_run": ("pump_keras.training.loop", "train"),
    "TrainResult": ("pump_keras.training.loop", "TrainResult"),
    "evaluate_run": ("pump_keras.evaluation.report", "evaluate_run"),
    "export_run": ("pump_keras.deploy.export", "export_run"),
    "load_scorer": ("pump_keras.deploy.predict", "load_scorer"),
    "Scorer": ("pump_keras.deploy.predict", "Scorer"),
    # errors
    "PumpKerasError": ("pump_keras.errors", "PumpKerasError"),
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'pump_keras' has no attribute {name!r}")
    module, attribute = _PUBLIC[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
