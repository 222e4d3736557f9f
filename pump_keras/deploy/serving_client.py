"""Score WAV files on a running TF Serving REST endpoint: `python -m pump_keras.serving_client`.

    python -m pump_keras.serving_client recordings/ clip.wav \\
        --url http://localhost:8501/v1/models/pump_anomaly:predict [--signature serving_default]

Each request carries `--batch-size` whole files in TF Serving's row format:
a signature with one named input takes instances as objects keyed by the
input name, and binary strings travel as `{"b64": "..."}`:

    {"signature_name": "serving_default",
     "instances": [{"wav_bytes": {"b64": "UklGR..."}}, ...]}

The answer's `predictions` hold one `{anomaly_score, is_anomaly, logit}`
object per file, in order; each is checked (types, a finite score in
[0, 1] that is the sigmoid of the logit) before it is shown. A batch the
server refuses (HTTP 400, e.g. one file that is not a WAV) is sent again
file by file, so the good files are scored and the bad one is named with
the server's reason. With `--model-info EXPORT` (the served version folder
or its `assets.extra/pump_keras.json`; TF Serving does not pass it on) it
warns, as `pump_keras.deploy.predict` does, about a model trained on synthetic
recordings and about clips whose length differs from the training clips'.
Exit status: 0 when every file was scored, 1 when some
failed or the server could not be used, 2 for a usage error. The model does all the decoding and
preprocessing (see `pump_keras.deploy.export`), so this module needs only the
standard library (and NumPy, for `--model-info`): it runs where TensorFlow
is not installed.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import socket
import urllib.error
import urllib.request
from typing import Iterable, List, Sequence

from pump_keras.audio.wavfile import special_file_kind
from pump_keras.errors import ServingError
from pump_keras.files import wav_files_under

INPUT_NAME = "wav_bytes"
OUTPUT_NAMES = ("anomaly_score", "is_anomaly", "logit")
BAD_REQUEST = 400
# float32 sigmoid in the model against float64 here: they agree far closer than this.
SCORE_LOGIT_TOLERANCE = 1e-4
_ERROR_TEXT_LIMIT = 2000



def collect_wav_files(paths: Iterable) -> List[str]:
    """`paths` with every directory replaced by the `.wav` files under it (any depth, sorted)."""
    found = []
    for path in map(os.fspath, paths):
        if os.path.isdir(path):
            found.extend(wav_files_under(path, include_hidden=True))
        else:
            found.append(path)
    return found


def read_files(paths: Sequence[str]):
    """`(outcomes, readable)` of a batch of paths: `readable` holds `(index, bytes)` of each file
    read, `outcomes[index]` the reason for each one that was not (else None).

    A name that is not a regular file (a named pipe would block forever) is
    never opened.
    """
    outcomes, readable = [None] * len(paths), []
    for i, path in enumerate(paths):
        kind = special_file_kind(path)
        if kind is not None:
            outcomes[i] = f"{kind}, not a regular file: skipped without opening it"
            continue
        try:
            with open(path, "rb") as handle:
                readable.append((i, handle.read()))
        except OSError as error:
            outcomes[i] = f"cannot read the file: {error.strerror or error}"
    return outcomes, readable


def readable_reason(text: str) -> str:
    """The reason in a TensorFlow graph error's text (as TF Serving returns it), without node and stack noise."""
    match = re.search(r"assertion failed: \[(.*?)\]\s*(?:\n|$)", text, re.DOTALL)
    if match:
        text = match.group(1)
    else:
        lines = [line.strip() for line in text.splitlines()
                 if line.strip() and not line.startswith(("Graph execution error", "Detected at node",
                                                          "<stack traces", "\t"))]
        text = lines[-1] if lines else text
    text = text.replace("\\'", "'").replace('\\"', '"')
    return text[len("WAV bytes: "):] if text.startswith("WAV bytes: ") else text


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
    """POSTs `body` to `url` and returns the decoded JSON answer.

    Raises `RequestRefused` when the server answers HTTP 400 (bad input),
    `ServingError` for any other failure.
    """
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = response.read()
    except urllib.error.HTTPError as error:
        text = _server_error_text(error.read())
        message = f"{url} answered HTTP {error.code} {error.reason}: {text}"
        if error.code == BAD_REQUEST:
            raise RequestRefused(message, text) from error
        raise ServingError(message) from error
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


class RequestRefused(ServingError):
    """The server refused a request as bad input (HTTP 400, TF Serving's answer to a bad file).

    Attributes:
        reason: the server's error text.
    """

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def _number(prediction: dict, name: str) -> float:
    value = prediction.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} is {value!r}, not a number")
    if not math.isfinite(value):
        raise ValueError(f"{name} is {value}, not a finite number")
    return float(value)


def _sigmoid(logit: float) -> float:
    if logit >= 0:
        return 1.0 / (1.0 + math.exp(-logit))
    return math.exp(logit) / (1.0 + math.exp(logit))


def validate_prediction(prediction) -> dict:
    """`anomaly_score`, `is_anomaly` and `logit` of one entry of `predictions`; `ValueError` saying what is wrong.

    The score is a finite probability in [0, 1], `is_anomaly` a JSON
    boolean (not the string "false", not 0 or 1), the logit a finite number
    whose sigmoid is the score (the export computes the score that way).
    """
    if not isinstance(prediction, dict):
        raise ValueError(f"expected an object with {', '.join(OUTPUT_NAMES)}, got {prediction!r}"[:200])
    missing = [name for name in OUTPUT_NAMES if name not in prediction]
    if missing:
        raise ValueError(f"it lacks {', '.join(missing)} (outputs: {', '.join(map(str, prediction)) or 'none'}); "
                         "is this a pump_keras model?")
    score, logit = _number(prediction, "anomaly_score"), _number(prediction, "logit")
    if not 0.0 <= score <= 1.0:
        raise ValueError(f"anomaly_score {score} lies outside [0, 1]")
    if not isinstance(prediction["is_anomaly"], bool):
        raise ValueError(f"is_anomaly is {prediction['is_anomaly']!r}, not true or false")
    if abs(_sigmoid(logit) - score) > SCORE_LOGIT_TOLERANCE:
        raise ValueError(f"anomaly_score {score} is not the sigmoid of logit {logit}")
    return {"anomaly_score": score, "is_anomaly": prediction["is_anomaly"], "logit": logit}


def _score_contents(url: str, contents: List[bytes], signature: str, timeout: float) -> List[object]:
    """Per file, its validated outputs or the reason it failed; a refused batch is retried file by file."""
    try:
        answer = post_predict(url, request_body(contents, signature), timeout)
    except RequestRefused as error:
        if len(contents) == 1:
            return [f"the server refused it: {readable_reason(error.reason)}"]
        return [outcome for data in contents for outcome in _score_contents(url, [data], signature, timeout)]
    predictions = answer.get("predictions") if isinstance(answer, dict) else None
    if not isinstance(predictions, list) or len(predictions) != len(contents):
        got = "no 'predictions' list" if not isinstance(predictions, list) else f"{len(predictions)} predictions"
        raise ServingError(f"{url} sent {got} for {len(contents)} files: {str(answer)[:_ERROR_TEXT_LIMIT]}")
    outcomes = []
    for prediction in predictions:
        try:
            outcomes.append(validate_prediction(prediction))
        except ValueError as error:
            outcomes.append(f"the server's answer is not a valid score: {error}")
    return outcomes


def _row(path: str, outcome) -> dict:
    if isinstance(outcome, str):
        return {"path": path, "anomaly_score": None, "is_anomaly": None, "logit": None, "error": outcome}
    return {"path": path, **outcome, "error": None}


def score_files(url: str, paths: Sequence, signature: str = "serving_default",
                batch_size: int = 8, timeout: float = 60.0) -> List[dict]:
    """Scores WAV files on the endpoint `url`, `batch_size` files per request.

    Returns one dict per file, in order: `path`, `anomaly_score`,
    `is_anomaly`, `logit` (None for a failed file) and `error` (why the file
    failed, else None). A file that cannot be read, that the server refuses
    (a refused batch is sent again file by file, so the good files are
    scored) or whose answer is not a valid score is a failed file. Raises
    `ServingError` when the server cannot be reached or fails otherwise (the
    message names the batch's files and gives the server's error text).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    paths = [os.fspath(path) for path in paths]
    results = []
    for start in range(0, len(paths), batch_size):
        batch = paths[start:start + batch_size]
        outcomes, readable = read_files(batch)
        if readable:
            try:
                scored = _score_contents(url, [data for _, data in readable], signature, timeout)
            except ServingError as error:
                names = ", ".join(batch) if len(batch) <= 3 else f"{batch[0]} ... {batch[-1]} ({len(batch)} files)"
                raise ServingError(f"{error} [batch: {names}]") from error
            for (i, _), outcome in zip(readable, scored):
                outcomes[i] = outcome
        results.extend(_row(path, outcome) for path, outcome in zip(batch, outcomes))
    return results


def format_table(results: Sequence[dict]) -> str:
    """The results as an aligned text table: path, anomaly_score, is_anomaly, error."""
    rows = [("path", "anomaly_score", "is_anomaly", "error")]
    rows += [(r["path"], "" if r["anomaly_score"] is None else f"{r['anomaly_score']:.6f}",
              "" if r["is_anomaly"] is None else str(r["is_anomaly"]), r["error"] or "") for r in results]
    width = max(len(row[0]) for row in rows)
    return "\n".join(f"{path:<{width}}  {score:>13}  {flag:<10}  {error}".rstrip()
                     for path, score, flag, error in rows)
