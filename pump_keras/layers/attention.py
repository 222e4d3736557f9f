"""Attention modules for MBConv blocks, as interchangeable Keras 3 layers.

Every layer maps a feature map `[batch, H, W, C]` (channels_last) to a tensor
of the same shape, infers `C` in `build()`, uses `keras.ops` only (so it runs
on any Keras backend), is serialisable, and is safe under mixed precision.

The registry `ATTENTIONS` names them as the paper's Table 5 and its baseline
do: `se` (EfficientNetV2's own), `cbam`, `improved_cbam` (the paper's module:
CBAM's channel attention followed by SimAM), `simam`, `eca`, `nam` and `soca`.
`build_attention` makes one from an MBConv block's settings, and is the only
entry point the EfficientNetV2 builder uses.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional

import keras
from keras import ops

SIMAM_MAPPINGS = ("sigmoid", "paper")
# SimAM's lambda when none is given, per mapping: 1e-4 is the SimAM authors'
# value for their sigmoid form; the pump paper's eq. (1) takes "a small
# constant, such as 1", and with 1e-4 its variance term would all but vanish.
SIMAM_DEFAULT_LAMBDA = {"sigmoid": 1e-4, "paper": 1.0}
SOCA_SIDES = ("auto", "channel", "gram")


# --- shared pieces -----------------------------------------------------------

def _channel_count(input_shape) -> int:
    """The static channel count `C` of a channels_last shape."""
    channels = input_shape[-1]
    if channels is None:
        raise ValueError(f"Attention layers need a known channel count; got input shape {input_shape}.")
    return int(channels)


def _hidden_units(channels: int, reduction: int) -> int:
    """Bottleneck width of a channel MLP: `max(1, C // reduction)`."""
    return max(1, channels // reduction)


def _fresh(initializer):
    """A new instance of `initializer`: unseeded ones draw a new seed, so two kernels never share values."""
    return initializer.__class__.from_config(initializer.get_config())


def _add_bottleneck(layer, channels: int, hidden: int, prefix: str, kernel_initializer) -> tuple:
    """Creates the weights of a C -> hidden -> C MLP with biases, in that order."""
    bias = "zeros"
    return (
        layer.add_weight(shape=(channels, hidden), initializer=_fresh(kernel_initializer),
                         name=f"{prefix}reduce_kernel"),
        layer.add_weight(shape=(hidden,), initializer=bias, name=f"{prefix}reduce_bias"),
        layer.add_weight(shape=(hidden, channels), initializer=_fresh(kernel_initializer),
                         name=f"{prefix}expand_kernel"),
        layer.add_weight(shape=(channels,), initializer=bias, name=f"{prefix}expand_bias"),
    )


def _global_max_pool(inputs):
    """Max over H x W as `[B, 1, 1, C]`.

    With a static map size this is one max-pooling window: its gradient is a
    single fused op, where a reduce-max backward takes several passes.
    """
    height, width = inputs.shape[1], inputs.shape[2]
    if height is None or width is None:
        return ops.max(inputs, axis=(1, 2), keepdims=True)
    return ops.max_pool(inputs, pool_size=(height, width), strides=(height, width), padding="valid")


def _bottleneck(vector, weights: tuple, activation):
    """Applies the MLP made by `_add_bottleneck` along the last axis; returns logits."""
    reduce_kernel, reduce_bias, expand_kernel, expand_bias = weights
    hidden = activation(ops.matmul(vector, reduce_kernel) + reduce_bias)
    return ops.matmul(hidden, expand_kernel) + expand_bias


class _BlockAttention(keras.layers.Layer):
    """Common base: a shape-preserving layer built from an MBConv block's settings."""

    takes_reduction = False

    @classmethod
    def for_block(cls, *, input_filters: int, se_ratio: float, reduction: int, name: str, **options):
        """Makes the layer for a block; by default only `reduction` (if used) applies."""
        if cls.takes_reduction:
            options["reduction"] = reduction
        return cls(name=name, **options)

    def compute_output_shape(self, input_shape):
        """Attention re-weights features: the output shape is the input shape."""
        return tuple(input_shape)


# --- Squeeze-and-Excitation ----------------------------------------------------

@keras.saving.register_keras_serializable(package="pump_keras")
class SqueezeExcite(_BlockAttention):
    """Squeeze-and-Excitation as in EfficientNetV2's MBConv blocks.

    Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018; EfficientNetV2
    (Tan and Le, ICML 2021) variant: global average pool -> dense C -> r with
    swish -> dense r -> C with sigmoid -> `x * s`. The four weights are
    `reduce_kernel (C, r)`, `reduce_bias (r,)`, `expand_kernel (r, C)` and
    `expand_bias (C,)`: keras.applications' 1x1 `se_reduce`/`se_expand`
    convolution kernels reshaped, so pretrained weights map onto them.
    """

    def __init__(self, reduced_filters: int, kernel_initializer=None, **kwargs):
        super().__init__(**kwargs)
        if reduced_filters < 1:
            raise ValueError(f"reduced_filters must be >= 1; got {reduced_filters}.")
        self.reduced_filters = int(reduced_filters)
        if kernel_initializer is None:
            kernel_initializer = keras.initializers.VarianceScaling(
                scale=2.0, mode="fan_out", distribution="truncated_normal"
            )
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    @classmethod
    def for_block(cls, *, input_filters: int, se_ratio: float, reduction: int, name: str, **options):
        """SE reduces to `max(1, int(input_filters * se_ratio))`, as keras.applications does."""
        return cls(max(1, int(input_filters * se_ratio)), name=name, **options)

    def build(self, input_shape):
        """Creates the reduce/expand kernels and biases for `C` input channels."""
        channels = _channel_count(input_shape)
        self._mlp = _add_bottleneck(self, channels, self.reduced_filters, "", self.kernel_initializer)

    def call(self, inputs):
        """Returns `inputs * sigmoid(MLP(GAP(inputs)))`."""
        pooled = ops.mean(inputs, axis=(1, 2), keepdims=True)
        return inputs * ops.sigmoid(_bottleneck(pooled, self._mlp, ops.silu))

    def get_config(self):
        """Constructor arguments, for `from_config`."""
        return {
            **super().get_config(),
            "reduced_filters": self.reduced_filters,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


# --- CBAM and the paper's improved CBAM -------------------------------------------

class _ChannelAttentionBase(_BlockAttention):
    """CBAM's channel attention: a shared MLP on the average- and max-pooled channels.

    `Mc = sigmoid(MLP(AvgPool(x)) + MLP(MaxPool(x)))` with
    `MLP = dense C -> C // reduction (ReLU) -> dense -> C`, both with bias
    (Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018).
    """

    takes_reduction = True

    def __init__(self, reduction: int = 16, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if reduction < 1:
            raise ValueError(f"reduction must be >= 1; got {reduction}.")
        self.reduction = int(reduction)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def _build_channel_attention(self, input_shape):
        """Creates the shared MLP's weights (prefix `channel_`)."""
        channels = _channel_count(input_shape)
        hidden = _hidden_units(channels, self.reduction)
        self._channel_mlp = _add_bottleneck(self, channels, hidden, "channel_", self.kernel_initializer)

    def _channel_gate(self, inputs, average):
        """`Mc = sigmoid(MLP(avg) + MLP(max))` as `[B, 1, 1, C]`, given the average."""
        maximum = _global_max_pool(inputs)
        # Both descriptors through the shared MLP in one pass.
        logits = _bottleneck(ops.concatenate([average, maximum], axis=0), self._channel_mlp, ops.relu)
        average_logits, maximum_logits = ops.split(logits, 2, axis=0)
        return ops.sigmoid(average_logits + maximum_logits)

    def _channel_attention(self, inputs):
        """Returns `inputs * Mc`."""
        return inputs * self._channel_gate(inputs, ops.mean(inputs, axis=(1, 2), keepdims=True))

    def get_config(self):
        """Constructor arguments, for `from_config`."""
        return {
            **super().get_config(),
            "reduction": self.reduction,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


@keras.saving.register_keras_serializable(package="pump_keras")
class CBAM(_ChannelAttentionBase):
    """Convolutional Block Attention Module: channel then spatial attention.

    Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018.
    Channel attention as in `_ChannelAttentionBase`, then the spatial
    attention of the paper's eq. (3): `Ms = sigmoid(conv_k([mean_C(x'); max_C(x')]))`
    with one `spatial_kernel` x `spatial_kernel` convolution to one channel
    (with bias), and output `x' * Ms`. The authors' code adds a BatchNorm after
    that convolution; the paper's equation, followed here, has none.
    """

    def __init__(
        self, reduction: int = 16, spatial_kernel: int = 7, kernel_initializer="glorot_uniform", **kwargs
    ):
        super().__init__(reduction=reduction, kernel_initializer=kernel_initializer, **kwargs)
        if spatial_kernel < 1:
            raise ValueError(f"spatial_kernel must be >= 1; got {spatial_kernel}.")
        self.spatial_kernel = int(spatial_kernel)

    def build(self, input_shape):
        """Creates the channel MLP and the spatial convolution."""
        self._build_channel_attention(input_shape)
        size = self.spatial_kernel
        self.spatial_conv_kernel = self.add_weight(
            shape=(size, size, 2, 1), initializer=self.kernel_initializer, name="spatial_conv_kernel"
        )
        self.spatial_conv_bias = self.add_weight(shape=(1,), initializer="zeros", name="spatial_conv_bias")

    def call(self, inputs):
        """Returns `x' * Ms` with `x' = inputs * Mc`."""
        refined = self._channel_attention(inputs)
        descriptors = ops.concatenate(
            [ops.mean(refined, axis=-1, keepdims=True), ops.max(refined, axis=-1, keepdims=True)], axis=-1
        )
        logits = ops.conv(descriptors, self.spatial_conv_kernel, padding="same", data_format="channels_last")
        return refined * ops.sigmoid(logits + self.spatial_conv_bias)

    def get_config(self):
        """Constructor arguments, for `from_config`."""
        return {**super().get_config(), "spatial_kernel": self.spatial_kernel}


def _check_simam_mapping(mapping: str) -> str:
    """Validates a SimAM mapping name."""
    if mapping not in SIMAM_MAPPINGS:
        raise ValueError(f"SimAM mapping must be one of {SIMAM_MAPPINGS}; got {mapping!r}.")
    return mapping


def _simam_lambda(lambda_: Optional[float], mapping: str) -> float:
    """`lambda_` as a float, or the mapping's default (`SIMAM_DEFAULT_LAMBDA`) when None."""
    return float(SIMAM_DEFAULT_LAMBDA[mapping] if lambda_ is None else lambda_)


def _map_size(x):
    """H * W as a float: a Python number when static (no shape ops in the graph)."""
    height, width = x.shape[1], x.shape[2]
    if height is not None and width is not None:
        return float(height * width)
    return ops.cast(ops.shape(x)[1] * ops.shape(x)[2], "float32")


def _others(x):
    """SimAM's n = H * W - 1, at least 1 so that a 1 x 1 map is safe."""
    size = _map_size(x)
    return max(size - 1.0, 1.0) if isinstance(size, float) else ops.maximum(size - 1.0, 1.0)


def _simam(inputs, lambda_: float, mapping: str):
    """SimAM on `[B, H, W, C]`, computed in float32 and returned in the input dtype."""
    x = ops.cast(inputs, "float32")
    size = _map_size(x)
    others = _others(x)
    deviation = x - ops.mean(x, axis=(1, 2), keepdims=True)
    squared = ops.square(deviation)
    total = ops.sum(squared, axis=(1, 2), keepdims=True)
    if mapping == "sigmoid":
        # One per-channel scale times d^2, not a division per element: about
        # a third less time forward and backward on CPU.
        scale = 0.25 / (total / others + lambda_)
        weights = ops.sigmoid(squared * scale + 0.5)
    else:
        distance = deviation * size / others
        variance = ops.maximum((total - squared * size / others) / others, 0.0)
        weights = 1.0 / (1.0 + ops.square(distance) + lambda_ * variance)
    return ops.cast(x * weights, inputs.dtype)


@keras.saving.register_keras_serializable(package="pump_keras")
class SimAM(_BlockAttention):
    """SimAM: a parameter-free, energy-based 3-D attention.

    Yang et al., "SimAM: A Simple, Parameter-Free Attention Module for
    Convolutional Neural Networks", ICML 2021. Per sample and channel over the
    H x W positions, with `n = H*W - 1` (at least 1, so a 1 x 1 map is safe):
    `d = (x - mu)^2`, `v = sum(d) / n`, `e_inv = d / (4 (v + lambda_)) + 0.5`,
    `out = x * sigmoid(e_inv)` -- the published form (`mapping="sigmoid"`,
    the default, as in the authors' code, with their `lambda_ = 1e-4`).

    The pump paper's eq. (2), `alpha = 1 / (1 + E)` with eq. (1)
    `E = (x - mu_-i)^2 + lambda_ * var_-i`, is a different mapping; it is
    offered as `mapping="paper"`, where `lambda_` defaults to 1, the value
    the paper names ("a small constant, such as 1"). There `mu_-i` and `var_-i` are the exact
    mean and (population) variance of the other H*W - 1 neurons of the same
    channel, obtained in closed form from the full-channel statistics. The
    paper's text says "neurons except those in the current channel", which
    contradicts SimAM's per-channel definition; the per-channel reading is used.

    Statistics are computed in float32 even under mixed precision; the result
    is cast back to the input dtype. No weights.
    """

    def __init__(self, lambda_: Optional[float] = None, mapping: str = "sigmoid", **kwargs):
        super().__init__(**kwargs)
        self.mapping = _check_simam_mapping(mapping)
        self.lambda_ = _simam_lambda(lambda_, self.mapping)

    def call(self, inputs):
        """Returns `inputs` weighted by SimAM's per-neuron importance."""
        return _simam(inputs, self.lambda_, self.mapping)

    def get_config(self):
        """Constructor arguments, for `from_config`."""
        return {**super().get_config(), "lambda_": self.lambda_, "mapping": self.mapping}


def _sum_map(tensor):
    """Sum over H x W as `[B, 1, 1, C]`."""
    return ops.sum(tensor, axis=(1, 2), keepdims=True)


def _gated_simam(x, mlp, lambda_: float):
    """`SimAM(x * Mc)` with CBAM's channel gate `Mc`, in one sweep with a hand-written gradient.

    `x` is float32 `[B, H, W, C]` and `mlp` the channel MLP's four weights as
    float32 tensors. The value equals `_simam(x * Mc)`: `Mc` is constant per
    channel, so SimAM's statistics of `y = x * Mc` follow from x's
    (`mean_y = Mc mean_x`, `d_y^2 = Mc^2 d_x^2`), and the channel average is
    shared with the gate.

    Why by hand: reverse-mode autodiff of these broadcasting element-wise ops
    keeps several full-size tensors from the forward pass and materialises one
    per step of the backward pass. On CPU, where TensorFlow runs op by op,
    each new full-size buffer is fresh memory, and that, more than the
    arithmetic, made an EfficientNetV2-S train step markedly slower than with
    SE (`benchmarks/model_cost.py`). This gradient keeps only `x` and SimAM's
    weights from the forward pass, recomputes the deviation, and orders the
    products so that most of them reuse a buffer that is no longer needed. The max descriptor's gradient is
    split equally between tied maxima, as TensorFlow's and JAX's `max` do.
    Tests compare this gradient with autodiff of the unfused layer on both
    backends.
    """
    others = _others(x)
    size = _map_size(x)
    channels = x.shape[-1]

    @ops.custom_gradient
    def forward(x, reduce_kernel, reduce_bias, expand_kernel, expand_bias):
        average = ops.mean(x, axis=(1, 2), keepdims=True)
        maximum = ops.max(x, axis=(1, 2), keepdims=True)
        # Both descriptors through the shared MLP as one [2B, C] matrix.
        pooled = ops.reshape(ops.concatenate([average, maximum], axis=0), (-1, channels))
        hidden = ops.relu(ops.matmul(pooled, reduce_kernel) + reduce_bias)
        logits = ops.matmul(hidden, expand_kernel) + expand_bias
        average_logits, maximum_logits = ops.split(logits, 2, axis=0)
        gate = ops.reshape(ops.sigmoid(average_logits + maximum_logits), (-1, 1, 1, channels))
        squared = ops.square(x - average)
        gate_squared = ops.square(gate)
        denominator = gate_squared * _sum_map(squared) / others + lambda_
        scale = 0.25 * gate_squared / denominator
        weights = ops.sigmoid(squared * scale + 0.5)

        def backward(*args, upstream=None):
            upstream = args[0] if upstream is None else upstream
            # y = x g w with w = sigmoid(d^2 k + 1/2), k = g^2 / (4 (g^2 v + lambda)),
            # v = sum(d^2) / n, d = x - mean(x); ramp = dy x w (1 - w).
            weighted = upstream * weights
            product = weighted * x
            ramp = product - product * weights
            deviation = x - average
            ramp_deviation = ramp * deviation
            dscale = gate * _sum_map(ramp_deviation * deviation)
            dvariance = -4.0 * ops.square(scale) * dscale
            dgate = _sum_map(product) + dscale * (0.5 * lambda_) * gate / ops.square(denominator)
            # Back through the gate's sigmoid and the shared MLP, both descriptors at once.
            dlogits = ops.reshape(dgate * gate * (1.0 - gate), (-1, channels))
            dlogits = ops.concatenate([dlogits, dlogits], axis=0)
            dhidden = ops.matmul(dlogits, ops.transpose(expand_kernel)) * ops.cast(hidden > 0, hidden.dtype)
            dpooled = ops.reshape(ops.matmul(dhidden, ops.transpose(reduce_kernel)), (-1, 1, 1, channels))
            daverage, dmaximum = ops.split(dpooled, 2, axis=0)
            # SimAM's own use of the average; its variance term vanishes as sum(d) = 0.
            daverage = daverage - 2.0 * scale * gate * _sum_map(ramp_deviation)
            at_maximum = ops.cast(ops.equal(x, maximum), x.dtype)
            dx = (
                weighted * gate
                + ramp_deviation * (2.0 * gate * scale)
                + deviation * (2.0 * dvariance / others)
                + daverage / size
                + at_maximum * (dmaximum / _sum_map(at_maximum))
            )
            return (
                dx,
                ops.matmul(ops.transpose(pooled), dhidden),
                ops.sum(dhidden, axis=0),
                ops.matmul(ops.transpose(hidden), dlogits),
                ops.sum(dlogits, axis=0),
            )

        return x * gate * weights, backward

    return forward(x, *mlp)


@keras.saving.register_keras_serializable(package="pump_keras")
class ImprovedCBAM(_ChannelAttentionBase):
    """The paper's improved CBAM: CBAM's channel attention, then SimAM as the spatial part.

    "EfficientNetV2 Pump Anomaly Detection Method Based on Improved CBAM
    Attention Mechanism", sections 2.2.2-2.2.3: the channel attention of Woo
    et al. (ECCV 2018; average- and max-pooled descriptors through one shared
    MLP C -> C // reduction -> C, default `reduction=16`), followed by SimAM
    (Yang et al., ICML 2021) instead of the 7 x 7 convolution, adding no
    weights. `lambda_` and `mapping` are SimAM's (see `SimAM`): `lambda_`
    defaults to 1e-4 under `mapping="sigmoid"` and to 1 under `"paper"`.

    Its weights are the channel MLP only. At `reduction=16` in
    EfficientNetV2-S stages 4-6 that is about 1.75 M parameters more than the
    SE blocks it replaces (5.45 M against 3.70 M).
    """

    def __init__(
        self,
        reduction: int = 16,
        lambda_: Optional[float] = None,
        mapping: str = "sigmoid",
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(reduction=reduction, kernel_initializer=kernel_initializer, **kwargs)
        self.mapping = _check_simam_mapping(mapping)
        self.lambda_ = _simam_lambda(lambda_, self.mapping)

    def build(self, input_shape):
        """Creates the channel MLP."""
        self._build_channel_attention(input_shape)

    def call(self, inputs):
        """Returns `SimAM(inputs * Mc)`; statistics in float32."""
        if self.mapping != "sigmoid":
            return _simam(self._channel_attention(inputs), self.lambda_, self.mapping)
        x = ops.cast(inputs, "float32")
        mlp = [ops.cast(weight, "float32") for weight in self._channel_mlp]
        return ops.cast(_gated_simam(x, mlp, self.lambda_), inputs.dtype)

    def get_config(self):
        """Constructor arguments, for `from_config`."""
        return {**super().get_config(), "lambda_": self.lambda_, "mapping": self.mapping}


# --- ECA ---------------------------------------------------------------------------

def eca_kernel_size(channels: int, gamma: float = 2.0, b: float = 1.0) -> int:
    """ECA's adaptive kernel: the odd number nearest above `|log2(C)/gamma + b/gamma|`."""
    size = int(abs((math.log2(channels) + b) / gamma))
    return size if size % 2 else size + 1


@keras.saving.register_keras_serializable(package="pump_keras")
class ECA(_BlockAttention):
    """Efficient Channel Attention: a 1-D convolution across pooled channels.

    Wang et al., "ECA-Net: Efficient Channel Attention for Deep Convolutional
    Neural Networks", CVPR 2020: global average pool -> 1-D convolution over
    the channel axis with `k = eca_kernel_size(C, gamma, b)`, zero padding,
    no bias -> sigmoid -> `x * s`. One weight, `kernel (k,)`.
    """

    def __init__(self, gamma: float = 2.0, b: float = 1.0, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.gamma = float(gamma)
        self.b = float(b)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        """Creates the `(k,)` kernel for `C` channels."""
        size = eca_kernel_size(_channel_count(input_shape), self.gamma, self.b)
        self.kernel = self.add_weight(shape=(size,), initializer=self.kernel_initializer, name="kernel")

    def call(self, inputs):
        """Returns `inputs * sigmoid(conv1d_k(GAP(inputs)))`."""
        pooled = ops.mean(inputs, axis=(1, 2))
        size = self.kernel.shape[0]
        logits = ops.conv(
            ops.expand_dims(pooled, -1),
            ops.reshape(self.kernel, (size, 1, 1)),
            padding="same",
            data_format="channels_last",
        )
        gate = ops.sigmoid(ops.squeeze(logits, -1))
        return inputs * ops.expand_dims(ops.expand_dims(gate, 1), 1)

    def get_config(self):
        """Constructor arguments, for `from_config`."""
        return {
            **super().get_config(),
            "gamma": self.gamma,
            "b": self.b,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


# --- NAM ---------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="pump_keras")
class NAM(_BlockAttention):
    """Normalization-based Attention Module, channel branch.

    Liu et al., "NAM: Normalization-based Attention Module", NeurIPS 2021
    workshop (arXiv:2111.12419): `out = x * sigmoid(w * BN(x))` with BatchNorm
    over channels and `w_i = |gamma_i| / sum_j |gamma_j|` from BN's own scale.
    As in the authors' code, `w` is not differentiated (gamma learns through
    `BN(x)` only). `momentum` and `epsilon` default to PyTorch's BatchNorm2d
    (the paper's framework) in Keras' convention. Weights: BN's gamma and
    beta (trainable) and moving mean and variance.
    """

    def __init__(self, momentum: float = 0.9, epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.bn = keras.layers.BatchNormalization(
            axis=-1, momentum=self.momentum, epsilon=self.epsilon, dtype=self.dtype_policy, name="bn"
        )

    def build(self, input_shape):
        """Builds the BatchNormalization sublayer for `C` channels."""
        self.bn.build(input_shape)

    def call(self, inputs, training=None):
        """Returns `inputs * sigmoid(w * BN(inputs))`; `training` drives BN."""
        normalized = self.bn(inputs, training=training)
        scale = ops.abs(ops.cast(ops.stop_gradient(self.bn.gamma), "float32"))
        weights = ops.cast(scale / ops.sum(scale), normalized.dtype)
        return inputs * ops.sigmoid(normalized * weights)

    def get_config(self):
        """Constructor arguments, for `from_config`."""
        return {**super().get_config(), "momentum": self.momentum, "epsilon": self.epsilon}


# --- SOCA --------------------------------------------------------------------------

def _newton_schulz_products(iterations: int, inverse: bool) -> int:
    """Matrix products made by `_newton_schulz` (mirrors its loop)."""
    products = 0
    for step in range(iterations):
        last = step == iterations - 1
        products += int(step > 0)
        products += int(not (last and inverse))
        products += int(step > 0 and not (last and not inverse))
    return products


def _newton_schulz(matrix, iterations: int, inverse: bool):
    """Coupled Newton-Schulz on trace-normalised SPD `[B, N, N]` matrices.

    `Y <- Y T`, `Z <- T Z` with `T = (3 I - Z Y) / 2`, from `Y = A`, `Z = I`;
    `Y -> A^(1/2)`, `Z -> A^(-1/2)` (Higham 2008; iSQRT-COV, Li et al., CVPR
    2018). Returns `Z` if `inverse` else `Y`, skipping the last unused product.
    """
    identity = ops.eye(matrix.shape[-1], dtype=matrix.dtype)
    root, inverse_root = matrix, identity
    for step in range(iterations):
        last = step == iterations - 1
        product = root if step == 0 else ops.matmul(inverse_root, root)
        update = 0.5 * (3.0 * identity - product)
        if not (last and inverse):
            root = ops.matmul(root, update)
        if not (last and not inverse):
            inverse_root = update if step == 0 else ops.matmul(update, inverse_root)
    return inverse_root if inverse else root


def _batch_trace(matrix):
    """Traces of `[B, N, N]` matrices, `[B, 1, 1]`."""
    return ops.reshape(ops.trace(matrix, axis1=1, axis2=2), (-1, 1, 1))


def choose_soca_side(height, width, channels) -> str:
    """`"gram"` when `H*W < C` is known statically (cheaper), else `"channel"`."""
    if height is None or width is None or channels is None:
        return "channel"
    return "gram" if height * width < channels else "channel"


def _pool_channel_side(centred, count, iterations: int, epsilon: float):
    """Row means of `sqrt(Sigma + eps I)` via Newton-Schulz on the C x C covariance."""
    channels = centred.shape[-1]
    covariance = ops.matmul(ops.transpose(centred, (0, 2, 1)), centred) / count
    covariance = covariance + epsilon * ops.eye(channels, dtype=covariance.dtype)
    trace = _batch_trace(covariance)
    root = _newton_schulz(covariance / trace, iterations, inverse=False) * ops.sqrt(trace)
    return ops.mean(root, axis=-1)


def _pool_gram_side(centred, count, iterations: int, epsilon: float):
    """The same row means via the M x M Gram matrix, for `M < C`.

    With centred `X` (C x M), `Sigma = X X^T / M` and `G = X^T X / M`,
    `sqrt(Sigma) = X G^(-1/2) X^T / M` on the range of `X`; Newton-Schulz on
    `G / tr(G)` gives `Z ~ sqrt(tr G) G^(-1/2)`, and the row mean of
    `X Z X^T / (M sqrt(tr G))` needs only matrix-vector products after it.
    Centring makes the all-ones vector an exact null vector of `G`; it is
    lifted to eigenvalue `1/M` (adding `1/M^2` to every entry), so rounding
    cannot make it negative and Newton-Schulz cannot diverge along it. The
    result is unchanged, because `X` annihilates that direction.
    """
    positions = centred.shape[1]
    gram = ops.matmul(centred, ops.transpose(centred, (0, 2, 1))) / count
    gram = gram + epsilon * ops.eye(positions, dtype=gram.dtype)
    trace = _batch_trace(gram)
    inverse_root = _newton_schulz(gram / trace + 1.0 / ops.square(count), iterations, inverse=True)
    channel_means = ops.mean(centred, axis=-1, keepdims=True)
    weighted = ops.matmul(inverse_root, channel_means)
    pooled = ops.matmul(ops.transpose(centred, (0, 2, 1)), weighted) / (count * ops.sqrt(trace))
    return ops.squeeze(pooled, -1)


def second_order_pool(features, iterations: int = 5, epsilon: float = 1e-5, side: str = "auto"):
    """SOCA's covariance pooling: `[B, H, W, C]` -> `[B, C]` float32.

    Centred covariance of the C channels over the M = H*W positions (SAN's
    normalisation, 1/M), plus `epsilon * I`, normalised by its trace, square
    root by `iterations` Newton-Schulz steps, rescaled by `sqrt(trace)`, then
    the mean of each row. `side="gram"` computes the same vector through the
    M x M Gram matrix (`O(C M^2 + M^3)` instead of `O(C^2 M + C^3)`); the two
    differ only in where `epsilon` enters. `"auto"` picks the cheaper side
    from static shapes.
    """
    if side not in SOCA_SIDES:
        raise ValueError(f"side must be one of {SOCA_SIDES}; got {side!r}.")
    height, width, channels = features.shape[1:]
    if side == "auto":
        side = choose_soca_side(height, width, channels)
    if side == "gram" and (height is None or width is None):
        raise ValueError(f"side='gram' needs a static H and W; got shape {features.shape}.")
    x = ops.cast(features, "float32")
    if height is None or width is None:
        x = ops.reshape(x, (ops.shape(x)[0], -1, channels))
    else:
        x = ops.reshape(x, (-1, height * width, channels))
    centred = x - ops.mean(x, axis=1, keepdims=True)
    count = ops.cast(ops.shape(centred)[1], "float32")
    pool = _pool_gram_side if side == "gram" else _pool_channel_side
    return pool(centred, count, iterations, epsilon)


def soca_pooling_flops(height: int, width: int, channels: int, iterations: int = 5) -> Dict[str, int]:
    """Per-sample FLOPs of SOCA's covariance pooling on each side.

    Counts matrix products only, a multiply-add as 2 FLOPs: covariance (or
    Gram) product, the Newton-Schulz products, and (Gram side) the two
    matrix-vector products. Element-wise terms (O(C M), O(N^2) per step) and
    the excitation MLP, which both sides share, are left out.
    E.g. `soca_pooling_flops(7, 7, 1536)`.
    """
    m, c = height * width, channels
    channel_side = 2 * c * c * m + _newton_schulz_products(iterations, inverse=False) * 2 * c**3
    gram_side = (
        2 * m * m * c + _newton_schulz_products(iterations, inverse=True) * 2 * m**3 + 2 * m * m + 2 * c * m
    )
    return {"channel": channel_side, "gram": gram_side}


@keras.saving.register_keras_serializable(package="pump_keras")
class SOCA(_BlockAttention):
    """Second-Order Channel Attention.

    Dai et al., "Second-order Attention Network for Single Image
    Super-Resolution", CVPR 2019 (SAN): `second_order_pool` (covariance
    pooling with a Newton-Schulz matrix square root, `iterations=5` as in SAN)
    -> dense C -> C // reduction (ReLU) -> dense -> C (sigmoid), both with
    bias -> `x * s`. `side` chooses how the square root is taken (`"auto"`:
    the M x M Gram matrix when H*W < C, which is exact and far cheaper; see
    `soca_pooling_flops`). Statistics are in float32. SAN used
    `reduction=8`; the default here is 16, like the other channel MLPs.
    """

    takes_reduction = True

    def __init__(
        self,
        reduction: int = 16,
        iterations: int = 5,
        epsilon: float = 1e-5,
        side: str = "auto",
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if reduction < 1 or iterations < 1:
            raise ValueError(f"reduction and iterations must be >= 1; got {reduction}, {iterations}.")
        if side not in SOCA_SIDES:
            raise ValueError(f"side must be one of {SOCA_SIDES}; got {side!r}.")
        self.reduction = int(reduction)
        self.iterations = int(iterations)
        self.epsilon = float(epsilon)
        self.side = side
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        """Creates the excitation MLP for `C` channels."""
        channels = _channel_count(input_shape)
        hidden = _hidden_units(channels, self.reduction)
        self._mlp = _add_bottleneck(self, channels, hidden, "", self.kernel_initializer)

    def call(self, inputs):
        """Returns `inputs * sigmoid(MLP(second_order_pool(inputs)))`."""
        pooled = second_order_pool(inputs, self.iterations, self.epsilon, self.side)
        gate = ops.sigmoid(_bottleneck(ops.cast(pooled, self.compute_dtype), self._mlp, ops.relu))
        return inputs * ops.expand_dims(ops.expand_dims(gate, 1), 1)

    def get_config(self):
        """Constructor arguments, for `from_config`."""
        return {
            **super().get_config(),
            "reduction": self.reduction,
            "iterations": self.iterations,
            "epsilon": self.epsilon,
            "side": self.side,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


# --- registry ----------------------------------------------------------------------

ATTENTIONS: Dict[str, type] = {
    "se": SqueezeExcite,
    "cbam": CBAM,
    "improved_cbam": ImprovedCBAM,
    "simam": SimAM,
    "eca": ECA,
    "nam": NAM,
    "soca": SOCA,
}


def available_attentions() -> List[str]:
    """Registered attention names, sorted."""
    return sorted(ATTENTIONS)


def build_attention(
    kind: str,
    *,
    input_filters: int,
    se_ratio: float = 0.25,
    reduction: int = 16,
    name: str,
    **options,
) -> keras.layers.Layer:
    """Makes the attention layer `kind` for an MBConv block.

    `input_filters` is the block's input filter count (SE reduces to
    `max(1, int(input_filters * se_ratio))`); `reduction` sets the channel-MLP
    width `max(1, C // reduction)` of `cbam`, `improved_cbam` and `soca`;
    `options` go to the layer's constructor.
    """
    if kind not in ATTENTIONS:
        raise ValueError(f"Unknown attention {kind!r}; available: {', '.join(available_attentions())}.")
    return ATTENTIONS[kind].for_block(
        input_filters=input_filters, se_ratio=se_ratio, reduction=reduction, name=name, **options
    )
