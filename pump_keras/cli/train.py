"""Train, evaluate and export an anomaly detector: `python -m pump_keras.train`.

    python -m pump_keras.train                       # quick preset, synthetic data
    python -m pump_keras.train --preset paper --data-dir /data/mimii --run-dir runs/paper
    python -m pump_keras.train --config my.yaml --set train.epochs=50 --set data.snr_db=[-6]

Settings come from a preset, then a JSON/YAML file (`--config`), then the
flags and `--set section.field=value` overrides, in that order; the
resolved config is written to the run directory (`runs/PRESET` unless
`--run-dir`, `--set run_dir=...` or the `--config` file names one).
Rerunning the same command resumes an interrupted run from its last
completed epoch; a run directory holding another config is refused.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from pump_keras.cli.common import command
from pump_keras.config import load_config, read_config_file, replace
from pump_keras.deploy.export import (
    check_export_target, check_exportable, export_run as export_saved_run, trains_on_synthetic)
from pump_keras.evaluation.metrics import HEADLINE_METRICS
from pump_keras.run_dir import RunDirectory
from pump_keras.training.loop import train


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    parser = argparse.ArgumentParser(prog="python -m pump_keras.train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--preset", default="quick", help="paper, paper_pretrain or quick (default: quick)")
    parser.add_argument("--config", help="JSON or YAML file of settings over the preset")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override one setting (repeatable), e.g. train.epochs=3")
    parser.add_argument("--data-dir", help="MIMII or DCASE tree (default: generate synthetic recordings)")
    parser.add_argument("--run-dir", help="where the run's files go (default: runs/PRESET)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--strategy", choices=["auto", "mirrored", "multiworker"])
    parser.add_argument("--mixed-precision", choices=["bf16", "fp16"])
    parser.add_argument("--jit-compile", action="store_true", default=None)
    parser.add_argument("--init-from", help="run directory, .keras file, or Keras EfficientNetV2S weights file")
    parser.add_argument("--no-export", action="store_true", help="skip the SavedModel export")
    parser.add_argument("--verbose", type=int, choices=[0, 1, 2])
    return parser


FLAG_SETTINGS = {
    "data_dir": "data.data_dir", "run_dir": "run_dir", "epochs": "train.epochs",
    "batch_size": "data.batch_size", "seed": "train.seed", "strategy": "train.strategy",
    "mixed_precision": "train.mixed_precision", "jit_compile": "train.jit_compile",
    "init_from": "train.init_from", "verbose": "train.verbose",
}


def resolve_config(args):
    """The `RunConfig` of parsed arguments."""
    overrides = list(args.set)
    for flag, key in FLAG_SETTINGS.items():
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")
    if args.no_export:
        overrides.append("export.enabled=false")
    config = load_config(args.preset, args.config, overrides)
    if not _run_dir_given(args):
        config = replace(config, run_dir=os.path.join("runs", config.preset))
    return config


def _run_dir_given(args) -> bool:
    """Whether `--run-dir`, a `--set run_dir=...` or the `--config` file names the run directory."""
    if args.run_dir is not None or any(o.strip().startswith("run_dir=") for o in args.set):
        return True
    return bool(args.config) and "run_dir" in read_config_file(args.config)


@command
def main(argv=None) -> int:
    """Runs the CLI; returns the exit status (2, with an `error:` line, for input it cannot use)."""
    args = build_parser().parse_args(argv)
    config = resolve_config(args)
    if config.data.data_dir is None:
        print(f"pump_keras.train: preset {config.preset!r} on freshly generated SYNTHETIC pump recordings "
              "(a demonstration, not real data) -> " + config.run_dir, flush=True)
    else:
        print(f"pump_keras.train: preset {config.preset!r} on {config.data.data_dir} -> {config.run_dir}", flush=True)

    check_export(config)
    started = time.perf_counter()
    result = train(config)
    test = result.metrics.get("test", {})
    print("test: " + "  ".join(f"{k} {test[k]:.3f}" for k in HEADLINE_METRICS if k in test))
    verdict = result.metrics.get("verdict")
    if verdict:
        print(f"network AUC {verdict['model_auc']:.3f}  |  best baseline (log-mel logistic regression) "
              f"AUC {verdict['baseline_auc']:.3f}")
        print(verdict["text"])
    exported = None
    if config.export.enabled and not _exported(config):
        exported = export_run(config, result)
    print(f"Done in {time.perf_counter() - started:.0f} s. Run directory {result.run_dir}:")
    for name, path in result.files.items():
        print(f"  {name:14s} {path}")
    if exported:
        print(f"  {'SavedModel':14s} {exported}")
    return 0


def _exported(config) -> bool:
    """Whether this run directory has already been exported (recorded in `export.json`)."""
    return os.path.exists(os.path.join(config.run_dir, RunDirectory.EXPORT))


def model_dir(config) -> str:
    """The folder of the run's exported versions, `export.out_dir/name`."""
    return os.path.join(config.export.out_dir, config.export.name)


def check_export(config) -> None:
    """Refuses, before training, an export the run could not make at its end (see `check_export_target`)."""
    if not config.export.enabled or _exported(config):
        return
    check_exportable(config)
    check_export_target(model_dir(config), config.export.version, trains_on_synthetic(config.data))


def export_run(config, result) -> str:
    """Exports the run's best model to `export.out_dir/name/version/`; records it in the run directory."""
    path = export_saved_run(config.run_dir, model_dir(config), config.export.version,
                            log=lambda line: print(line, flush=True))
    RunDirectory(config.run_dir).write_json(RunDirectory.EXPORT, {"saved_model": os.path.abspath(path)})
    return path


if __name__ == "__main__":
    sys.exit(main())
