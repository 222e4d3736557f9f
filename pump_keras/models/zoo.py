"""Comparison backbones of the paper's Table 4, in the model registry.

Every builder takes keyword options with defaults (`input_shape=(224, 224, 3)`
among them) and returns an uncompiled `keras.Model`, named after its registry
entry, that maps images `[batch, H, W, C]` in [0, 1] to one logit per image.

- `efficientnet_b0` ... `efficientnet_b7`: Keras' `EfficientNetB0..B7`
  (Table 4 prints them as "EfficientNetV0..V7"). Keras' models rescale
  [0, 255] inputs themselves, so a `Rescaling(255)` sits in front.
- `resnet50`: Keras' `ResNet50` behind its caffe-style preprocessing
  (`ImageNetCaffePreprocessing`).
- `efficientnetv2s_keras`: Keras' own `EfficientNetV2S` with its built-in
  preprocessing, the paper's unimproved EfficientNetV2-S as Keras ships it.
  The paper's model (and plain EfficientNetV2-S from the stage table) is
  `efficientnetv2_s` in `pump_keras.models.efficientnet_v2`.
- `mobilevit`: MobileViT XXS/XS/S (Mehta & Rastegari, ICLR 2022). This is our
  own implementation after the paper's architecture table (MobileNetV2 blocks,
  MobileViT blocks with 2x2 patches, 4-head pre-norm transformers with MLP
  width 2d, SiLU); sizes not divisible by the patch are resized to the next
  multiple and back, as the authors' reference code does.
- `plain_cnn`: Conv-BN-ReLU-MaxPool blocks, global pooling and one logit
  (the "CNN" of the paper's text).

The Conformer the paper's text mentions is `conformer`, in
`pump_keras.models.conformer` (our configuration: the paper gives none).

The Keras-application builders take `weights`: None, or the local path of a
keras.applications weights file (`include_top=False` variant), passed
through to keras.applications.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Dict, Optional, Sequence, Tuple

import keras
import numpy as np
from keras import layers, ops

from pump_keras.models.head import image_input, logit_head
from pump_keras.models.registry import register_model

DEFAULT_INPUT_SHAPE = (224, 224, 3)

# Keras' top dropout of each EfficientNet variant.
EFFICIENTNET_TOP_DROPOUT: Dict[str, float] = {
    "b0": 0.2, "b1": 0.2, "b2": 0.3, "b3": 0.3, "b4": 0.4, "b5": 0.4, "b6": 0.5, "b7": 0.5,
}

# ImageNet channel means in BGR order, as in keras.applications' "caffe" mode.
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)


# ---------------------------------------------------------------- option checks


def _check_input_shape(input_shape, min_size: int = 32, multiple: int = 1,
                       channels: Optional[int] = None) -> Tuple[int, int, int]:
    """`input_shape` as a tuple of ints, or a ValueError saying what was wrong."""
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else None
    valid = (
        shape is not None and len(shape) == 3
        and all(isinstance(d, (int, np.integer)) and d > 0 for d in shape)
        and min(shape[:2]) >= min_size
        and shape[0] % multiple == 0 and shape[1] % multiple == 0
        and (channels is None or shape[2] == channels)
    )
    if not valid:
        rule = f"(height, width, {channels or 'channels'}) with height, width >= {min_size}"
        if multiple > 1:
            rule += f" and divisible by {multiple}"
        raise ValueError(f"input_shape must be {rule}; got {input_shape!r}.")
    return tuple(int(d) for d in shape)


def _check_rate(name: str, rate) -> float:
    if not isinstance(rate, (int, float)) or not 0 <= rate < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {rate!r}.")
    return float(rate)


def _check_weights(weights) -> Optional[str]:
    if weights is None:
        return None
    if isinstance(weights, (str, os.PathLike)) and os.path.isfile(weights):
        return os.fspath(weights)
    raise ValueError(
        "weights must be None or the path of a local keras.applications weights file, "
        f"got {weights!r}.")


# ---------------------------------------------------------------- Keras applications


@keras.saving.register_keras_serializable(package="pump_keras")
class ImageNetCaffePreprocessing(layers.Layer):
    """[0, 1] RGB images to keras.applications' caffe input: [0, 255] BGR minus the ImageNet mean.

    The same as `keras.applications.resnet50.preprocess_input(255 * images)`.
    """

    def build(self, input_shape):
        if input_shape[-1] != 3:
            raise ValueError(f"Caffe preprocessing needs 3 (RGB) channels, got shape {input_shape}.")

    def call(self, images):
        mean = ops.convert_to_tensor(IMAGENET_MEAN_BGR, dtype=images.dtype)
        return ops.flip(images, axis=-1) * 255.0 - mean

    def compute_output_shape(self, input_shape):
        return input_shape


def _application_model(name: str, application, preprocessing: layers.Layer, input_shape,
                       dropout_rate: float, weights: Optional[str], **application_options):
    """`preprocessing` -> keras.applications backbone (average-pooled) -> dropout -> logit."""
    inputs = image_input(input_shape)
    x = preprocessing(inputs)
    backbone = application(include_top=False, weights=weights, pooling="avg",
                           input_shape=input_shape, **application_options)
    return keras.Model(inputs, logit_head(backbone(x), dropout_rate), name=name)


def _register_efficientnet(variant: str) -> None:
    """Registers `efficientnet_<variant>` built on `keras.applications.EfficientNet<VARIANT>`."""
    entry = f"efficientnet_{variant}"
    application_name = f"EfficientNet{variant.upper()}"

    def builder(input_shape=DEFAULT_INPUT_SHAPE,
                dropout_rate: float = EFFICIENTNET_TOP_DROPOUT[variant],
                weights: Optional[str] = None) -> keras.Model:
        input_shape = _check_input_shape(input_shape, channels=3)
        dropout_rate = _check_rate("dropout_rate", dropout_rate)
        weights = _check_weights(weights)
        return _application_model(
            entry, getattr(keras.applications, application_name),
            layers.Rescaling(255.0, name="to_0_255"), input_shape, dropout_rate, weights)

    builder.__name__ = builder.__qualname__ = entry
    builder.__doc__ = (
        f"Keras' {application_name} (`weights` None or a local file) + dropout + one logit.")
    register_model(entry)(builder)


for _variant in EFFICIENTNET_TOP_DROPOUT:
    _register_efficientnet(_variant)


@register_model("resnet50")
def resnet50(input_shape=DEFAULT_INPUT_SHAPE, dropout_rate: float = 0.0,
             weights: Optional[str] = None) -> keras.Model:
    """Keras' ResNet50 behind its caffe-style preprocessing + one logit."""
    input_shape = _check_input_shape(input_shape, channels=3)
    dropout_rate = _check_rate("dropout_rate", dropout_rate)
    weights = _check_weights(weights)
    return _application_model(
        "resnet50", keras.applications.ResNet50,
        ImageNetCaffePreprocessing(name="caffe_preprocessing"), input_shape, dropout_rate, weights)


@register_model("efficientnetv2s_keras")
def efficientnetv2s_keras(input_shape=DEFAULT_INPUT_SHAPE, dropout_rate: float = 0.2,
                          weights: Optional[str] = None) -> keras.Model:
    """Keras' EfficientNetV2S with its own preprocessing + dropout + one logit."""
    input_shape = _check_input_shape(input_shape, channels=3)
    dropout_rate = _check_rate("dropout_rate", dropout_rate)
    weights = _check_weights(weights)
    return _application_model(
        "efficientnetv2s_keras", keras.applications.EfficientNetV2S,
        layers.Rescaling(255.0, name="to_0_255"), input_shape, dropout_rate, weights,
        include_preprocessing=True)


# ---------------------------------------------------------------- MobileViT


@dataclasses.dataclass(frozen=True)
class MobileViTStage:
    """One row of the MobileViT table.

    Attributes:
        filters: output channels of the stage.
        strides: stride of the stage's first MobileNetV2 block.
        mv2_blocks: MobileNetV2 inverted-residual blocks.
        transformer_dim: width d of the MobileViT block, or None for none.
        transformer_depth: transformer layers L in the MobileViT block.
    """

    filters: int
    strides: int
    mv2_blocks: int = 1
    transformer_dim: Optional[int] = None
    transformer_depth: int = 0


@dataclasses.dataclass(frozen=True)
class MobileViTSpec:
    """A MobileViT variant: stem width, MobileNetV2 expansion, stages, 1x1 head width."""

    stem_filters: int
    expansion: int
    stages: Tuple[MobileViTStage, ...]
    head_filters: int


# MobileViT paper, architecture table (256x256 input: 128, 64, 32, 16, 8 px stages).
MOBILEVIT_VARIANTS: Dict[str, MobileViTSpec] = {
    "xxs": MobileViTSpec(16, 2, (
        MobileViTStage(16, 1),
        MobileViTStage(24, 2, mv2_blocks=3),
        MobileViTStage(48, 2, transformer_dim=64, transformer_depth=2),
        MobileViTStage(64, 2, transformer_dim=80, transformer_depth=4),
        MobileViTStage(80, 2, transformer_dim=96, transformer_depth=3),
    ), 320),
    "xs": MobileViTSpec(16, 4, (
        MobileViTStage(32, 1),
        MobileViTStage(48, 2, mv2_blocks=3),
        MobileViTStage(64, 2, transformer_dim=96, transformer_depth=2),
        MobileViTStage(80, 2, transformer_dim=120, transformer_depth=4),
        MobileViTStage(96, 2, transformer_dim=144, transformer_depth=3),
    ), 384),
    "s": MobileViTSpec(16, 4, (
        MobileViTStage(32, 1),
        MobileViTStage(64, 2, mv2_blocks=3),
        MobileViTStage(96, 2, transformer_dim=144, transformer_depth=2),
        MobileViTStage(128, 2, transformer_dim=192, transformer_depth=4),
        MobileViTStage(160, 2, transformer_dim=240, transformer_depth=3),
    ), 640),
}


def _padded(size: int, patch_size: int) -> int:
    """`size` rounded up to a multiple of `patch_size`."""
    return int(math.ceil(size / patch_size) * patch_size)


@keras.saving.register_keras_serializable(package="pump_keras")
class PatchUnfold(layers.Layer):
    """`[B, H, W, C]` feature maps to `[B * p * p, N, C]` sequences of N patches.

    Sequence `(b, i, j)` holds pixel `(i, j)` of every `p x p` patch of image
    b, so attention runs across patches. H and W not divisible by p are first
    resized (bilinear) to the next multiple.
    """

    def __init__(self, patch_size: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = int(patch_size)

    def call(self, features):
        _, height, width, channels = features.shape
        p = self.patch_size
        padded_height, padded_width = _padded(height, p), _padded(width, p)
        if (padded_height, padded_width) != (height, width):
            features = ops.image.resize(features, (padded_height, padded_width),
                                        interpolation="bilinear", data_format="channels_last")
        grid_height, grid_width = padded_height // p, padded_width // p
        x = ops.reshape(features, (-1, grid_height, p, grid_width, p, channels))
        x = ops.transpose(x, (0, 2, 4, 1, 3, 5))
        return ops.reshape(x, (-1, grid_height * grid_width, channels))

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        p = self.patch_size
        patches = (_padded(height, p) // p) * (_padded(width, p) // p)
        return (None if batch is None else batch * p * p, patches, channels)

    def get_config(self):
        return {**super().get_config(), "patch_size": self.patch_size}


@keras.saving.register_keras_serializable(package="pump_keras")
class PatchFold(layers.Layer):
    """Inverse of `PatchUnfold`: `[B * p * p, N, C]` back to `[B, height, width, C]`."""

    def __init__(self, height: int, width: int, patch_size: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.height, self.width, self.patch_size = int(height), int(width), int(patch_size)

    def call(self, sequences):
        channels = sequences.shape[-1]
        p = self.patch_size
        padded_height, padded_width = _padded(self.height, p), _padded(self.width, p)
        x = ops.reshape(sequences, (-1, p, p, padded_height // p, padded_width // p, channels))
        x = ops.transpose(x, (0, 3, 1, 4, 2, 5))
        x = ops.reshape(x, (-1, padded_height, padded_width, channels))
        if (padded_height, padded_width) != (self.height, self.width):
            x = ops.image.resize(x, (self.height, self.width), interpolation="bilinear",
                                 data_format="channels_last")
        return x

    def compute_output_shape(self, input_shape):
        batch = input_shape[0]
        p2 = self.patch_size ** 2
        return (None if batch is None else batch // p2, self.height, self.width, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "height": self.height, "width": self.width,
                "patch_size": self.patch_size}


def _conv_bn(filters: int, kernel_size: int, strides: int, name: str, activation="swish",
             depthwise: bool = False):
    """Conv (or depthwise conv) -> BatchNorm -> optional activation, named `name_*`."""

    def apply(x):
        if depthwise:
            x = layers.DepthwiseConv2D(kernel_size, strides=strides, padding="same",
                                       use_bias=False, name=f"{name}_dwconv")(x)
        else:
            x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same",
                              use_bias=False, name=f"{name}_conv")(x)
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        if activation:
            x = layers.Activation(activation, name=f"{name}_act")(x)
        return x

    return apply


def inverted_residual_block(filters: int, strides: int, expansion: int, name: str):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 project (+ residual)."""

    def apply(inputs):
        x = inputs
        hidden = inputs.shape[-1] * expansion
        if expansion != 1:
            x = _conv_bn(hidden, 1, 1, f"{name}_expand")(x)
        x = _conv_bn(hidden, 3, strides, f"{name}_depthwise", depthwise=True)(x)
        x = _conv_bn(filters, 1, 1, f"{name}_project", activation=None)(x)
        if strides == 1 and inputs.shape[-1] == filters:
            x = layers.Add(name=f"{name}_add")([inputs, x])
        return x

    return apply


def transformer_layer(dim: int, num_heads: int, dropout_rate: float, name: str):
    """Pre-norm transformer layer: LN, multi-head attention, LN, MLP (2d, SiLU); residuals."""

    def apply(inputs):
        x = layers.LayerNormalization(epsilon=1e-5, name=f"{name}_attention_norm")(inputs)
        x = layers.MultiHeadAttention(num_heads, dim // num_heads, name=f"{name}_attention")(x, x)
        x = layers.Dropout(dropout_rate, name=f"{name}_attention_dropout")(x)
        x = layers.Add(name=f"{name}_attention_add")([inputs, x])
        y = layers.LayerNormalization(epsilon=1e-5, name=f"{name}_mlp_norm")(x)
        y = layers.Dense(2 * dim, activation="swish", name=f"{name}_mlp_dense1")(y)
        y = layers.Dropout(dropout_rate, name=f"{name}_mlp_dropout1")(y)
        y = layers.Dense(dim, name=f"{name}_mlp_dense2")(y)
        y = layers.Dropout(dropout_rate, name=f"{name}_mlp_dropout2")(y)
        return layers.Add(name=f"{name}_mlp_add")([x, y])

    return apply


def mobilevit_block(dim: int, depth: int, num_heads: int, patch_size: int,
                    dropout_rate: float, name: str):
    """MobileViT block: local 3x3 and 1x1 to d, unfold, L transformers, fold, 1x1 to C, fuse."""

    def apply(inputs):
        _, height, width, channels = inputs.shape
        x = _conv_bn(channels, 3, 1, f"{name}_local")(inputs)
        x = layers.Conv2D(dim, 1, use_bias=False, name=f"{name}_to_dim")(x)
        x = PatchUnfold(patch_size, name=f"{name}_unfold")(x)
        for index in range(1, depth + 1):
            x = transformer_layer(dim, num_heads, dropout_rate, f"{name}_transformer{index}")(x)
        x = layers.LayerNormalization(epsilon=1e-5, name=f"{name}_norm")(x)
        x = PatchFold(height, width, patch_size, name=f"{name}_fold")(x)
        x = _conv_bn(channels, 1, 1, f"{name}_to_channels")(x)
        x = layers.Concatenate(name=f"{name}_concat")([inputs, x])
        return _conv_bn(channels, 3, 1, f"{name}_fusion")(x)

    return apply


@register_model("mobilevit")
def mobilevit(variant: str = "xs", input_shape=DEFAULT_INPUT_SHAPE, num_heads: int = 4,
              patch_size: int = 2, transformer_dropout: float = 0.1,
              dropout_rate: float = 0.1) -> keras.Model:
    """MobileViT `variant` ("xxs", "xs" or "s") + dropout + one logit; our implementation.

    Input sizes must be divisible by 32 (five stride-2 stages).
    """
    if variant not in MOBILEVIT_VARIANTS:
        raise ValueError(f"variant must be one of {tuple(MOBILEVIT_VARIANTS)}, got {variant!r}.")
    spec = MOBILEVIT_VARIANTS[variant]
    input_shape = _check_input_shape(input_shape, multiple=32)
    dims = [s.transformer_dim for s in spec.stages if s.transformer_dim]
    if not isinstance(num_heads, int) or num_heads < 1 or any(d % num_heads for d in dims):
        raise ValueError(
            f"num_heads must be a positive int dividing the widths {dims}, got {num_heads!r}.")
    if not isinstance(patch_size, int) or patch_size < 1:
        raise ValueError(f"patch_size must be a positive int, got {patch_size!r}.")
    transformer_dropout = _check_rate("transformer_dropout", transformer_dropout)
    dropout_rate = _check_rate("dropout_rate", dropout_rate)

    inputs = image_input(input_shape)
    x = _conv_bn(spec.stem_filters, 3, 2, "stem")(inputs)
    for number, stage in enumerate(spec.stages, start=1):
        for block in range(stage.mv2_blocks):
            x = inverted_residual_block(stage.filters, stage.strides if block == 0 else 1,
                                        spec.expansion, f"stage{number}_mv2_{block + 1}")(x)
        if stage.transformer_dim:
            x = mobilevit_block(stage.transformer_dim, stage.transformer_depth, num_heads,
                                patch_size, transformer_dropout, f"stage{number}_mobilevit")(x)
    x = _conv_bn(spec.head_filters, 1, 1, "head")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, logit_head(x, dropout_rate), name="mobilevit")


# ---------------------------------------------------------------- plain CNN


@register_model("plain_cnn")
def plain_cnn(filters: Sequence[int] = (32, 64, 128, 256), kernel_size: int = 3,
              dropout_rate: float = 0.3, input_shape=DEFAULT_INPUT_SHAPE) -> keras.Model:
    """Conv-BN-ReLU-MaxPool per entry of `filters`, global average pool, dropout, one logit."""
    widths = tuple(filters) if isinstance(filters, (tuple, list)) else ()
    if not widths or not all(isinstance(f, int) and f > 0 for f in widths):
        raise ValueError(f"filters must be a non-empty sequence of positive ints, got {filters!r}.")
    if not isinstance(kernel_size, int) or kernel_size < 1:
        raise ValueError(f"kernel_size must be a positive int, got {kernel_size!r}.")
    input_shape = _check_input_shape(input_shape, min_size=2 ** len(widths))
    dropout_rate = _check_rate("dropout_rate", dropout_rate)

    inputs = image_input(input_shape)
    x = inputs
    for number, width in enumerate(widths, start=1):
        x = layers.Conv2D(width, kernel_size, padding="same", use_bias=False,
                          name=f"block{number}_conv")(x)
        x = layers.BatchNormalization(name=f"block{number}_bn")(x)
        x = layers.Activation("relu", name=f"block{number}_relu")(x)
        x = layers.MaxPooling2D(2, name=f"block{number}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, logit_head(x, dropout_rate), name="plain_cnn")
