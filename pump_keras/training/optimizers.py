"""Optimizers of the recipe whose weight decay means what it says.

Keras' `weight_decay` argument is *decoupled* (Loshchilov & Hutter): each step
subtracts `lr * weight_decay * w` outside the momentum. PyTorch's
`SGD(weight_decay=...)`, which the paper's PyTorch code would use, instead adds
`weight_decay * w` to the gradient, so the decay runs through the momentum
buffer; with momentum 0.9 that is about ten times stronger. `SGDWithL2` is
that coupled form (L2 regularisation of the loss, as the name says).
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="pump_keras")
class SGDWithL2(keras.optimizers.SGD):
    """SGD with momentum whose gradient gets `l2 * w` added before the update (PyTorch's weight decay).

    Args:
        l2: the coefficient; `0` is plain SGD. Applied to every trainable
            variable, as PyTorch's default parameter group does.
        **kwargs: `keras.optimizers.SGD` arguments (`weight_decay` must stay
            unset: that would be Keras' decoupled decay on top).
    """

    def __init__(self, l2: float = 0.0, **kwargs):
        if kwargs.get("weight_decay"):
            raise ValueError("SGDWithL2 takes its decay as l2; weight_decay (decoupled) must stay unset.")
        super().__init__(**kwargs)
        if l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {l2}.")
        self.l2 = float(l2)

    def update_step(self, gradient, variable, learning_rate):
        """The SGD step on `gradient + l2 * variable`."""
        if self.l2:
            gradient = ops.add(ops.cast(gradient, variable.dtype),
                               ops.multiply(ops.cast(self.l2, variable.dtype), variable))
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "l2": self.l2}
