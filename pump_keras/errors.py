"""Every error pump_keras raises on purpose: `PumpKerasError` and its kinds.

Each message names the file, folder or setting at fault and what to do. The
command-line tools print any `PumpKerasError` as `error: ...` and exit with
status 2 (`pump_keras.cli.common`); anything else is a bug and keeps its
traceback. The kinds also derive from `ValueError` (bad input) or
`RuntimeError` (a peer or server failed), as they did before the hierarchy.
"""

from __future__ import annotations


class PumpKerasError(Exception):
    """Input or state the toolkit cannot use; the message says which and why."""


class ConfigError(PumpKerasError, ValueError):
    """A config file, preset or override that cannot be used."""


class WavFormatError(PumpKerasError, ValueError):
    """A file that is not a WAV this package can read; the message names it."""


class DatasetError(PumpKerasError, ValueError):
    """A data folder that cannot be indexed: missing, empty, or with files in no known layout."""


class SplitError(DatasetError):
    """Clips that cannot be split as asked (too few, a class missing from a split)."""


class ManifestError(DatasetError):
    """A split manifest (`split.csv`) that cannot be read."""


class ResampleError(DatasetError):
    """Recordings that cannot be resampled as asked."""


class RunDirError(PumpKerasError, ValueError):
    """A run directory that cannot be used for this config; nothing in it was changed."""


class TrainingError(PumpKerasError, ValueError):
    """Input that makes a run impossible (a split too small, a class missing); nothing was overwritten."""


class InitError(TrainingError):
    """An `init_from` source that cannot initialise this model."""


class WorkerLostError(PumpKerasError, RuntimeError):
    """Another worker stopped taking part (it failed, was killed, or did not answer in time)."""


class EvaluationError(PumpKerasError, ValueError):
    """A run or data that cannot be evaluated."""


class ExportError(PumpKerasError, ValueError):
    """A run or export target that cannot be exported."""


class ModelInfoError(PumpKerasError, ValueError):
    """An exported model's metadata (`pump_keras.json`) that cannot be read."""


class PredictError(PumpKerasError, ValueError):
    """A model, run directory or argument that cannot be used for prediction."""


class ServingError(PumpKerasError, RuntimeError):
    """The server could not be reached or refused a request."""
