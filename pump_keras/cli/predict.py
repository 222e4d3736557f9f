"""`python -m pump_keras.predict`: the command line of `pump_keras.deploy.predict`."""

from __future__ import annotations

import argparse
import sys
import warnings

from pump_keras.cli.common import command
from pump_keras.deploy import predict as _library
from pump_keras.deploy.model_info import clip_length_warnings, synthetic_warning
from pump_keras.deploy.predict import (
    OUTPUT_FORMATS, PROGRESS_MIN_FILES, format_table, load_scorer, score_wav_files, write_results)
from pump_keras.deploy.serving_client import collect_wav_files


def _stderr_progress(done: int, total: int) -> None:
    print(f"\rscoring: {done}/{total} files", end="\n" if done == total else "", file=sys.stderr, flush=True)


@command
def main(argv=None) -> int:
    """Runs the CLI; returns the exit status (0 all scored, 1 some failed, 2 usage error)."""
    parser = argparse.ArgumentParser(prog="python -m pump_keras.predict", description=_library.__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", metavar="FILES_OR_DIRS",
                        help="WAV files, or folders searched for .wav files at any depth")
    parser.add_argument("--model", required=True,
                        help="a SavedModel version folder (or the folder of versions) or a .keras file")
    parser.add_argument("--run-dir", help="for a .keras model: the run holding config.json and the threshold")
    parser.add_argument("--threshold", type=float, help="probability threshold for is_anomaly")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", help="results file, .csv or .json")
    args = parser.parse_args(argv)

    if args.out and not args.out.lower().endswith(OUTPUT_FORMATS):
        print(f"error: --out must end in {' or '.join(OUTPUT_FORMATS)}, got {args.out}", file=sys.stderr)
        return 2
    if args.batch_size < 1:
        print(f"error: --batch-size must be at least 1, got {args.batch_size}", file=sys.stderr)
        return 2
    paths = collect_wav_files(args.paths)
    if not paths:
        print("error: no .wav files found in " + ", ".join(args.paths), file=sys.stderr)
        return 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        scorer = load_scorer(args.model, args.run_dir, args.threshold)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    for warning in filter(None, [synthetic_warning(scorer.info, scorer.model_path),
                                 *clip_length_warnings(paths, scorer.info)]):
        print(f"warning: {warning}", file=sys.stderr)

    progress = _stderr_progress if len(paths) > PROGRESS_MIN_FILES else None
    results = score_wav_files(scorer, paths, args.batch_size, progress)
    print(format_table(results))
    failed = sum(result["error"] is not None for result in results)
    anomalous = sum(bool(result["is_anomaly"]) for result in results)
    threshold = "unknown" if scorer.threshold is None else f"{scorer.threshold:.4g}"
    print(f"{len(results)} files: {anomalous} anomalous, {failed} failed "
          f"(threshold {threshold}: {scorer.threshold_source})")
    if args.out:
        write_results(args.out, results, scorer)
        print(f"wrote {args.out}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
