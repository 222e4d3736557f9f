"""`python -m pump_keras.serving_client`: the command line of `pump_keras.deploy.serving_client`."""

from __future__ import annotations

import argparse
import sys

from pump_keras.cli.common import command
from pump_keras.deploy import serving_client as _library
from pump_keras.deploy.model_info import clip_length_warnings, read_model_info, synthetic_warning
from pump_keras.deploy.serving_client import collect_wav_files, format_table, score_files
from pump_keras.errors import ServingError


@command
def main(argv=None) -> int:
    """Runs the CLI; returns the exit status (0: all scored, 1: some files or the server failed, 2: usage)."""
    parser = argparse.ArgumentParser(prog="python -m pump_keras.serving_client",
                                     description=_library.__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", metavar="FILES_OR_DIRS",
                        help="WAV files, or folders searched for .wav files at any depth")
    parser.add_argument("--url", required=True,
                        help="the predict endpoint, e.g. http://localhost:8501/v1/models/pump_anomaly:predict")
    parser.add_argument("--signature", default="serving_default")
    parser.add_argument("--batch-size", type=int, default=8, help="files per request (default 8)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each answer")
    parser.add_argument("--model-info", metavar="EXPORT",
                        help="the served export (version folder, model folder or its assets.extra/pump_keras.json): "
                             "warn about a synthetic-data model and clips unlike the training clips' length")
    args = parser.parse_args(argv)
    paths = collect_wav_files(args.paths)
    if not paths:
        print("error: no .wav files found in " + ", ".join(args.paths), file=sys.stderr)
        return 2
    if args.batch_size < 1:
        print(f"error: --batch-size must be at least 1, got {args.batch_size}", file=sys.stderr)
        return 2
    if args.model_info:
        info = read_model_info(args.model_info)  # a ModelInfoError is a usage error (`command`)
        for warning in filter(None, [synthetic_warning(info, args.model_info), *clip_length_warnings(paths, info)]):
            print(f"warning: {warning}", file=sys.stderr)
    try:
        results = score_files(args.url, paths, args.signature, args.batch_size, args.timeout)
    except ServingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(format_table(results))
    failed = sum(result["error"] is not None for result in results)
    anomalous = sum(bool(result["is_anomaly"]) for result in results)
    print(f"{len(results)} files: {anomalous} anomalous, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
