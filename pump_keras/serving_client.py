"""Score WAV files on a running TF Serving REST endpoint: `python -m pump_keras.serving_client`.

    python -m pump_keras.serving_client recordings/ clip.wav \\
        --url http://localhost:8501/v1/models/pump_anomaly:predict [--signature serving_default]

Each request carries `--batch-size` whole files in TF Serving's row format:
a signature with one named input takes instances as objects keyed by the
input name, and binary strings travel as `{"b64": "..."}`:

    {"signature_name": "serving_default",
     "instances": [{"wav_bytes": {"b64": "UklGR..."}}, ...]}

The answer's `predictions` hold one `{anomaly_score, is_anomaly, logit}`
object per file, in order. The model does all the decoding and
preprocessing (see `pump_keras.export`), so this module needs only the
standard library: it runs where TensorFlow is not installed.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import sys
import urllib.error
import urllib.request
from typing import Iterable, List, Sequence

INPUT_NAME = "wav_bytes"
_ERROR_TEXT_LIMIT = 2000


class ServingError(RuntimeError):
    """The server could not be reached or refused a request; the message says why."""


def collect_wav_files(paths: Iterable) -> List[str]:
    """`paths` with every directory replaced by the `.wav` files under it (any depth, sorted)."""
    found = []
    for path in map(os.fspath, paths):
        if os.path.isdir(path):
            for folder, subfolders, names in os.walk(path):
                subfolders.sort()
                found.extend(os.path.join(folder, name) for name in sorted(names)
                             if name.lower().endswith(".wav"))
        else:
            found.append(path)
    return found


def request_body(contents: Sequence[bytes], signature: str = "serving_default") -> bytes:
    """The JSON request for a batch of WAV file contents."""
    instances = [{INPUT_NAME: {"b64": base64.b64encode(data).decode("ascii")}} for data in contents]
    return json.dumps({"signature_name": signature, "instances": instances}).encode("utf-8")


def _server_error_text(body: bytes) -> str:
    """TF Serving's `{"error": "..."}` text, else the raw body (shortened)."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and "error" in parsed:
        text = str(parsed["error"])
    return text[:_ERROR_TEXT_LIMIT] or "(empty response)"


def post_predict(url: str, body: bytes, timeout: float = 60.0) -> dict:
    """POSTs `body` to `url` and returns the decoded JSON answer; `ServingError` otherwise."""
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = response.read()
    except urllib.error.HTTPError as error:
        raise ServingError(f"{url} answered HTTP {error.code} {error.reason}: "
                           f"{_server_error_text(error.read())}") from error
    except urllib.error.URLError as error:
        reason = getattr(error.reason, "strerror", None) or error.reason
        raise ServingError(f"cannot reach {url}: {reason} (is TF Serving running there, "
                           "with its REST port open?)") from error
    except (socket.timeout, TimeoutError) as error:
        raise ServingError(f"{url} did not answer within {timeout:g} s.") from error
    except OSError as error:  # e.g. the connection reset mid-answer
        raise ServingError(f"connection to {url} failed: {error}") from error
    try:
        return json.loads(answer)
    except ValueError as error:
        raise ServingError(f"{url} answered with something that is not JSON: "
                           f"{_server_error_text(answer)}") from error


def _row(path: str, prediction) -> dict:
    """One result from one entry of `predictions` (an object, or a bare score)."""
    if not isinstance(prediction, dict):
        prediction = {"anomaly_score": prediction}
    score = prediction.get("anomaly_score")
    if score is None:
        raise ServingError(f"the prediction for {path} has no anomaly_score "
                           f"(outputs: {', '.join(prediction)}); is this a pump_keras model?")
    return {"path": path, "anomaly_score": float(score),
            "is_anomaly": None if prediction.get("is_anomaly") is None else bool(prediction["is_anomaly"]),
            "logit": None if prediction.get("logit") is None else float(prediction["logit"])}


def score_files(url: str, paths: Sequence, signature: str = "serving_default",
                batch_size: int = 8, timeout: float = 60.0) -> List[dict]:
    """Scores WAV files on the endpoint `url`, `batch_size` files per request.

    Returns one dict per file, in order: `path`, `anomaly_score`,
    `is_anomaly`, `logit`. Raises `ServingError` when the server cannot be
    reached or refuses a batch (the message names the batch's files and
    gives the server's error text), and `OSError` for an unreadable file.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    paths = [os.fspath(path) for path in paths]
    results = []
    for start in range(0, len(paths), batch_size):
        batch = paths[start:start + batch_size]
        contents = []
        for path in batch:
            with open(path, "rb") as handle:
                contents.append(handle.read())
        try:
            answer = post_predict(url, request_body(contents, signature), timeout)
        except ServingError as error:
            names = ", ".join(batch) if len(batch) <= 3 else f"{batch[0]} ... {batch[-1]} ({len(batch)} files)"
            raise ServingError(f"{error} [batch: {names}]") from error
        predictions = answer.get("predictions") if isinstance(answer, dict) else None
        if not isinstance(predictions, list) or len(predictions) != len(batch):
            got = "no 'predictions' list" if not isinstance(predictions, list) else f"{len(predictions)} predictions"
            raise ServingError(f"{url} sent {got} for {len(batch)} files: {str(answer)[:_ERROR_TEXT_LIMIT]}")
        results.extend(_row(path, prediction) for path, prediction in zip(batch, predictions))
    return results


def format_table(results: Sequence[dict]) -> str:
    """The results as an aligned text table: path, anomaly_score, is_anomaly."""
    rows = [("path", "anomaly_score", "is_anomaly")]
    rows += [(r["path"], f"{r['anomaly_score']:.6f}", "" if r["is_anomaly"] is None else str(r["is_anomaly"]))
             for r in results]
    width = max(len(row[0]) for row in rows)
    return "\n".join(f"{path:<{width}}  {score:>13}  {flag}" for path, score, flag in rows)


def main(argv=None) -> int:
    """Runs the CLI; returns the exit status (1: the server failed, 2: usage)."""
    parser = argparse.ArgumentParser(prog="python -m pump_keras.serving_client",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", metavar="FILES_OR_DIRS",
                        help="WAV files, or folders searched for .wav files at any depth")
    parser.add_argument("--url", required=True,
                        help="the predict endpoint, e.g. http://localhost:8501/v1/models/pump_anomaly:predict")
    parser.add_argument("--signature", default="serving_default")
    parser.add_argument("--batch-size", type=int, default=8, help="files per request (default 8)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each answer")
    args = parser.parse_args(argv)
    paths = collect_wav_files(args.paths)
    if not paths:
        print("error: no .wav files found in " + ", ".join(args.paths), file=sys.stderr)
        return 2
    if args.batch_size < 1:
        print(f"error: --batch-size must be at least 1, got {args.batch_size}", file=sys.stderr)
        return 2
    try:
        results = score_files(args.url, paths, args.signature, args.batch_size, args.timeout)
    except OSError as error:
        print(f"error: cannot read {error.filename}: {error.strerror}", file=sys.stderr)
        return 2
    except ServingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
