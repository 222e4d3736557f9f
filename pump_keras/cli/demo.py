"""Data demo: synthetic pump recordings -> split -> tf.data images -> a feature picture.

    python -m pump_keras.demo [--out runs/demo] [--data-dir DIR]

Without `--data-dir` it writes the built-in synthetic recordings first. It
indexes and splits them (manifest in the output folder), streams one epoch of
every split through the tf.data pipeline, and draws the paper's four features
for a normal and an abnormal clip of each machine id into `features.png`.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import tensorflow as tf

from pump_keras.audio.features import compute_feature, wav_bytes_to_waveform
from pump_keras.cli.common import command
from pump_keras.config import FEATURE_KINDS, DataConfig, FeatureConfig, SyntheticConfig, replace
from pump_keras.data.index import format_summary
from pump_keras.data.prepare import make_split_datasets, prepare_splits
from pump_keras.data.split import describe_splits
from pump_keras.data.synthetic import generate_dataset
from pump_keras.run_dir import RunDirectory, check_manifest_paths


def plot_features(records, feature_config: FeatureConfig, path: str) -> None:
    """Saves a grid: one row per (machine id, class), one column per feature kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    examples = {}
    for record in records:
        examples.setdefault((record.machine_id, record.label), record)
    rows = sorted(examples)
    figure, axes = plt.subplots(len(rows), len(FEATURE_KINDS), squeeze=False,
                                figsize=(3.2 * len(FEATURE_KINDS), 2.2 * len(rows)))
    for row, key in enumerate(rows):
        record = examples[key]
        waveform = wav_bytes_to_waveform(tf.io.read_file(record.path), feature_config, record.path)
        for column, kind in enumerate(FEATURE_KINDS):
            config = replace(feature_config, kind=kind, db_range=None)
            feature = compute_feature(waveform, config).numpy().T
            low, high = config.resolved_db_range
            axis = axes[row, column]
            axis.imshow(feature, origin="lower", aspect="auto", vmin=low, vmax=high, cmap="magma")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(kind)
            if column == 0:
                axis.set_ylabel(f"id_{key[0]} {'abnormal' if key[1] else 'normal'}")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


@command(tensorflow_errors=True)
def main(argv=None) -> int:
    """Runs the demo; returns the exit status (2, with an `error:` line, for data or a folder it cannot use)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join("runs", "demo"), help="output folder")
    parser.add_argument("--data-dir", help="a MIMII or DCASE tree (default: synthetic)")
    parser.add_argument("--image-size", type=int, default=224)
    run_demo(parser.parse_args(argv))
    return 0


def run_demo(args) -> None:
    """The demo of parsed arguments: data, split, one epoch of images, the feature plot."""
    started = time.perf_counter()
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise NotADirectoryError(f"--out {args.out} is a file, not a folder: choose a folder for the demo's output.")
    os.makedirs(args.out, exist_ok=True)
    data_dir = args.data_dir
    if data_dir is None:
        synthetic = SyntheticConfig()
        data_dir = os.path.join(args.out, "data")
        print(f"Data demo on built-in synthetic pump recordings (written to {data_dir}); "
              "pass --data-dir for real MIMII/DCASE data.")
        generate_dataset(data_dir, synthetic, log=print)
    else:
        print(f"Data demo on {data_dir}.")

    feature_config = FeatureConfig(image_size=args.image_size)
    data_config = DataConfig(data_dir=data_dir, batch_size=16)
    splits = prepare_splits(data_config, feature_config, run_dir=args.out)
    check_manifest_paths(splits, data_dir, os.path.join(args.out, RunDirectory.MANIFEST))
    print(format_summary([r for records in splits.values() for r in records]))
    print(describe_splits(splits))

    datasets = make_split_datasets(splits, data_config, feature_config, run_dir=args.out)
    for name, dataset in datasets.items():
        start = time.perf_counter()
        count, low, high = 0, np.inf, -np.inf
        for images, _ in dataset:
            count += int(images.shape[0])
            low, high = min(low, float(tf.reduce_min(images))), max(high, float(tf.reduce_max(images)))
        seconds = time.perf_counter() - start
        print(f"{name:5s}: {count} images of {tuple(images.shape[1:])}, values in "
              f"[{low:.2f}, {high:.2f}], {count / seconds:.0f} images/s")

    picture = os.path.join(args.out, "features.png")
    plot_features(splits["train"], feature_config, picture)
    print(f"Split manifest: {os.path.join(args.out, RunDirectory.MANIFEST)}")
    print(f"Image cache:    {os.path.join(args.out, RunDirectory.CACHE)}")
    print(f"Feature plot:   {picture}")
    print(f"Done in {time.perf_counter() - started:.1f} s.")


if __name__ == "__main__":
    raise SystemExit(main())
