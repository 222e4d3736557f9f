"""EfficientNetV2-S from the paper's stage table, with interchangeable attention.

The architecture is data: `EFFICIENTNETV2_S_STAGES` is the paper's Table 2
(the same values as Keras' own `EfficientNetV2S`), and the attention module
of each stage is a field of that table. "SE in stages 4-6" (Table 2) and
"improved CBAM in stages 4-6" (Table 3) are two rows of configuration, made by
`with_attention`, not two code paths.

Layers are named exactly as in `keras.applications.EfficientNetV2S`
(`stem_conv`, `block4a_expand_conv`, `top_bn`, ...), the attention module of
block `block4a_` being `block4a_<kind>`. With `attention="se"` the model is
EfficientNetV2-S exactly: the same parameter count as Keras' model plus the
one-logit head, and Keras' weights load into it by name
(`load_keras_application_weights`), so a user holding the ImageNet weights
file can start from it (`weights=PATH`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, Optional, Sequence, Tuple

import keras
from keras import layers

from pump_keras.layers.attention import build_attention
from pump_keras.models.head import image_input, logit_head
from pump_keras.models.registry import register_model

# Configs, not instances (as in keras.applications): every layer makes its own
# initializer, seeded from the global seed when it is built. One shared
# unseeded instance would give every same-shaped kernel the same values.
CONV_KERNEL_INITIALIZER = {
    "class_name": "VarianceScaling",
    "config": {"scale": 2.0, "mode": "fan_out", "distribution": "truncated_normal"},
}
# The logit's kernel. keras.applications scales its 1000-class head by fan_out
# (variance 1/3000); with one logit fan_out is 1, the variance 1/3 and a fresh
# network's logits of the order of 10, so the first steps' loss and gradients
# are some 30 times too large and SGD inflates the weights before it learns.
# Scaling by fan_in keeps the ImageNet head's scale (1280 inputs: 1/3840).
DENSE_KERNEL_INITIALIZER = {
    "class_name": "VarianceScaling",
    "config": {"scale": 1.0 / 3.0, "mode": "fan_in", "distribution": "uniform"},
}


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """One row of the stage table.

    Attributes:
        block: "fused" (Fused-MBConv) or "mbconv".
        repeats: blocks in the stage (before depth scaling).
        input_filters, output_filters: channels in and out (before width scaling).
        expand_ratio: expansion of the block's input channels.
        kernel_size: depthwise (MBConv) or fused conv kernel size.
        strides: stride of the stage's first block.
        attention: attention registry name for the stage's blocks, or None.
        se_ratio: SE bottleneck as a fraction of the block's input filters.
    """

    block: str
    repeats: int
    input_filters: int
    output_filters: int
    expand_ratio: int
    kernel_size: int
    strides: int
    attention: Optional[str] = None
    se_ratio: float = 0.25


# Paper Table 2 (stages 1-6; stage 0 is the 3x3 stem, stage 7 the top).
EFFICIENTNETV2_S_STAGES: Tuple[StageSpec, ...] = (
    StageSpec("fused", 2, 24, 24, 1, 3, 1),
    StageSpec("fused", 4, 24, 48, 4, 3, 2),
    StageSpec("fused", 4, 48, 64, 4, 3, 2),
    StageSpec("mbconv", 6, 64, 128, 4, 3, 2, attention="se"),
    StageSpec("mbconv", 9, 128, 160, 6, 3, 1, attention="se"),
    StageSpec("mbconv", 15, 160, 256, 6, 3, 2, attention="se"),
)
TOP_FILTERS = 1280
PLACEMENTS = ("mbconv", "all")


def with_attention(stages: Sequence[StageSpec], attention: Optional[str],
                   placement: str = "mbconv") -> Tuple[StageSpec, ...]:
    """The stage table with `attention` in the MBConv stages 4-6 or in all stages.

    `placement="mbconv"` is the paper's Table 3 (attention replaces SE where
    SE was); `"all"` also puts it into the fused stages 1-3, as the paper's
    text says.
    """
    if placement not in PLACEMENTS:
        raise ValueError(f"attention placement must be one of {PLACEMENTS}, got {placement!r}.")
    return tuple(
        dataclasses.replace(stage, attention=attention)
        if placement == "all" or stage.block == "mbconv" else stage
        for stage in stages
    )


def round_filters(filters: int, width_multiplier: float, divisor: int = 8) -> int:
    """Channels scaled by `width_multiplier`, rounded to a multiple of `divisor`."""
    filters *= width_multiplier
    return int(max(divisor, int(filters + divisor / 2) // divisor * divisor))


def round_repeats(repeats: int, depth_multiplier: float) -> int:
    """Blocks scaled by `depth_multiplier`, rounded up."""
    return int(math.ceil(depth_multiplier * repeats))


def _conv(filters, kernel_size, strides, name):
    return layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False,
                         kernel_initializer=CONV_KERNEL_INITIALIZER, name=name)


def _bn(momentum, name):
    return layers.BatchNormalization(axis=-1, momentum=momentum, name=name)


def mbconv_block(stage: StageSpec, input_filters: int, output_filters: int, strides: int,
                 drop_rate: float, bn_momentum: float, activation: str, attention_options: dict,
                 name: str):
    """MBConv: 1x1 expand, depthwise conv, attention, 1x1 project (+ residual)."""

    def apply(inputs):
        filters = input_filters * stage.expand_ratio
        x = inputs
        if stage.expand_ratio != 1:
            x = _conv(filters, 1, 1, f"{name}expand_conv")(x)
            x = _bn(bn_momentum, f"{name}expand_bn")(x)
            x = layers.Activation(activation, name=f"{name}expand_activation")(x)
        x = layers.DepthwiseConv2D(stage.kernel_size, strides=strides, padding="same",
                                   use_bias=False, depthwise_initializer=CONV_KERNEL_INITIALIZER,
                                   name=f"{name}dwconv2")(x)
        x = _bn(bn_momentum, f"{name}bn")(x)
        x = layers.Activation(activation, name=f"{name}activation")(x)
        x = _attention(x, stage, input_filters, attention_options, name)
        x = _conv(output_filters, 1, 1, f"{name}project_conv")(x)
        x = _bn(bn_momentum, f"{name}project_bn")(x)
        return _residual(x, inputs, strides, input_filters, output_filters, drop_rate, name)

    return apply


def fused_mbconv_block(stage: StageSpec, input_filters: int, output_filters: int, strides: int,
                       drop_rate: float, bn_momentum: float, activation: str,
                       attention_options: dict, name: str):
    """Fused-MBConv: one KxK expand conv, attention, 1x1 project (+ residual)."""

    def apply(inputs):
        filters = input_filters * stage.expand_ratio
        x = inputs
        if stage.expand_ratio != 1:
            x = _conv(filters, stage.kernel_size, strides, f"{name}expand_conv")(x)
            x = _bn(bn_momentum, f"{name}expand_bn")(x)
            x = layers.Activation(activation, name=f"{name}expand_activation")(x)
        x = _attention(x, stage, input_filters, attention_options, name)
        expanded = stage.expand_ratio != 1
        x = _conv(output_filters, 1 if expanded else stage.kernel_size, 1 if expanded else strides,
                  f"{name}project_conv")(x)
        x = _bn(bn_momentum, f"{name}project_bn")(x)
        if not expanded:
            x = layers.Activation(activation, name=f"{name}project_activation")(x)
        return _residual(x, inputs, strides, input_filters, output_filters, drop_rate, name)

    return apply


def _attention(x, stage: StageSpec, input_filters: int, options: dict, name: str):
    if stage.attention is None:
        return x
    layer = build_attention(stage.attention, input_filters=input_filters, se_ratio=stage.se_ratio,
                            name=f"{name}{stage.attention}", **options.get(stage.attention, {}))
    return layer(x)


def _residual(x, inputs, strides, input_filters, output_filters, drop_rate, name):
    if strides != 1 or input_filters != output_filters:
        return x
    if drop_rate:
        # Stochastic depth: drop the whole residual branch per sample.
        x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}drop")(x)
    return layers.add([x, inputs], name=f"{name}add")


BLOCKS = {"fused": fused_mbconv_block, "mbconv": mbconv_block}


STEM_DOWNSAMPLING = ("stride", "max_pool")


def efficientnet_v2(
    stages: Sequence[StageSpec] = EFFICIENTNETV2_S_STAGES,
    input_shape: Tuple[int, int, int] = (224, 224, 3),
    width_multiplier: float = 1.0,
    depth_multiplier: float = 1.0,
    dropout_rate: float = 0.2,
    drop_connect_rate: float = 0.2,
    bn_momentum: float = 0.9,
    activation: str = "swish",
    attention_options: Optional[Dict[str, dict]] = None,
    stem_downsampling: str = "stride",
    name: str = "efficientnetv2",
) -> keras.Model:
    """EfficientNetV2 from a stage table, with a one-logit head.

    Args:
        stages: the stage table (see `StageSpec`).
        input_shape: `(height, width, channels)` of the [0, 1] images.
        width_multiplier, depth_multiplier: channel and depth scaling.
        dropout_rate: dropout before the logit.
        drop_connect_rate: stochastic depth rate of the last block (linear in depth).
        bn_momentum: BatchNormalization momentum.
        activation: activation of all blocks.
        attention_options: per attention kind, extra constructor options, e.g.
            `{"improved_cbam": {"reduction": 8}}`.
        stem_downsampling: how the stem halves the image: `"stride"` (a
            stride-2 convolution, the paper's and Keras') or `"max_pool"` (a
            stride-1 convolution, then 2x2 max pooling, which keeps a peak one
            pixel wide, e.g. a tonal line one mel band high).
        name: the model's name.
    """
    _check_options(stages, input_shape, width_multiplier, depth_multiplier, dropout_rate,
                   drop_connect_rate, bn_momentum, stem_downsampling)
    attention_options = dict(attention_options or {})
    inputs = image_input(input_shape)
    # [0, 1] images onto Keras' EfficientNetV2 input range: pixels p in
    # [0, 255] go to p / 128 - 1, and p = 255 * image.
    x = layers.Rescaling(scale=255.0 / 128.0, offset=-1.0, name="rescaling")(inputs)
    stem_strides = 2 if stem_downsampling == "stride" else 1
    x = _conv(round_filters(stages[0].input_filters, width_multiplier), 3, stem_strides, "stem_conv")(x)
    x = _bn(bn_momentum, "stem_bn")(x)
    x = layers.Activation(activation, name="stem_activation")(x)
    if stem_downsampling == "max_pool":
        x = layers.MaxPooling2D(2, padding="same", name="stem_pool")(x)

    total_blocks = float(sum(stage.repeats for stage in stages))
    block_index = 0
    for i, stage in enumerate(stages):
        input_filters = round_filters(stage.input_filters, width_multiplier)
        output_filters = round_filters(stage.output_filters, width_multiplier)
        for j in range(round_repeats(stage.repeats, depth_multiplier)):
            first = j == 0
            x = BLOCKS[stage.block](
                stage,
                input_filters=input_filters if first else output_filters,
                output_filters=output_filters,
                strides=stage.strides if first else 1,
                drop_rate=drop_connect_rate * block_index / total_blocks,
                bn_momentum=bn_momentum,
                activation=activation,
                attention_options=attention_options,
                name=f"block{i + 1}{chr(j + 97)}_",
            )(x)
            block_index += 1

    x = _conv(round_filters(TOP_FILTERS, width_multiplier), 1, 1, "top_conv")(x)
    x = _bn(bn_momentum, "top_bn")(x)
    x = layers.Activation(activation, name="top_activation")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, logit_head(x, dropout_rate, DENSE_KERNEL_INITIALIZER), name=name)


def _check_options(stages, input_shape, width_multiplier, depth_multiplier, dropout_rate,
                   drop_connect_rate, bn_momentum, stem_downsampling):
    if not stages:
        raise ValueError("The stage table is empty.")
    for stage in stages:
        if stage.block not in BLOCKS:
            raise ValueError(f"Unknown block {stage.block!r} in {stage}; expected {tuple(BLOCKS)}.")
        if stage.repeats <= 0:
            raise ValueError(f"A stage needs at least one block, got {stage}.")
    if len(input_shape) != 3 or min(input_shape[:2]) < 32:
        raise ValueError(f"input_shape must be (height >= 32, width >= 32, channels), got {input_shape}.")
    if width_multiplier <= 0 or depth_multiplier <= 0:
        raise ValueError(
            f"width and depth multipliers must be positive, got {width_multiplier}, {depth_multiplier}.")
    if not 0 <= dropout_rate < 1 or not 0 <= drop_connect_rate < 1:
        raise ValueError(
            f"dropout rates must lie in [0, 1), got {dropout_rate} and {drop_connect_rate}.")
    if not 0.0 <= bn_momentum < 1.0:
        raise ValueError(f"bn_momentum must lie in [0, 1), got {bn_momentum!r}.")
    if stem_downsampling not in STEM_DOWNSAMPLING:
        raise ValueError(f"stem_downsampling must be one of {STEM_DOWNSAMPLING}, got {stem_downsampling!r}.")


@register_model("efficientnetv2_s")
def efficientnetv2_s(
    attention: Optional[str] = "improved_cbam",
    attention_placement: str = "mbconv",
    reduction: int = 16,
    input_shape: Tuple[int, int, int] = (224, 224, 3),
    width_multiplier: float = 1.0,
    depth_multiplier: float = 1.0,
    dropout_rate: float = 0.2,
    drop_connect_rate: float = 0.2,
    attention_options: Optional[Dict[str, dict]] = None,
    bn_momentum: float = 0.9,
    stem_downsampling: str = "stride",
    weights: Optional[str] = None,
) -> keras.Model:
    """EfficientNetV2-S (paper Table 2) with `attention` in its MBConv stages.

    Args:
        attention: attention registry name for the attention stages:
            `"improved_cbam"` (the paper's model, Table 3), `"se"` (plain
            EfficientNetV2-S, exactly Keras'), any other registered kind, or
            `None` for no attention.
        attention_placement: `"mbconv"` (stages 4-6) or `"all"` (stages 1-6).
        reduction: channel reduction r of CBAM-style attention MLPs.
        input_shape, width_multiplier, depth_multiplier, dropout_rate,
            drop_connect_rate: see `efficientnet_v2`.
        attention_options: extra per-kind attention options.
        bn_momentum: BatchNormalization momentum (Keras' 0.9 by default).
        stem_downsampling: `"stride"` (the paper's) or `"max_pool"`; see
            `efficientnet_v2`.
        weights: optional path to a keras.applications EfficientNetV2S
            weights file, loaded by layer name (unscaled widths and depths
            only); attention layers other than SE keep their initial weights.
    """
    options = {kind: dict(values) for kind, values in (attention_options or {}).items()}
    if attention is not None and attention != "se":
        options.setdefault(attention, {}).setdefault("reduction", reduction)
    model = efficientnet_v2(
        stages=with_attention(EFFICIENTNETV2_S_STAGES, attention, attention_placement),
        input_shape=input_shape,
        width_multiplier=width_multiplier,
        depth_multiplier=depth_multiplier,
        dropout_rate=dropout_rate,
        drop_connect_rate=drop_connect_rate,
        attention_options=options,
        bn_momentum=bn_momentum,
        stem_downsampling=stem_downsampling,
        name=f"efficientnetv2_s_{attention or 'none'}",
    )
    if weights is not None:
        load_keras_application_weights(model, weights)
    return model


def load_keras_application_weights(model: keras.Model, source) -> Dict[str, int]:
    """Copies weights of a `keras.applications` EfficientNetV2S into `model` by layer name.

    Args:
        model: built by `efficientnetv2_s` at unscaled width and depth.
        source: a `keras.applications.EfficientNetV2S` model, or the path of
            its weights file (with or without the classification top).

    Returns:
        Counts: `loaded` layers, `skipped` source layers without a
        counterpart (SE layers when `model` uses another attention, the
        ImageNet classifier).

    Raises:
        ValueError: a layer's weights do not fit (another width or depth).
    """
    if isinstance(source, str):
        source = _keras_application_model(source, model.input_shape[1:])
    loaded = skipped = 0
    ours = {layer.name: layer for layer in model.layers}
    for layer in source.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        name = layer.name
        if name.endswith(("se_reduce", "se_expand")):
            target = ours.get(name[: -len("se_reduce")] + "se")
            if target is None:
                skipped += 1
                continue
            _copy_se_half(target, name.endswith("se_reduce"), weights)
        elif name in ours:
            _set_weights(ours[name], weights)
        else:
            skipped += 1
            continue
        loaded += 1
    return {"loaded": loaded, "skipped": skipped}


def _keras_application_model(path: str, input_shape) -> keras.Model:
    last_error = None
    for include_top in (False, True):
        try:
            return keras.applications.EfficientNetV2S(
                include_top=include_top, weights=path, input_shape=None if include_top else input_shape,
                pooling=None if include_top else "avg")
        except (ValueError, OSError) as error:
            last_error = error
    raise ValueError(f"{path}: not a keras.applications EfficientNetV2S weights file ({last_error}).")


def _copy_se_half(target, reduce_half: bool, weights) -> None:
    kernel, bias = weights
    values = target.get_weights()
    offset = 0 if reduce_half else 2
    # Keras' 1x1 convs hold [1, 1, in, out] kernels; the SE layer holds [in, out].
    values[offset] = kernel.reshape(values[offset].shape)
    values[offset + 1] = bias
    _set_weights(target, values)


def _set_weights(layer, weights) -> None:
    expected = [tuple(w.shape) for w in layer.get_weights()]
    given = [tuple(w.shape) for w in weights]
    if expected != given:
        raise ValueError(
            f"Layer {layer.name!r}: weights of shapes {given} do not fit {expected}; the source "
            "must be EfficientNetV2-S at the same width, depth and input channels.")
    layer.set_weights(weights)
