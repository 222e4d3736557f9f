"""`python -m pump_keras.export`: the command line of `pump_keras.deploy.export`."""

from __future__ import annotations

import argparse
import sys

from pump_keras.cli.common import command
from pump_keras.deploy import export as _library
from pump_keras.deploy.export import export_run


@command
def main(argv=None) -> int:
    """Runs the CLI; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m pump_keras.export", description=_library.__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--out", required=True, help="the model folder, e.g. saved_models/pump_anomaly")
    parser.add_argument("--version", type=int, help="version number (default: the next free one)")
    parser.add_argument("--machine", help="normal-only runs: the machine the model serves, e.g. pump/id_00 "
                                          "(default: the run's export.machine, or its only machine)")
    args = parser.parse_args(argv)
    path = export_run(args.run_dir, args.out, args.version, log=lambda line: print(line, file=sys.stderr, flush=True),
                      machine=args.machine)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
