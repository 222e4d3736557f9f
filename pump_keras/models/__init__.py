"""Models: EfficientNetV2-S with interchangeable attention, and comparison backbones."""

from pump_keras.models.registry import available_models, build, register_model

__all__ = ["available_models", "build", "register_model"]
