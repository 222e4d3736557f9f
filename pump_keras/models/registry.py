"""A registry of model builders: a model is a name plus keyword options.

Every builder returns an uncompiled `keras.Model` mapping images
`[batch, H, W, C]` in [0, 1] to one logit per image (no sigmoid: train with
`BinaryCrossentropy(from_logits=True)`).

A leaf: it imports no model. Importing `pump_keras.models` imports the
built-in model modules, which register themselves here.
"""

from __future__ import annotations

from typing import Callable, Dict, List

import keras

_BUILDERS: Dict[str, Callable[..., keras.Model]] = {}


def register_model(name: str):
    """Decorator adding a builder to the registry under `name`."""

    def add(builder: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
        if name in _BUILDERS:
            raise ValueError(f"Model {name!r} is registered twice.")
        _BUILDERS[name] = builder
        return builder

    return add


def available_models() -> List[str]:
    """Registered model names, sorted."""
    return sorted(_BUILDERS)


def builder(name: str) -> Callable[..., keras.Model]:
    """The builder registered as `name` (its signature lists the model's options)."""
    if name not in _BUILDERS:
        raise ValueError(f"Unknown model {name!r}; available: {', '.join(sorted(_BUILDERS))}.")
    return _BUILDERS[name]


def build(name: str, **options) -> keras.Model:
    """Builds the registered model `name` with keyword `options`."""
    return builder(name)(**options)

