"""The tf.data input pipeline: manifest records -> images and labels.

read file -> decode WAV (one channel, straight from the bytes) -> feature ->
one-channel image -> [on-disk cache] -> batch -> repeat to the backbone's
channels -> prefetch.

Training data is shuffled whole every epoch (seeded): without a cache, the
file list is shuffled before decoding; with one, the images are cached in
one `.npy` file and each epoch reads them in a fresh full permutation.
A bounded shuffle buffer over a cache written in path order would not do:
its batches hold the clips of a few neighbouring folders (one machine id,
one class, one SNR), so on a MIMII-sized split many batches hold no
abnormal clip at all.

Every file's header is read on the host when the dataset is made (a few
hundred bytes per file), so bad files are named before training starts and
the graph only slices the samples out of the bytes: no chunk walking and no
branching per element, which roughly doubles throughput on two cores. The
samples are decoded by the same `decode_samples` as the served graph's
`decode_wav`, so the images are identical (tested).

Memory stays bounded whatever the dataset size: files are read lazily, the
cache lives on disk (the training cache is memory-mapped, so the system's
page cache holds what fits), and only a few batches are held. The cache
stores one-channel float32 images (rows x columns x 4 bytes each) and the
channel repeat happens after it, so cached epochs read a third of the bytes.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import os
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from pump_keras.audio.decode import decode_samples, decoder_name
from pump_keras.audio.features import to_backbone_channels, wav_bytes_to_image, waveform_to_image
from pump_keras.audio.wavfile import read_wav_header
from pump_keras.config import DataConfig, FeatureConfig, to_dict


def load_image(path: tf.Tensor, config: FeatureConfig) -> tf.Tensor:
    """Reads one WAV file and returns its one-channel `[rows, columns, 1]` image.

    The general path: the header is parsed in the graph, as in serving.
    """
    return wav_bytes_to_image(tf.io.read_file(path), config, source=path)


def read_layouts(records: Sequence, config: FeatureConfig) -> dict:
    """Host-side header facts of every record's file, checked against `config`.

    Returns column lists (`data_offset`, `data_bytes`, `channels`,
    `file_bytes`, `decoder`) for `tf.data`. Raises `WavFormatError` or
    `ValueError` naming the first bad file: unreadable header, a sample rate
    other than `config.sample_rate`, too few channels for `config.channel`,
    or fewer samples than one STFT frame (`config.n_fft`).
    """
    columns = {key: [] for key in ("data_offset", "data_bytes", "channels", "file_bytes", "decoder")}
    for record in records:
        header = read_wav_header(record.path)
        if header.sample_rate != config.sample_rate:
            raise ValueError(
                f"{record.path}: sample rate {header.sample_rate} Hz, but the features expect "
                f"{config.sample_rate} Hz (convert the folder with python -m pump_keras.data.resample "
                f"FOLDER OUT --rate {config.sample_rate}, or set FeatureConfig.sample_rate).")
        if isinstance(config.channel, int) and config.channel >= header.channels:
            raise ValueError(
                f"{record.path}: channel {config.channel} requested but the file has "
                f"{header.channels} channel(s).")
        if header.frames < config.n_fft:
            raise ValueError(
                f"{record.path}: clip of {header.frames} samples is shorter than one STFT frame "
                f"(n_fft {config.n_fft}).")
        columns["data_offset"].append(header.data_offset)
        columns["data_bytes"].append(header.data_bytes - header.data_bytes % header.block_align)
        columns["channels"].append(header.channels)
        columns["file_bytes"].append(header.file_bytes)
        columns["decoder"].append(decoder_name(header))
    return columns


def _image_from_known_layout(path, offset, size, channels, file_bytes, decoder_index,
                             decoders: Sequence[str], config: FeatureConfig) -> tf.Tensor:
    """The image of a file whose header was read on the host (no parsing in the graph)."""
    contents = tf.io.read_file(path)
    unchanged = tf.debugging.Assert(
        tf.equal(tf.cast(tf.strings.length(contents), tf.int64), file_bytes),
        [path, "changed on disk since its header was read; run again to re-read it"],
    )
    with tf.control_dependencies([unchanged]):
        def decode(name):
            return decode_samples(contents, offset, size, channels, name, config.channel, path)

        if len(decoders) == 1:
            audio = decode(decoders[0])
        else:
            audio = tf.switch_case(
                decoder_index, [functools.partial(decode, name) for name in decoders])
    return waveform_to_image(audio[:, 0], config, path)


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


def cached_images(images: tf.data.Dataset, path: str, count: int, shape) -> np.ndarray:
    """The `[count, rows, columns, 1]` images of `(image, label)` pairs, memory-mapped from `path`.

    Written once (to a temporary file, then renamed, so a killed run never
    leaves a partial cache under the final name) and reused afterwards.
    """
    if not os.path.exists(path):
        partial = f"{path}.{os.getpid()}.partial"
        array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=(count, *shape, 1))
        row = 0
        for batch, _ in images.batch(64):
            array[row:row + len(batch)] = batch.numpy()
            row += len(batch)
        if row != count:
            raise ValueError(f"{path}: expected {count} images, the pipeline gave {row}.")
        array.flush()
        del array
        os.replace(partial, path)
    return np.load(path, mmap_mode="r")


def shuffled_batches(images: np.ndarray, labels: Sequence[float], batch_size: int,
                     seed: int) -> tf.data.Dataset:
    """Batches of `images` (indexable `[N, H, W, 1]`) and `labels` in a full permutation, new every pass."""
    count = len(labels)
    label_table = tf.constant(labels, tf.float32)
    shape = (None,) + tuple(images.shape[1:])

    def gather(indices):
        batch = tf.numpy_function(lambda i: np.asarray(images[np.asarray(i)]), [indices], tf.float32,
                                  stateful=False)
        batch.set_shape(shape)
        return batch, tf.gather(label_table, indices)

    order = tf.data.Dataset.range(count).shuffle(count, seed=seed, reshuffle_each_iteration=True)
    return order.batch(batch_size).map(gather)


def make_dataset(
    records: Sequence,
    feature_config: FeatureConfig,
    data_config: DataConfig,
    training: bool = False,
    cache_dir: Optional[str] = None,
    name: str = "data",
) -> tf.data.Dataset:
    """A batched dataset of `(images [B, H, W, C] float32, labels [B] float32)`.

    Args:
        records: objects with `path` and `label` (e.g. `ClipRecord`s of one split).
        feature_config: how audio becomes an image.
        data_config: batch size, shuffle buffer and seed, parallelism, caching.
        training: shuffle the whole list (seeded, reshuffled every pass);
            order is kept otherwise, so predictions line up with `records`.
        cache_dir: where to cache images when `data_config.cache` is on.
        name: cache file name prefix (e.g. the split).
    """
    if not records:
        raise ValueError(f"No records for the {name!r} dataset.")
    paths = [str(r.path) for r in records]
    labels = [float(r.label) for r in records]
    layouts = read_layouts(records, feature_config)
    decoders = sorted(set(layouts["decoder"]))
    decoder_index = [decoders.index(name) for name in layouts["decoder"]]
    if data_config.num_parallel_calls:
        parallel = data_config.num_parallel_calls
    else:
        parallel = tf.data.AUTOTUNE if data_config.autotune else os.cpu_count() or 1

    caching = data_config.cache and cache_dir is not None
    as_int64 = functools.partial(tf.constant, dtype=tf.int64)
    dataset = tf.data.Dataset.from_tensor_slices((
        paths, labels, as_int64(layouts["data_offset"]), as_int64(layouts["data_bytes"]),
        as_int64(layouts["channels"]), as_int64(layouts["file_bytes"]),
        tf.constant(decoder_index, tf.int32),
    ))
    if training and not caching:
        # Without a cache, shuffle the (cheap) file names fully instead of images.
        dataset = dataset.shuffle(
            len(paths), seed=data_config.shuffle_seed, reshuffle_each_iteration=True)

    def to_image(path, label, offset, size, channels, file_bytes, decoder):
        image = _image_from_known_layout(
            path, offset, size, channels, file_bytes, decoder, decoders, feature_config)
        return image, label

    dataset = dataset.map(to_image, num_parallel_calls=parallel, deterministic=True)
    if caching:
        os.makedirs(cache_dir, exist_ok=True)
        prefix = cache_path_for(cache_dir, name, paths, feature_config)
    if training and caching:
        images = cached_images(dataset, prefix + ".images.npy", len(paths), feature_config.image_shape)
        dataset = shuffled_batches(images, labels, data_config.batch_size, data_config.shuffle_seed)
    else:
        if caching:
            _remove_stale_lockfiles(prefix)
            dataset = dataset.cache(prefix)
        dataset = dataset.batch(data_config.batch_size)
    dataset = dataset.map(
        lambda images, batch_labels: (to_backbone_channels(images, feature_config), batch_labels),
        num_parallel_calls=parallel,
        deterministic=True,
    )
    options = tf.data.Options()
    # Each parallel map call on one thread: on few cores, ops that fan out
    # over the intra-op pool only contend with the other map calls.
    options.threading.max_intra_op_parallelism = 1
    # On two cores the autotuner's own work made first passes slower half of
    # the time (benchmarks/pipeline.py measures it); fixed settings are steady.
    options.autotune.enabled = data_config.autotune
    prefetch = tf.data.AUTOTUNE if data_config.autotune else data_config.prefetch_batches
    return dataset.prefetch(prefetch).with_options(options)
