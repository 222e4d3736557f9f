"""`python -m pump_keras.ablate`: the command line of `pump_keras.training.ablation`."""

from __future__ import annotations

import argparse
import os
import sys

from pump_keras.cli.common import command
from pump_keras.training import ablation as _library
from pump_keras.training.ablation import GRIDS, TABLES, parse_axis, run_grid


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    parser = argparse.ArgumentParser(prog="python -m pump_keras.ablate", description=_library.__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_library.__doc__)
    parser.add_argument("--grid", choices=sorted(GRIDS), help="the paper's tables (default: tables)")
    parser.add_argument("--axis", action="append", default=[], metavar="SECTION.FIELD=V1,V2",
                        help="a custom table: the product of these axes (repeatable)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="runs/ablate")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--config")
    parser.add_argument("--data-dir")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    return parser


@command
def main(argv=None) -> int:
    """Runs the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.axis:
        if args.grid:
            raise ValueError("give either --grid or --axis, not both")
        tables = {"custom": [parse_axis(text) for text in args.axis]}
    else:
        tables = {name: TABLES[name] for name in GRIDS[args.grid or "tables"]}
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    overrides = list(args.set) + ([f"data.data_dir={args.data_dir}"] if args.data_dir else [])
    run_grid(tables, args.seeds, args.out, args.preset, args.config, overrides)
    print(open(os.path.join(args.out, "results.md"), encoding="utf-8").read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
