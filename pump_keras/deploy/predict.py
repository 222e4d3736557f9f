"""Score WAV files with a trained model: `python -m pump_keras.predict`.

    python -m pump_keras.predict --model saved_models/pump_anomaly/1 recordings/ --out results.csv
    python -m pump_keras.predict --model runs/quick/best.keras --run-dir runs/quick clip.wav

`--model` is an exported SavedModel version folder (or the model folder
above its numbered versions: the highest is used, as TF Serving does) or a
`.keras` file.

* A SavedModel scores the raw file bytes with its `serving_default`
  signature: decoding, feature, image and threshold are baked in
  (`assets.extra/pump_keras.json` records the threshold and features).
* A `.keras` file gets the very same in-graph front end
  (`pump_keras.deploy.export.serving_functions`), so its scores match the exported
  model's. The feature config comes from `RUN/config.json` (`--run-dir`,
  default: the file's own folder); the threshold from `--threshold`, else
  the run's (`RUN/threshold.json`; `RUN/metrics.json` for older runs), else 0.5 with
  a warning.

It warns (on stderr) when the model was trained on synthetic recordings,
and for every clip whose length differs from the training clips' by more
than the export's `clip.length_tolerance` (such a clip is scored whole, as
one clip). Folders are searched for `.wav` files at any depth. A file that
cannot be scored (not a WAV, an unsupported encoding, another sample
rate, a score that is not a number...) is listed with the reason and does
not stop the others. `--out`
writes CSV or JSON (by extension), atomically. Exit status: 0 when every
file was scored, 1 when some failed, 2 for a usage error.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from typing import Callable, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from pump_keras.config import ConfigError, to_dict
from pump_keras.deploy.export import run_metadata, run_threshold, serving_functions
from pump_keras.deploy.model_info import METADATA_NAME
from pump_keras.deploy.serving_client import collect_wav_files, read_files, readable_reason
from pump_keras.errors import PredictError
from pump_keras.files import atomic_write_bytes
from pump_keras.models import load_model
from pump_keras.run_dir import RunDirectory

SIGNATURE = "serving_default"
INPUT_NAME = "wav_bytes"
OUTPUT_FORMATS = (".csv", ".json")
COLUMNS = ("path", "anomaly_score", "is_anomaly", "logit", "error")
PROGRESS_MIN_FILES = 20

Progress = Callable[[int, int], None]



@dataclasses.dataclass
class Scorer:
    """A loaded model: a batch of WAV file contents in, scores out.

    Attributes:
        model_path: the SavedModel version folder or `.keras` file.
        score_batch: `tf.string [batch]` -> `anomaly_score`, `is_anomaly`, `logit`.
        threshold: the probability threshold of `is_anomaly` (None: unknown,
            baked into a SavedModel without pump_keras metadata).
        threshold_source: where the threshold came from.
        features: the feature config as a dict (None when unknown).
        override_threshold: recompute `is_anomaly` from the score with `threshold`.
        info: what the export records about the model (`pump_keras.deploy.model_info`):
            training clip length, provenance; empty when unknown.
    """

    model_path: str
    score_batch: Callable[[tf.Tensor], dict]
    threshold: Optional[float]
    threshold_source: str
    features: Optional[dict]
    override_threshold: bool = False
    info: dict = dataclasses.field(default_factory=dict)

    def score(self, contents: Sequence[bytes]) -> dict:
        """NumPy `anomaly_score`, `is_anomaly`, `logit` of whole WAV files; the graph's errors propagate."""
        outputs = self.score_batch(tf.constant(list(contents), tf.string))
        result = {name: outputs[name].numpy() for name in ("anomaly_score", "is_anomaly", "logit")}
        if self.override_threshold:
            # float32 on both sides, as the graph compares them.
            result["is_anomaly"] = result["anomaly_score"] >= np.float32(self.threshold)
        return result


def _saved_model_dir(path: str) -> Optional[str]:
    """`path` if it holds a SavedModel, else its highest numbered version that does, else None."""
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return path
    versions = sorted((int(name) for name in os.listdir(path) if name.isdigit()), reverse=True)
    for version in versions:
        candidate = os.path.join(path, str(version))
        if os.path.exists(os.path.join(candidate, "saved_model.pb")):
            return candidate
    return None


def _load_saved_model(path: str, threshold: Optional[float]) -> Scorer:
    try:
        loaded = tf.saved_model.load(path)
    except Exception as error:  # TF raises several types for unreadable SavedModels
        raise PredictError(f"cannot load the SavedModel in {path}: {error}") from error
    if SIGNATURE not in loaded.signatures:
        raise PredictError(f"{path} has no {SIGNATURE!r} signature "
                           f"(it has: {', '.join(loaded.signatures) or 'none'}).")
    signature = loaded.signatures[SIGNATURE]
    inputs = list(signature.structured_input_signature[1])
    if inputs != [INPUT_NAME]:
        raise PredictError(f"{path}: {SIGNATURE} takes {inputs}, not [{INPUT_NAME!r}]; "
                           "is this a pump_keras export?")
    metadata_path = os.path.join(path, "assets.extra", METADATA_NAME)
    metadata = {}
    if os.path.exists(metadata_path):
        with open(metadata_path, encoding="utf-8") as handle:
            metadata = json.load(handle)
    if threshold is not None:
        baked = metadata.get("threshold")
        source = "--threshold" + ("" if baked is None else f" (the SavedModel's own is {baked:g})")
        override = True
    else:
        threshold = metadata.get("threshold")
        source = metadata.get("threshold_source", "the SavedModel")
        override = False
    return Scorer(model_path=path, score_batch=lambda wav_bytes: signature(**{INPUT_NAME: wav_bytes}),
                  threshold=threshold, threshold_source=source, features=metadata.get("features"),
                  override_threshold=override, info=metadata)


def _load_keras_model(path: str, run_dir: Optional[str], threshold: Optional[float]) -> Scorer:
    run_dir = run_dir if run_dir is not None else os.path.dirname(os.path.abspath(path))
    config_path = os.path.join(run_dir, RunDirectory.CONFIG)
    if not os.path.exists(config_path):
        raise PredictError(f"{path} needs its feature config: pass --run-dir RUN, the training run "
                           f"whose {RunDirectory.CONFIG} it came from ({config_path} does not exist).")
    try:
        config = RunDirectory(run_dir).read_config()
    except ConfigError as error:
        raise PredictError(f"{config_path}: {error}") from error
    features = config.features
    if threshold is None:
        threshold, source = run_threshold(run_dir)
    else:
        source = "--threshold"
    try:
        model = load_model(path)
    except (OSError, ValueError, TypeError) as error:
        raise PredictError(f"cannot load {path}: {error}") from error
    expected = features.input_shape
    if tuple(model.input_shape[1:]) != expected:
        raise PredictError(f"{path} takes {tuple(model.input_shape[1:])} images but {config_path} "
                           f"makes {expected}: is --run-dir the model's own run?")
    serve = serving_functions(model, features, threshold)[SIGNATURE]
    return Scorer(model_path=path, score_batch=serve, threshold=threshold, threshold_source=source,
                  features=to_dict(features), info=run_metadata(run_dir, config))


def load_scorer(model_path: str, run_dir: Optional[str] = None,
                threshold: Optional[float] = None) -> Scorer:
    """Loads a SavedModel folder or a `.keras` file for scoring; `PredictError` if it cannot be used."""
    model_path = os.fspath(model_path)
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise PredictError(f"the threshold is a probability in [0, 1], got {threshold}.")
    if not os.path.exists(model_path):
        raise PredictError(f"model {model_path} does not exist.")
    if os.path.isdir(model_path):
        if run_dir is not None:
            raise PredictError("--run-dir applies to .keras models; a SavedModel carries its "
                               "own feature config and threshold (override it with --threshold).")
        saved_model = _saved_model_dir(model_path)
        if saved_model is None:
            raise PredictError(f"{model_path} holds no SavedModel (no saved_model.pb in it or in a "
                               "numbered version folder).")
        return _load_saved_model(saved_model, threshold)
    if model_path.endswith(".keras"):
        return _load_keras_model(model_path, run_dir, threshold)
    raise PredictError(f"{model_path} is neither a SavedModel folder nor a .keras file.")


def decoder_message(error: tf.errors.OpError) -> str:
    """The readable reason in a graph error, without TensorFlow's node and stack noise."""
    return readable_reason(error.message)


def non_finite_reason(score: float, logit: float) -> Optional[str]:
    """Why a score cannot be reported (NaN or infinite), else None."""
    if np.isfinite(score) and np.isfinite(logit):
        return None
    return (f"the model's score is not a number (score {score}, logit {logit}): the audio holds NaN or "
            "infinite samples, or the model is broken")


def _score_isolating_failures(scorer: Scorer, contents: List[bytes]) -> List[object]:
    """Per file, a dict of outputs or the reason it failed; a failing batch is rescored file by file.

    A non-finite score is a failure too: it is never reported as a result.
    """
    try:
        outputs = scorer.score(contents)
    except tf.errors.InvalidArgumentError as error:
        if len(contents) == 1:
            return [decoder_message(error)]
        return [result for data in contents for result in _score_isolating_failures(scorer, [data])]
    outcomes = []
    for i in range(len(contents)):
        outcome = {name: values[i] for name, values in outputs.items()}
        reason = non_finite_reason(float(outcome["anomaly_score"]), float(outcome["logit"]))
        outcomes.append(outcome if reason is None else reason)
    return outcomes


def _row(path: str, outcome) -> dict:
    if isinstance(outcome, str):
        return {"path": path, "anomaly_score": None, "is_anomaly": None, "logit": None, "error": outcome}
    return {"path": path, "anomaly_score": float(outcome["anomaly_score"]),
            "is_anomaly": bool(outcome["is_anomaly"]), "logit": float(outcome["logit"]), "error": None}


def score_wav_files(scorer: Scorer, paths: Sequence[str], batch_size: int = 32,
                    progress: Optional[Progress] = None) -> List[dict]:
    """One result dict per path, in order (see `predict_files`)."""
    if batch_size < 1:
        raise PredictError(f"batch size must be at least 1, got {batch_size}.")
    results = []
    for start in range(0, len(paths), batch_size):
        batch = paths[start:start + batch_size]
        outcomes, readable = read_files(batch)
        if readable:
            scored = _score_isolating_failures(scorer, [data for _, data in readable])
            for (i, _), outcome in zip(readable, scored):
                outcomes[i] = outcome
        results.extend(_row(path, outcome) for path, outcome in zip(batch, outcomes))
        if progress is not None:
            progress(len(results), len(paths))
    return results


def predict_files(model_path: str, paths: Sequence, run_dir: Optional[str] = None,
                  threshold: Optional[float] = None, batch_size: int = 32,
                  progress: Optional[Progress] = None) -> List[dict]:
    """Scores WAV files (folders: every `.wav` under them) with a SavedModel or `.keras` model.

    Returns one dict per file, in order: `path`, `anomaly_score`,
    `is_anomaly`, `logit` (None for a failed file) and `error` (the reason
    a file failed, else None). Raises `PredictError` for an unusable model,
    run directory or threshold.
    """
    scorer = load_scorer(model_path, run_dir, threshold)
    return score_wav_files(scorer, collect_wav_files(paths), batch_size, progress)


# --- output

def _cell(value, digits: Optional[int] = 6) -> str:
    """A table or CSV cell: empty for None, true/false, floats to `digits` places (None: all)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if digits is None else f"{value:.{digits}f}"
    return str(value)


def format_table(results: Sequence[dict]) -> str:
    """The results as an aligned text table: path, anomaly_score, is_anomaly, error."""
    rows = [("path", "anomaly_score", "is_anomaly", "error")]
    rows += [(r["path"], _cell(r["anomaly_score"]), _cell(r["is_anomaly"]), r["error"] or "")
             for r in results]
    width = max(len(row[0]) for row in rows)
    return "\n".join(f"{path:<{width}}  {score:>13}  {flag:<10}  {error}".rstrip()
                     for path, score, flag, error in rows)


def results_csv(results: Sequence[dict]) -> str:
    """CSV text with the `COLUMNS`, floats in full; failed files have empty scores."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for result in results:
        writer.writerow([_cell(result[column], digits=None) for column in COLUMNS])
    return buffer.getvalue()


def write_results(path: str, results: Sequence[dict], scorer: Scorer) -> None:
    """Writes the results to `path` as CSV or JSON (by extension), atomically."""
    if path.lower().endswith(".json"):
        document = {"model": scorer.model_path, "threshold": scorer.threshold,
                    "threshold_source": scorer.threshold_source, "features": scorer.features,
                    "results": list(results)}
        text = json.dumps(document, indent=2, allow_nan=False) + "\n"  # strict JSON: no bare NaN
    else:
        text = results_csv(results)
    atomic_write_bytes(path, text.encode("utf-8"))
