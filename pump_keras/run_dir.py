"""A run directory: its files, claiming it for a config, and atomic writes of state and models."""

from __future__ import annotations

import csv
import io
import json
import os
from typing import List, Optional

from pump_keras.config import PAPER_MODEL, RunConfig, config_from_json, config_to_json, to_dict
from pump_keras.errors import RunDirError
from pump_keras.files import atomic_save, atomic_write_bytes, atomic_write_json

# Settings that change how a run is shown, evaluated or exported, or how fast it runs, not what it trains.
NON_RESULT_KEYS = {("preset",), ("run_dir",), ("train", "verbose"), ("train", "cpu_allocator"),
                   ("train", "collective_timeout_s"), ("export",), ("evaluation",)}



def _flatten(values: dict, prefix=()) -> dict:
    flat = {}
    for key, value in values.items():
        path = prefix + (key,)
        if isinstance(value, dict) and key != "options":
            flat.update(_flatten(value, path))
        else:
            flat[path] = value
    return flat


def _result_settings(config: RunConfig) -> dict:
    """The config's settings that determine the run's result, flattened.

    Left out: the sections of the models not chosen, and the normal-only
    method's section in a supervised run.
    """
    values = to_dict(config)
    if values["data"]["protocol"] != "normal_only":
        values.pop("normal_only")
    model = values["model"]
    if model["name"] != PAPER_MODEL:
        model.pop(PAPER_MODEL)
    model["options"] = {name: options for name, options in model["options"].items() if name == model["name"]}
    return {key: value for key, value in _flatten(values).items()
            if not any(key[: len(skip)] == skip for skip in NON_RESULT_KEYS)}


def config_differences(old: RunConfig, new: RunConfig) -> List[str]:
    """`section.field: old -> new` for every result-relevant setting that differs."""
    before, after = _result_settings(old), _result_settings(new)
    return [f"{'.'.join(key)}: {before.get(key)!r} -> {after.get(key)!r}"
            for key in sorted(set(before) | set(after)) if before.get(key) != after.get(key)]


def check_manifest_paths(splits: dict, data_dir: Optional[str], manifest: Optional[str]) -> None:
    """Every clip of a split read from `manifest` lies inside `data_dir` (nothing to check without one).

    A manifest edited by hand, or copied from a run of other data, would
    otherwise train on files outside the data folder the config names. The
    paths are compared as written (`..` resolved), not through links: a
    data folder may link to recordings on another disk.
    """
    if data_dir is None:
        return
    root = os.path.abspath(data_dir)
    for name, records in splits.items():
        for record in records:
            path = os.path.abspath(record.path)
            if os.path.commonpath([root, path]) != root:
                raise RunDirError(f"{manifest or 'The split'} lists {record.path} ({name} split), which is "
                                  f"outside the data folder {data_dir}: every clip must be inside it. Use "
                                  "a manifest of this data folder, or another output folder.")


class RunDirectory:
    """The files of one run, under `path`.

    `config.json` (the resolved config), `split.csv` (the split manifest),
    `state.json` (completed epochs, history, best validation loss),
    `last.keras` (model and optimizer after the last completed epoch),
    `best.keras` (the epoch `train.checkpoint_metric` keeps, copied from
    `last.keras` once `state.json` records it), `history.csv`, `logs/`
    (TensorBoard), `metrics.json` (test metrics at the end of training),
    `threshold.json` (the decision threshold, chosen on validation),
    `cache/` (decoded images and baseline features), `synthetic/` (the run's
    own synthetic recordings, with `synthetic.json` saying how they were
    made), `report/` (the evaluation report, with the DCASE-format result
    files in `report/dcase/`). Every file is replaced
    atomically. These names are defined here and nowhere else.
    """

    CONFIG = "config.json"
    MANIFEST = "split.csv"
    STATE = "state.json"
    LAST = "last.keras"
    LAST_PENDING = "last.pending.keras"
    BEST = "best.keras"
    HISTORY = "history.csv"
    METRICS = "metrics.json"
    THRESHOLD = "threshold.json"
    LOGS = "logs"
    CACHE = "cache"
    SYNTHETIC = "synthetic"
    SYNTHETIC_MARKER = "synthetic.json"  # inside SYNTHETIC (and any folder of generated recordings)
    REPORT = "report"
    DCASE_RESULTS = os.path.join("report", "dcase")  # anomaly_score_*.csv, decision_result_*.csv, result.csv
    EXPORT = "export.json"  # where `pump_keras.train` exported the run
    AUTOENCODERS = "autoencoders"  # a normal-only autoencoder run: one .keras file per machine
    SCORES = "scores.csv"  # a normal-only run: every validation and test clip's anomaly score

    def __init__(self, path: str):
        self.path = os.fspath(path)

    def file(self, name: str) -> str:
        """The path of `name` inside the run directory."""
        return os.path.join(self.path, name)

    def exists(self, name: str) -> bool:
        """Whether the run directory holds `name`."""
        return os.path.exists(self.file(name))

    def check(self, config: RunConfig) -> bool:
        """Whether this is a resume of `config` (True) or a new run (False); writes nothing.

        A new run needs a missing or empty folder; the run's own generated
        synthetic recordings (`synthetic/`) may already be there.

        Raises:
            RunDirError: the directory holds a run of another config, or
                files but no config (something else lives there).
        """
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise RunDirError(f"Run directory {self.path} exists and is not a folder.")
        if self.exists(self.CONFIG):
            try:
                previous = self.read_config()
            except ValueError as error:
                raise RunDirError(f"{self.file(self.CONFIG)} cannot be read ({error}); "
                                  "choose another run directory.") from error
            differences = config_differences(previous, config)
            if differences:
                raise RunDirError(
                    f"Run directory {self.path} holds a run with another config; nothing was changed. "
                    "Differences (saved -> requested): " + "; ".join(differences)
                    + ". Use another --run-dir, or the saved settings to resume.")
            return True
        foreign = sorted(set(os.listdir(self.path)) - {self.SYNTHETIC}) if os.path.isdir(self.path) else []
        if foreign:
            raise RunDirError(f"Run directory {self.path} is not empty and holds no {self.CONFIG} "
                              f"(found {', '.join(foreign[:3])}); choose an empty or new folder.")
        return False

    def read_config(self) -> RunConfig:
        """The run's saved `RunConfig` (`ConfigError` if `config.json` cannot be parsed, `OSError` if missing)."""
        with open(self.file(self.CONFIG), encoding="utf-8") as handle:
            return config_from_json(handle.read())

    def write_config(self, config: RunConfig) -> None:
        """Records `config` as this directory's run (after `check`)."""
        atomic_write_bytes(self.file(self.CONFIG), config_to_json(config).encode())

    def claim(self, config: RunConfig) -> bool:
        """`check`, then record the config of a new run; returns True for a resume."""
        resuming = self.check(config)
        if not resuming:
            self.write_config(config)
        return resuming

    def read_state(self) -> Optional[dict]:
        """The saved training state, or None before the first completed epoch."""
        if not self.exists(self.STATE):
            return None
        path = self.file(self.STATE)
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        try:
            state = json.loads(text)
        except ValueError as error:
            problem = "is empty" if not text.strip() else f"is not valid JSON ({error})"
            raise RunDirError(f"{path} {problem}: the run's progress is lost. Remove it to start the run over, "
                              "or use another --run-dir.") from error
        if not isinstance(state, dict) or not isinstance(state.get("epochs_completed"), int):
            raise RunDirError(f"{path} holds no completed epoch count: the run's progress is lost. Remove it "
                              "to start the run over, or use another --run-dir.")
        return state

    def write_json(self, name: str, values: dict) -> None:
        """Writes `values` as JSON to `name`, atomically."""
        atomic_write_json(self.file(name), values, sort_keys=True)

    def write_history(self, history: List[dict]) -> None:
        """Writes the per-epoch rows to `history.csv`, atomically."""
        columns = sorted({key for row in history for key in row} - {"epoch"})
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, ["epoch", *columns], lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
        atomic_write_bytes(self.file(self.HISTORY), buffer.getvalue().encode())

    def read_history(self) -> List[dict]:
        """The rows of `history.csv` as `write_history` wrote them (values as text), or none."""
        if not self.exists(self.HISTORY):
            return []
        with open(self.file(self.HISTORY), newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))

    def save_model(self, model, name: str) -> None:
        """Saves `model` (with optimizer state) to `name`, atomically."""
        atomic_save(self.file(name), model.save)


def load_run_config(run_dir: str) -> RunConfig:
    """The `RunConfig` saved in `run_dir/config.json`."""
    path = os.path.join(run_dir, RunDirectory.CONFIG)
    if not os.path.exists(path):
        raise RunDirError(f"{run_dir} holds no {RunDirectory.CONFIG}: not a pump_keras run directory.")
    return RunDirectory(run_dir).read_config()
