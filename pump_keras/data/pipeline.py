"""The tf.data input pipeline: manifest records -> images and labels.

read file -> decode WAV (one channel, straight from the bytes) -> feature ->
one-channel image -> [on-disk cache] -> [shuffle] -> batch -> repeat to the
backbone's channels -> prefetch.

Memory stays bounded whatever the dataset size: files are read lazily, the
cache lives on disk, and only the shuffle buffer and a few batches are held.
The cache stores one-channel float32 images (`image_size**2 * 4` bytes each)
and the channel repeat happens after it, so cached epochs read a third of
the bytes.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from typing import Optional, Sequence

import tensorflow as tf

from pump_keras.config import DataConfig, FeatureConfig, to_dict
from pump_keras.features import to_backbone_channels, wav_bytes_to_image


def load_image(path: tf.Tensor, config: FeatureConfig) -> tf.Tensor:
    """Reads one WAV file and returns its one-channel `[size, size, 1]` image."""
    return wav_bytes_to_image(tf.io.read_file(path), config, source=path)


def cache_path_for(cache_dir: str, name: str, paths: Sequence[str], config: FeatureConfig) -> str:
    """A cache file prefix in `cache_dir` that changes whenever the files or features do.

    The fingerprint covers the feature config and each file's path, size and
    modification time, so a stale cache is never read.
    """
    digest = hashlib.sha256(json.dumps(to_dict(config), sort_keys=True).encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return os.path.join(cache_dir, f"{name}-{digest.hexdigest()[:16]}")


def _remove_stale_lockfiles(cache_prefix: str) -> None:
    # A process killed while writing the cache leaves a lockfile that makes
    # tf.data refuse to write it again; a run directory has one writer.
    for lockfile in glob.glob(glob.escape(cache_prefix) + "*.lockfile"):
        os.remove(lockfile)


def make_dataset(
    records: Sequence,
    feature_config: FeatureConfig,
    data_config: DataConfig,
    training: bool = False,
    cache_dir: Optional[str] = None,
    name: str = "data",
) -> tf.data.Dataset:
    """A batched dataset of `(images [B, N, N, C] float32, labels [B] float32)`.

    Args:
        records: objects with `path` and `label` (e.g. `ClipRecord`s of one split).
        feature_config: how audio becomes an image.
        data_config: batch size, shuffle buffer and seed, parallelism, caching.
        training: shuffle (seeded, reshuffled every epoch); order is kept otherwise,
            so predictions line up with `records`.
        cache_dir: where to cache images when `data_config.cache` is on.
        name: cache file name prefix (e.g. the split).
    """
    if not records:
        raise ValueError(f"No records for the {name!r} dataset.")
    paths = [str(r.path) for r in records]
    labels = [float(r.label) for r in records]
    parallel = data_config.num_parallel_calls or tf.data.AUTOTUNE

    caching = data_config.cache and cache_dir is not None
    dataset = tf.data.Dataset.from_tensor_slices((paths, labels))
    if training and not caching:
        # Without a cache, shuffle the (cheap) file names fully instead of images.
        dataset = dataset.shuffle(
            len(paths), seed=data_config.shuffle_seed, reshuffle_each_iteration=True)
    dataset = dataset.map(
        lambda path, label: (load_image(path, feature_config), label),
        num_parallel_calls=parallel,
        deterministic=True,
    )
    if caching:
        os.makedirs(cache_dir, exist_ok=True)
        prefix = cache_path_for(cache_dir, name, paths, feature_config)
        _remove_stale_lockfiles(prefix)
        dataset = dataset.cache(prefix)
    if training and caching:
        dataset = dataset.shuffle(
            min(data_config.shuffle_buffer, len(paths)),
            seed=data_config.shuffle_seed,
            reshuffle_each_iteration=True,
        )
    dataset = dataset.batch(data_config.batch_size)
    dataset = dataset.map(
        lambda images, batch_labels: (to_backbone_channels(images, feature_config), batch_labels),
        num_parallel_calls=parallel,
        deterministic=True,
    )
    return dataset.prefetch(tf.data.AUTOTUNE)
