"""Models: EfficientNetV2-S with interchangeable attention, comparison backbones, the DCASE 2020 autoencoder.

Importing this package registers every model and custom layer, so
`load_model` (or `keras.saving.load_model` after the import) reads any
`.keras` file the toolkit wrote.
"""

import keras

from pump_keras.layers import feature_statistics, standardization  # noqa: F401  registers their layers
from pump_keras.models import autoencoder, conformer, efficientnet_v2, zoo  # noqa: F401  registers builders, layers
from pump_keras.models.registry import available_models, build, model_inputs, register_model


def load_model(path: str, compile: bool = False) -> keras.Model:
    """Loads a `.keras` model written by pump_keras (custom layers registered)."""
    return keras.saving.load_model(path, compile=compile)


__all__ = ["available_models", "build", "model_inputs", "register_model", "load_model"]
