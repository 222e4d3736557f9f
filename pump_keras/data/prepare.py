"""From a data directory to split datasets: index -> check -> split -> manifest -> tf.data."""

from __future__ import annotations

import os
from typing import Dict, List, Optional

import tensorflow as tf

from pump_keras.config import DataConfig, FeatureConfig
from pump_keras.data.index import ClipRecord, check_audio_headers, index_dataset
from pump_keras.data.pipeline import make_dataset
from pump_keras.data.split import SPLITS, read_manifest, split_normal_only, split_records, write_manifest
from pump_keras.run_dir import RunDirectory


def prepare_splits(
    data_config: DataConfig,
    feature_config: FeatureConfig,
    run_dir: Optional[str] = None,
) -> Dict[str, List[ClipRecord]]:
    """The train/val/test records of `data_config.data_dir`.

    With a `run_dir` holding a manifest, the split is read back from it
    exactly; with `data_config.split_file`, that manifest is used as it is;
    otherwise the tree is indexed, every header is checked (one
    sample rate, the one the features expect), the records are split by
    `data_config.protocol` (`split_records`, or `split_normal_only`), and
    the manifest is written to `run_dir/split.csv`.
    """
    manifest = os.path.join(run_dir, RunDirectory.MANIFEST) if run_dir else None
    if manifest and os.path.exists(manifest):
        return read_manifest(manifest)
    if data_config.split_file is not None:
        splits = read_manifest(data_config.split_file)
        check_audio_headers([r for name in SPLITS for r in splits[name]],
                            sample_rate=feature_config.sample_rate)
        if manifest:
            write_manifest(manifest, splits)
        return splits
    if data_config.data_dir is None:
        raise ValueError("DataConfig.data_dir is not set: point it at a MIMII or DCASE tree.")
    records = index_dataset(
        data_config.data_dir, snr_db=data_config.snr_db, machine_ids=data_config.machine_ids,
        folder_snr_db=data_config.folder_snr_db)
    check_audio_headers(records, sample_rate=feature_config.sample_rate, root=data_config.data_dir)
    if data_config.protocol == "normal_only":
        splits = split_normal_only(records, ratios=data_config.split_ratios, seed=data_config.split_seed)
    else:
        splits = split_records(records, ratios=data_config.split_ratios, seed=data_config.split_seed)
    if manifest:
        write_manifest(manifest, splits)
    return splits


def make_split_datasets(
    splits: Dict[str, List[ClipRecord]],
    data_config: DataConfig,
    feature_config: FeatureConfig,
    run_dir: Optional[str] = None,
) -> Dict[str, tf.data.Dataset]:
    """One batched dataset per non-empty split; only "train" is shuffled.

    Images are cached under `run_dir/cache` when `data_config.cache` is on.
    """
    cache_dir = os.path.join(run_dir, RunDirectory.CACHE) if run_dir else None
    return {
        name: make_dataset(
            splits[name], feature_config, data_config,
            training=name == "train", cache_dir=cache_dir, name=name,
        )
        for name in SPLITS
        if splits.get(name)
    }
