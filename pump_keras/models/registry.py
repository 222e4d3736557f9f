"""A registry of model builders: a model is a name plus keyword options.

An `"images"` builder (the default) returns an uncompiled `keras.Model`
mapping images `[batch, H, W, C]` in [0, 1] to one logit per image (no
sigmoid: train with `BinaryCrossentropy(from_logits=True)`). A `"frames"`
builder (the DCASE 2020 autoencoder) maps feature vectors `[batch, D]` to
their reconstruction `[batch, D]`.

A leaf: it imports no model. Importing `pump_keras.models` imports the
built-in model modules, which register themselves here.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

import keras

INPUT_KINDS = ("images", "frames")
_BUILDERS: Dict[str, Callable[..., keras.Model]] = {}
_INPUTS: Dict[str, str] = {}


def register_model(name: str, inputs: str = "images"):
    """Decorator adding a builder to the registry under `name`; `inputs` is one of `INPUT_KINDS`."""
    if inputs not in INPUT_KINDS:
        raise ValueError(f"inputs must be one of {INPUT_KINDS}, got {inputs!r}.")

    def add(builder: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
        if name in _BUILDERS:
            raise ValueError(f"Model {name!r} is registered twice.")
        _BUILDERS[name] = builder
        _INPUTS[name] = inputs
        return builder

    return add


def available_models(inputs: Optional[str] = None) -> List[str]:
    """Registered model names, sorted; only those taking `inputs` ("images" or "frames") when given."""
    return sorted(name for name in _BUILDERS if inputs is None or _INPUTS[name] == inputs)


def model_inputs(name: str) -> str:
    """What model `name` takes: "images" or "frames"."""
    builder(name)  # the unknown-name error
    return _INPUTS[name]


def builder(name: str) -> Callable[..., keras.Model]:
    """The builder registered as `name` (its signature lists the model's options)."""
    if name not in _BUILDERS:
        raise ValueError(f"Unknown model {name!r}; available: {', '.join(sorted(_BUILDERS))}.")
    return _BUILDERS[name]


def build(name: str, **options) -> keras.Model:
    """Builds the registered model `name` with keyword `options`."""
    return builder(name)(**options)

