"""A Conformer over the spectrogram's time axis, in the model registry as `conformer`.

Gulati et al., "Conformer: Convolution-augmented Transformer for Speech
Recognition", Interspeech 2020. The pump paper lists a Conformer among its
comparisons (section 3.3) but gives no configuration; this one is our
choice, after Gulati et al.'s Conformer (S):

- Input: the same `[rows, columns, channels]` image as every other model,
  rows the frequency axis, columns time. Two 3x3 convolutions of stride 2
  (ReLU) subsample both axes by 4, as Gulati et al.'s convolution
  subsampling does; each of the remaining time frames (all its frequency
  rows and channels) is projected to `d_model`.
- `num_blocks` Conformer blocks: half-step feed-forward (LayerNorm, Dense
  `4 d` with Swish, Dense `d`, x 1/2), multi-head self-attention with
  Transformer-XL's relative sinusoidal positions (`RelativeMultiHeadAttention`),
  the convolution module (LayerNorm, pointwise conv to `2 d` with a GLU,
  depthwise conv of `kernel_size` over time, BatchNorm, Swish, pointwise conv),
  a second half-step feed-forward and a final LayerNorm; every module is
  pre-normed, dropped out and added to its input.
- Head: the frames' mean, dropout, one logit (as every registry model).

Defaults are Conformer (S): `d_model` 144, 16 blocks, 4 heads, kernel 31
(Gulati et al. print 32; an odd kernel centres "same" padding). See
`README.md` for its size against theirs.
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops

from pump_keras.models.head import image_input, logit_head
from pump_keras.models.registry import register_model
from pump_keras.models.zoo import DEFAULT_INPUT_SHAPE, _check_input_shape, _check_rate

SUBSAMPLING = 4  # two stride-2 convolutions


def sinusoids(positions, dim: int, max_wavelength: float = 10000.0):
    """`[N, dim]` sinusoidal encodings of the float `positions` `[N]` (sines, then cosines)."""
    half = dim // 2
    frequencies = ops.exp(ops.arange(half, dtype="float32") * (-math.log(max_wavelength) / max(half, 1)))
    angles = ops.expand_dims(positions, 1) * ops.expand_dims(frequencies, 0)
    encoding = ops.concatenate([ops.sin(angles), ops.cos(angles)], axis=-1)
    if dim % 2:
        encoding = ops.pad(encoding, [[0, 0], [0, 1]])
    return encoding


@keras.saving.register_keras_serializable(package="pump_keras")
class RelativeMultiHeadAttention(layers.Layer):
    """Self-attention with Transformer-XL relative positions (Dai et al. 2019), as Conformer uses.

    For heads h, queries q_i, keys k_j and the sinusoid r of the distance
    `i - j` projected per head (`W_r r`), the score of frame j for frame i is
    `((q_i + u) . k_j + (q_i + v) . W_r r_{i-j}) / sqrt(key_dim)` with
    learned biases u and v per head; softmax over j, dropout, the weighted
    values, one output projection back to the input width. Input and output
    `[batch, frames, width]`.
    """

    def __init__(self, num_heads: int, key_dim: int, dropout: float = 0.0, max_wavelength: float = 10000.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.key_dim = int(key_dim)
        self.dropout = float(dropout)
        self.max_wavelength = float(max_wavelength)
        self._dropout_layer = layers.Dropout(self.dropout)

    def build(self, input_shape):
        """Creates the query, key, value, position and output projections and the biases u, v."""
        width = int(input_shape[-1])
        heads, key_dim = self.num_heads, self.key_dim

        def weight(name, shape, initializer="glorot_uniform"):
            return self.add_weight(name=name, shape=shape, initializer=initializer)

        self.query_kernel = weight("query_kernel", (width, heads, key_dim))
        self.key_kernel = weight("key_kernel", (width, heads, key_dim))
        self.value_kernel = weight("value_kernel", (width, heads, key_dim))
        self.position_kernel = weight("position_kernel", (width, heads, key_dim))
        self.content_bias = weight("content_bias", (heads, key_dim), "zeros")
        self.position_bias = weight("position_bias", (heads, key_dim), "zeros")
        self.output_kernel = weight("output_kernel", (heads, key_dim, width))
        self.output_bias = weight("output_bias", (width,), "zeros")

    def call(self, inputs, training=None):
        """Attends every frame to every frame; returns `[batch, frames, width]`."""
        frames = ops.shape(inputs)[1]
        width = inputs.shape[-1]
        query = ops.einsum("btw,whk->bthk", inputs, self.query_kernel)
        key = ops.einsum("btw,whk->bthk", inputs, self.key_kernel)
        value = ops.einsum("btw,whk->bthk", inputs, self.value_kernel)
        # Distances frames-1 ... -(frames-1); entry (i, j) of the shifted scores is distance i - j.
        distances = ops.cast(ops.arange(frames - 1, -frames, -1), "float32")
        encoding = ops.cast(sinusoids(distances, width, self.max_wavelength), inputs.dtype)
        position = ops.einsum("nw,whk->nhk", encoding, self.position_kernel)
        content_scores = ops.einsum("bihk,bjhk->bhij", query + self.content_bias, key)
        position_scores = ops.einsum("bihk,nhk->bhin", query + self.position_bias, position)
        rows = ops.expand_dims(ops.arange(frames), 1)
        columns = ops.expand_dims(ops.arange(frames), 0)
        index = ops.expand_dims(ops.expand_dims(frames - 1 - rows + columns, 0), 0)
        position_scores = ops.take_along_axis(
            position_scores, ops.broadcast_to(index, ops.shape(content_scores)), axis=-1)
        scores = (content_scores + position_scores) * (1.0 / math.sqrt(self.key_dim))
        weights = ops.softmax(ops.cast(scores, "float32"), axis=-1)
        weights = self._dropout_layer(ops.cast(weights, inputs.dtype), training=training)
        attended = ops.einsum("bhij,bjhk->bihk", weights, value)
        return ops.einsum("bthk,hkw->btw", attended, self.output_kernel) + self.output_bias

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        """Constructor arguments, for `from_config`."""
        return {**super().get_config(), "num_heads": self.num_heads, "key_dim": self.key_dim,
                "dropout": self.dropout, "max_wavelength": self.max_wavelength}


def feed_forward_module(d_model: int, expansion: int, dropout_rate: float, name: str):
    """Half-step feed-forward: x + 1/2 (LN, Dense(expansion d) Swish, dropout, Dense(d), dropout)."""

    def apply(inputs):
        x = layers.LayerNormalization(epsilon=1e-5, name=f"{name}_norm")(inputs)
        x = layers.Dense(expansion * d_model, activation="swish", name=f"{name}_dense1")(x)
        x = layers.Dropout(dropout_rate, name=f"{name}_dropout1")(x)
        x = layers.Dense(d_model, name=f"{name}_dense2")(x)
        x = layers.Dropout(dropout_rate, name=f"{name}_dropout2")(x)
        x = layers.Rescaling(0.5, name=f"{name}_half")(x)
        return layers.Add(name=f"{name}_add")([inputs, x])

    return apply


def self_attention_module(d_model: int, num_heads: int, dropout_rate: float, name: str):
    """x + dropout(relative-position multi-head self-attention(LN(x)))."""

    def apply(inputs):
        x = layers.LayerNormalization(epsilon=1e-5, name=f"{name}_norm")(inputs)
        x = RelativeMultiHeadAttention(num_heads, d_model // num_heads, dropout=dropout_rate,
                                       name=f"{name}_attention")(x)
        x = layers.Dropout(dropout_rate, name=f"{name}_dropout")(x)
        return layers.Add(name=f"{name}_add")([inputs, x])

    return apply


def convolution_module(d_model: int, kernel_size: int, dropout_rate: float, name: str):
    """x + (LN, pointwise to 2d + GLU, depthwise conv over time, BN, Swish, pointwise, dropout)."""

    def apply(inputs):
        x = layers.LayerNormalization(epsilon=1e-5, name=f"{name}_norm")(inputs)
        # A pointwise convolution to 2d followed by a GLU is these two halves, multiplied.
        content = layers.Dense(d_model, name=f"{name}_pointwise1_content")(x)
        gate = layers.Dense(d_model, activation="sigmoid", name=f"{name}_pointwise1_gate")(x)
        x = layers.Multiply(name=f"{name}_glu")([content, gate])
        x = layers.DepthwiseConv1D(kernel_size, padding="same", use_bias=False, name=f"{name}_depthwise")(x)
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        x = layers.Activation("swish", name=f"{name}_swish")(x)
        x = layers.Dense(d_model, name=f"{name}_pointwise2")(x)
        x = layers.Dropout(dropout_rate, name=f"{name}_dropout")(x)
        return layers.Add(name=f"{name}_add")([inputs, x])

    return apply


def conformer_block(d_model: int, num_heads: int, kernel_size: int, expansion: int, dropout_rate: float,
                    name: str):
    """Gulati et al.'s block: FFN/2, self-attention, convolution, FFN/2, LayerNorm."""

    def apply(x):
        x = feed_forward_module(d_model, expansion, dropout_rate, f"{name}_ffn1")(x)
        x = self_attention_module(d_model, num_heads, dropout_rate, f"{name}_mhsa")(x)
        x = convolution_module(d_model, kernel_size, dropout_rate, f"{name}_conv")(x)
        x = feed_forward_module(d_model, expansion, dropout_rate, f"{name}_ffn2")(x)
        return layers.LayerNormalization(epsilon=1e-5, name=f"{name}_norm")(x)

    return apply


def _check_positive_int(name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    return value


@register_model("conformer")
def conformer(input_shape=DEFAULT_INPUT_SHAPE, d_model: int = 144, num_blocks: int = 16, num_heads: int = 4,
              kernel_size: int = 31, ffn_expansion: int = 4, block_dropout: float = 0.1,
              dropout_rate: float = 0.1) -> keras.Model:
    """Conformer over the image's columns (time) + frame mean + dropout + one logit; our configuration.

    Defaults are Gulati et al.'s Conformer (S) encoder (d 144, 16 blocks,
    4 heads, kernel 31); `block_dropout` is the dropout inside the blocks,
    `dropout_rate` the one before the logit.
    """
    input_shape = _check_input_shape(input_shape, min_size=SUBSAMPLING)
    for name, value in (("d_model", d_model), ("num_blocks", num_blocks), ("num_heads", num_heads),
                        ("kernel_size", kernel_size), ("ffn_expansion", ffn_expansion)):
        _check_positive_int(name, value)
    if d_model % num_heads:
        raise ValueError(f"num_heads must divide d_model {d_model}, got {num_heads!r}.")
    block_dropout = _check_rate("block_dropout", block_dropout)
    dropout_rate = _check_rate("dropout_rate", dropout_rate)

    inputs = image_input(input_shape)
    x = inputs
    for number in (1, 2):
        x = layers.Conv2D(d_model, 3, strides=2, padding="same", activation="relu",
                          name=f"subsampling_conv{number}")(x)
    rows, frames = x.shape[1], x.shape[2]
    x = layers.Permute((2, 1, 3), name="time_first")(x)
    x = layers.Reshape((frames, rows * d_model), name="frames")(x)
    x = layers.Dense(d_model, name="input_projection")(x)
    x = layers.Dropout(block_dropout, name="input_dropout")(x)
    for number in range(1, num_blocks + 1):
        x = conformer_block(d_model, num_heads, kernel_size, ffn_expansion, block_dropout,
                            f"block{number}")(x)
    x = layers.GlobalAveragePooling1D(name="frame_mean")(x)
    return keras.Model(inputs, logit_head(x, dropout_rate), name="conformer")
