"""Evaluate a training run: `python -m pump_keras.evaluate --run-dir RUN`.

    python -m pump_keras.evaluate --run-dir runs/quick
    python -m pump_keras.evaluate --run-dir runs/pretrain --data-dir /data/mimii/-6_dB_pump --split test
    python -m pump_keras.evaluate --run-dir runs/paper --data-dir /data/site_b --split all --snr-db -6
    python -m pump_keras.evaluate --run-dir runs/paper --criterion fpr --target-fpr 0.05

Scores the run's best model on a split (its own test split by default; with
`--data-dir`, that split of another folder, split with the run's seed and
ratios, or `--split all`: every clip of it), at every SNR unless `--snr-db`
chooses (the run's own SNR and machine-id filters are not applied to
another folder; recordings the run trained on are refused),
chooses the decision threshold on the run's validation split and saves it
(`RUN/threshold.json`, used by export), and writes `RUN/report/`: the
metrics with bootstrap intervals overall, per machine and per SNR, the
majority-class and log-mel logistic-regression baselines on the same clips,
figures, and `report.md`.
"""

from __future__ import annotations

import argparse
import sys

from pump_keras.cli.common import command
from pump_keras.config import THRESHOLD_CRITERIA, replace
from pump_keras.data.split import SPLITS
from pump_keras.evaluation.metrics import HEADLINE_METRICS
from pump_keras.evaluation.report import ALL_CLIPS, evaluate_run
from pump_keras.run_dir import load_run_config


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    parser = argparse.ArgumentParser(prog="python -m pump_keras.evaluate", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--run-dir", required=True, help="a run directory written by pump_keras.train")
    parser.add_argument("--data-dir", help="evaluate on this folder instead (split with the run's seed and ratios, "
                                           "or every clip with --split all)")
    parser.add_argument("--split", default="test", choices=[*SPLITS, ALL_CLIPS],
                        help="the split to score; 'all': every clip of --data-dir, no re-split")
    parser.add_argument("--snr-db", type=float, nargs="+", metavar="DB",
                        help="score only clips at these SNRs (default: every SNR there is)")
    parser.add_argument("--folder-snr-db", type=float, metavar="DB",
                        help="the SNR of --data-dir folders that name none (an unpacked MIMII archive)")
    parser.add_argument("--criterion", choices=THRESHOLD_CRITERIA, help="threshold criterion on val")
    parser.add_argument("--target-fpr", type=float, help="false-alarm rate for --criterion fpr")
    parser.add_argument("--bootstrap", type=int, help="bootstrap resamples for the intervals (0: none)")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--no-baselines", action="store_true")
    return parser


@command
def main(argv=None) -> int:
    """Runs the CLI; returns the exit status (2, with an `error:` line, for input it cannot use)."""
    args = build_parser().parse_args(argv)
    config = load_run_config(args.run_dir).evaluation
    changes = {key: value for key, value in (("threshold_criterion", args.criterion),
                                             ("target_fpr", args.target_fpr),
                                             ("bootstrap", args.bootstrap)) if value is not None}
    config = replace(config, **changes)
    result = evaluate_run(args.run_dir, args.data_dir, args.split, config,
                          plots=not args.no_plots, baselines=not args.no_baselines,
                          snr_db=args.snr_db, folder_snr_db=args.folder_snr_db)
    model = result["model"]
    if result.get("protocol") == "normal_only":
        print(f"test: {result['n_clips']} clips, normal-only run; mean over machines:")
        for name, entry in [("mean", model), *result["per_machine_id"].items()]:
            print(f"  {name:20s}" + "  ".join(f"{k} {entry[k]:.3f}" for k in HEADLINE_METRICS))
        return 0
    print(f"{result['split']}: {result['n_clips']} clips, {100 * result['abnormal_share']:.1f} % abnormal")
    for name, entry in [("model", model), *result.get("baselines", {}).items()]:
        print(f"  {name:20s}" + "  ".join(f"{k} {entry[k]:.3f}" for k in HEADLINE_METRICS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
