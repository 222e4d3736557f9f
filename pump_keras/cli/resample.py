"""`python -m pump_keras.data.resample`: the command line of `pump_keras.data.resample`."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from pump_keras.cli.common import command
from pump_keras.config import FeatureConfig
from pump_keras.data import resample as _library
from pump_keras.data.resample import resample_tree


@command
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the CLI; returns the exit status (0 all written, 1 some failed, 2 usage error)."""
    parser = argparse.ArgumentParser(prog="python -m pump_keras.data.resample",
                                     description=_library.__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_library.__doc__)
    parser.add_argument("source", help="a folder of recordings (searched at any depth) or one WAV file")
    parser.add_argument("out", help="the folder that receives <name of source>/...")
    parser.add_argument("--rate", type=int, default=FeatureConfig().sample_rate,
                        help="the sample rate to write, in Hz (default: FeatureConfig.sample_rate)")
    args = parser.parse_args(argv)

    def report(path, reason):
        print(f"error: {path}: {reason}" if not reason.startswith(path) else f"error: {reason}", file=sys.stderr)

    outcomes = resample_tree(args.source, args.out, args.rate, report)
    destination = os.path.join(os.path.abspath(args.out), os.path.basename(os.path.abspath(args.source)))
    print(f"{destination}: {len(outcomes['resampled'])} resampled to {args.rate} Hz, "
          f"{len(outcomes['copied'])} copied (already {args.rate} Hz), {len(outcomes['kept'])} kept "
          f"(written before), {len(outcomes['failed'])} failed.")
    return 1 if outcomes["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
