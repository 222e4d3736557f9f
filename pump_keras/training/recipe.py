"""The paper's training recipe as Keras objects: optimizer, schedule, loss, metrics, MixUp, class weights."""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from pump_keras.config import TrainConfig
from pump_keras.training.optimizers import SGDWithL2


def derived_seed(seed: int, *parts: int) -> int:
    """A 31-bit seed that depends on `seed` and `parts` (e.g. an epoch), reproducibly."""
    sequence = np.random.SeedSequence([int(seed) % 2**32, *(int(p) % 2**32 for p in parts)])
    return int(sequence.generate_state(1)[0] % (2**31 - 1))


def learning_rate_schedule(config: TrainConfig, steps_per_epoch: int):
    """Cosine decay from `learning_rate` to `final_learning_rate` over the training steps.

    With `warmup_epochs`, the rate first rises linearly from
    `final_learning_rate` to `learning_rate` over those epochs, and the cosine
    covers the rest.
    """
    total = max(1, config.epochs * steps_per_epoch)
    warmup = min(int(round(config.warmup_epochs * steps_per_epoch)), total - 1)
    if warmup <= 0:
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=config.learning_rate, decay_steps=total,
            alpha=config.final_learning_rate / config.learning_rate)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.final_learning_rate, decay_steps=total - warmup,
        alpha=config.final_learning_rate / config.learning_rate, warmup_target=config.learning_rate,
        warmup_steps=warmup)


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The optimizer of `config.optimizer` on the cosine schedule.

    `"sgd"`: SGD with momentum and L2 weight decay added to the gradient
    (PyTorch's `SGD(weight_decay=...)`, `SGDWithL2`). `"adamw"`: AdamW, whose
    weight decay is decoupled by definition. `"adam"`: Adam, with no weight
    decay (`weight_decay` must be 0).
    """
    schedule = learning_rate_schedule(config, steps_per_epoch)
    clipping = {} if config.gradient_clip_norm is None else {"global_clipnorm": config.gradient_clip_norm}
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=schedule, weight_decay=config.weight_decay, **clipping)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=schedule, **clipping)
    return SGDWithL2(learning_rate=schedule, momentum=config.momentum, l2=config.weight_decay, **clipping)


def make_loss(config: TrainConfig) -> keras.losses.Loss:
    """Binary cross-entropy on logits with label smoothing."""
    return keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=config.label_smoothing)


def make_metrics() -> list:
    """Metrics reported per epoch: ROC AUC and accuracy, both on logits."""
    return [
        keras.metrics.AUC(from_logits=True, name="auc"),
        keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy"),
    ]


def compile_model(model: keras.Model, config: TrainConfig, steps_per_epoch: int) -> keras.Model:
    """Compiles `model` with the recipe and builds the optimizer (so checkpoints can restore it)."""
    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch),
        loss=make_loss(config),
        metrics=make_metrics(),
        jit_compile=config.jit_compile,
    )
    model.optimizer.build(model.trainable_variables)
    return model


def class_weights(labels: Sequence[float], mode: str) -> Dict[int, float]:
    """`{0: w0, 1: w1}`: `n / (2 n_c)` per class with `mode="weights"`, ones with `"none"`."""
    labels = np.asarray(labels, dtype=np.float64)
    if mode == "none":
        return {0: 1.0, 1: 1.0}
    counts = np.array([np.sum(labels == 0), np.sum(labels == 1)], dtype=np.float64)
    if np.any(counts == 0):
        raise ValueError(f"Class weights need both classes in the training split; counts are {counts.tolist()}.")
    weights = len(labels) / (2.0 * counts)
    return {0: float(weights[0]), 1: float(weights[1])}


def roll_time(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Each image `[B, H, W, C]` rolled along time (columns) by its own random shift.

    A pump's sound is stationary: a recording started a moment later is as
    valid a clip, so this adds examples without changing what they show.
    """
    batch, width = tf.shape(images)[0], tf.shape(images)[2]
    shifts = tf.random.stateless_uniform([batch, 1], seed, 0, width, dtype=tf.int32)
    columns = (tf.range(width)[None, :] + shifts) % width
    return tf.gather(images, columns, axis=2, batch_dims=1)


def _band_mask(seed: tf.Tensor, batch, size, count: int, max_fraction: float) -> tf.Tensor:
    """`[B, size]` float, 0 inside `count` random bands of up to `max_fraction * size`, 1 elsewhere."""
    keep = tf.ones([batch, size])
    positions = tf.range(size)[None, :]
    for index in range(count):
        band_seed = tf.random.experimental.stateless_fold_in(seed, index)
        widths = tf.random.stateless_uniform(
            [batch, 1], band_seed, 0, tf.maximum(1, tf.cast(max_fraction * tf.cast(size, tf.float32), tf.int32)) + 1,
            dtype=tf.int32)
        starts = tf.random.stateless_uniform(
            [batch, 1], tf.random.experimental.stateless_fold_in(band_seed, 1), 0, size, dtype=tf.int32)
        inside = (positions >= starts) & (positions < starts + widths)
        keep *= 1.0 - tf.cast(inside, tf.float32)
    return keep


def spec_augment(images: tf.Tensor, seed: tf.Tensor, masks: int, max_fraction: float) -> tf.Tensor:
    """SpecAugment's masking (Park et al. 2019): `masks` frequency and `masks` time bands per image.

    Masked pixels take the image's mean, so a mask adds no edge of its own.
    """
    batch, height, width = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    rows = _band_mask(tf.random.experimental.stateless_fold_in(seed, 0), batch, height, masks, max_fraction)
    columns = _band_mask(tf.random.experimental.stateless_fold_in(seed, 1), batch, width, masks, max_fraction)
    keep = rows[:, :, None, None] * columns[:, None, :, None]
    mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
    return images * keep + mean * (1.0 - keep)


def _random_band(seed: tf.Tensor, batch, size, max_fraction: float) -> tf.Tensor:
    """`[B, size]` float, 1 inside one random band of 1 to `max_fraction * size` entries, 0 elsewhere."""
    widest = tf.maximum(1, tf.cast(max_fraction * tf.cast(size, tf.float32), tf.int32))
    widths = tf.random.stateless_uniform([batch, 1], seed, 1, widest + 1, dtype=tf.int32)
    room = tf.cast(size - widths + 1, tf.float32)
    starts = tf.cast(tf.random.stateless_uniform(
        [batch, 1], tf.random.experimental.stateless_fold_in(seed, 1)) * room, tf.int32)
    positions = tf.range(size)[None, :]
    return tf.cast((positions >= starts) & (positions < starts + widths), tf.float32)


def pseudo_anomalies(images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor, fraction: float,
                     strength: Tuple[float, float], max_width: float) -> Tuple[tf.Tensor, tf.Tensor]:
    """Turns a random `fraction` of the normal images into made-up anomalies labelled 1.

    Each chosen image gets one frequency band (1 row up to `max_width` of the
    rows) made louder or quieter by `strength` (uniform in `[low, high]`)
    times the image's own standard deviation, over the whole clip or (half
    of the time) over a stretch of up to half of it; pixels stay in [0, 1].
    A fault of a kind never recorded still changes some band's level or how
    it varies, so the network learns "unlike the normal clips" and not only
    "like the faults in the training split" (outlier exposure with
    synthetic outliers, in the spirit of CutPaste, Li et al. 2021).

    Args:
        images: `[B, H, W, C]` feature planes (no fixed channels).
        labels: `[B, 1]` 0/1 labels.
    """
    batch, height, width = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]

    def part(index):
        return tf.random.experimental.stateless_fold_in(seed, index)

    chosen = (tf.random.stateless_uniform([batch], part(0)) < fraction) & (labels[:, 0] < 0.5)
    rows = _random_band(part(1), batch, height, max_width)
    stretch = _random_band(part(2), batch, width, 0.5)
    whole_clip = tf.random.stateless_uniform([batch, 1], part(3)) < 0.5
    columns = tf.where(whole_clip, tf.ones_like(stretch), stretch)
    sign = tf.where(tf.random.stateless_uniform([batch], part(4)) < 0.5, -1.0, 1.0)
    spread = tf.math.reduce_std(images, axis=[1, 2, 3])
    amount = sign * spread * tf.random.stateless_uniform([batch], part(5), strength[0], strength[1])
    amount *= tf.cast(chosen, tf.float32)
    shift = rows[:, :, None] * columns[:, None, :] * amount[:, None, None]
    images = tf.clip_by_value(images + shift[..., None], 0.0, 1.0)
    return images, tf.where(chosen[:, None], tf.ones_like(labels), labels)


def augment(images: tf.Tensor, seed: tf.Tensor, config: TrainConfig, planes: int) -> tf.Tensor:
    """The configured time roll and SpecAugment masks on the first `planes` channels.

    Channels after them (the frequency position) pass unchanged.
    """
    if not config.time_roll and not config.spec_augment_masks:
        return images
    image_planes, rest = images[..., :planes], images[..., planes:]
    if config.time_roll:
        image_planes = roll_time(image_planes, tf.random.experimental.stateless_fold_in(seed, 0))
    if config.spec_augment_masks:
        image_planes = spec_augment(image_planes, tf.random.experimental.stateless_fold_in(seed, 1),
                                    config.spec_augment_masks, config.spec_augment_width)
    return tf.concat([image_planes, rest], axis=-1)


def training_batches(dataset: tf.data.Dataset, config: TrainConfig, weights: Dict[int, float],
                     epoch: int, fixed_channels: int = 0) -> tf.data.Dataset:
    """Training batches `(images, labels [B, 1], sample_weights [B])` for one epoch.

    Augmentation first (`augment`: time roll, SpecAugment masks; then
    `pseudo_anomalies`), seeded by the run seed, the epoch and the batch's
    index, on every channel but the last `fixed_channels` (the frequency
    position). Made-up anomalies take the abnormal class weight. Then MixUp
    (`keras.layers.MixUp`, seeded by the run seed and the epoch, run
    sequentially so its random stream is reproducible) mixes images and
    labels. A mixed pair's sample weight is its class weights mixed the same
    way, `w = y w1 + (1 - y) w0` for the mixed label `y`, and its target
    becomes `y w1 / w`: since BCE (and label smoothing) is affine in the
    target, `w * BCE(y w1 / w)` is exactly the lambda-mix of the two clips'
    class-weighted losses, so both classes keep equal loss mass under MixUp.
    Without MixUp, labels are 0 or 1 and stay as they are.
    """
    mixup = None
    if config.mixup_alpha > 0:
        mixup = keras.layers.MixUp(alpha=config.mixup_alpha, seed=derived_seed(config.seed, epoch, 1))
    low, high = weights[0], weights[1]
    epoch_seed = derived_seed(config.seed, epoch, 3)

    def prepare(index, batch):
        images, labels = batch
        planes = images.shape[-1] - fixed_channels
        batch_seed = tf.stack([tf.constant(epoch_seed, tf.int64), index])
        images = augment(images, batch_seed, config, planes)
        labels = tf.reshape(tf.cast(labels, tf.float32), (-1, 1))
        if config.pseudo_anomaly_fraction > 0:
            made_up, labels = pseudo_anomalies(
                images[..., :planes], labels, tf.random.experimental.stateless_fold_in(batch_seed, 2),
                config.pseudo_anomaly_fraction, config.pseudo_anomaly_strength, config.pseudo_anomaly_width)
            images = tf.concat([made_up, images[..., planes:]], axis=-1)
        if mixup is not None:
            mixed = mixup({"images": images, "labels": labels}, training=True)
            images, labels = tf.cast(mixed["images"], tf.float32), tf.cast(mixed["labels"], tf.float32)
        # Written as a sum of the two weighted parts, so a hard label keeps
        # its class weight exactly and its target stays exactly 0 or 1.
        sample_weights = (1.0 - labels) * low + labels * high
        labels = labels * high / sample_weights
        return images, labels, tf.reshape(sample_weights, (-1,))

    return dataset.enumerate().map(prepare)


def evaluation_batches(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Validation/test batches with labels shaped `[B, 1]` like the logits."""
    return dataset.map(lambda images, labels: (images, tf.reshape(tf.cast(labels, tf.float32), (-1, 1))))
