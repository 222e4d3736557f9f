"""`python -m pump_keras.data.synthetic`: the command line of `pump_keras.data.synthetic`."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Optional, Sequence

from pump_keras.config import SyntheticConfig
from pump_keras.config.schema import SYNTHETIC_LAYOUTS
from pump_keras.data.synthetic import generate_dataset


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser; defaults come from `SyntheticConfig`."""
    defaults = SyntheticConfig()
    parser = argparse.ArgumentParser(
        prog="python -m pump_keras.data.synthetic",
        description="Write synthetic pump recordings in the MIMII layout (or a DCASE one, --layout).",
    )
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--clips-per-class", type=int, default=defaults.clips_per_class,
                        help=f"clips per machine id and class (default {defaults.clips_per_class})")
    parser.add_argument("--seconds", type=float, default=defaults.seconds,
                        help=f"clip length (default {defaults.seconds})")
    parser.add_argument("--abnormal-clips-per-id", type=int, default=None,
                        help="abnormal clips per machine id (default: --clips-per-class)")
    parser.add_argument("--snr-db", type=float, nargs="+", default=list(defaults.snr_db),
                        help="SNR folders to write (default %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help=f"random seed (default {defaults.seed})")
    parser.add_argument("--fault-boost-db", type=float, default=defaults.fault_boost_db,
                        help="make every fault this many dB stronger (default %(default)s)")
    parser.add_argument("--machine-ids", nargs="+", default=list(defaults.machine_ids),
                        help=f"machine ids (default {' '.join(defaults.machine_ids)})")
    parser.add_argument("--layout", choices=SYNTHETIC_LAYOUTS, default=defaults.layout,
                        help="mimii (SNR folders), dcase2020 (train/ and test/) or dcase2021 (sections, a "
                             "source and a speed-shifted target domain); the DCASE layouts are mono, one SNR")
    parser.add_argument("--target-speed-shift", type=float, default=defaults.target_speed_shift,
                        help="dcase2021: the target domain's shaft runs this fraction faster (default %(default)s)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point: writes the tree and prints one summary line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = SyntheticConfig(
            clips_per_class=args.clips_per_class, seconds=args.seconds,
            abnormal_clips_per_id=args.abnormal_clips_per_id,
            snr_db=tuple(args.snr_db), seed=args.seed, machine_ids=tuple(args.machine_ids),
            fault_boost_db=args.fault_boost_db, layout=args.layout, target_speed_shift=args.target_speed_shift,
        )
        start = time.perf_counter()
        paths = generate_dataset(args.out, config, log=print)
    except ValueError as error:
        parser.error(str(error))
    elapsed = time.perf_counter() - start
    print(f"wrote {len(paths)} files to {args.out} in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
