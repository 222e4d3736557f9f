"""What an export records about its model, read back where the model is used.

`assets.extra/pump_keras.json` in a SavedModel version folder holds the
threshold, the feature config, the training clip length and sample rate
(`clip`) and where the model came from (`provenance`: the data, whether it
was synthetic, test metrics beside the baseline, package version, commit).
`pump_keras.deploy.predict` and `pump_keras.deploy.serving_client` read it to warn about a
model trained on synthetic recordings and about clips whose length differs
from the training clips'. Standard library and the WAV header reader only,
so the serving client stays free of TensorFlow.
"""

from __future__ import annotations

import json
import os
from typing import List, Optional, Sequence

from pump_keras.audio.wavfile import read_wav_header
from pump_keras.errors import ModelInfoError, WavFormatError

METADATA_NAME = "pump_keras.json"



def info_file(path: str) -> str:
    """The `pump_keras.json` of a version folder, of the newest version of a model folder, or `path` itself."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return path
    own = os.path.join(path, "assets.extra", METADATA_NAME)
    if os.path.isdir(path) and not os.path.exists(own):
        versions = sorted((int(name) for name in os.listdir(path) if name.isdigit()), reverse=True)
        for version in versions:
            candidate = os.path.join(path, str(version), "assets.extra", METADATA_NAME)
            if os.path.exists(candidate):
                return candidate
    return own


def read_model_info(path: str) -> dict:
    """The recorded model info of `path` (see `info_file`); `ModelInfoError` when missing or unreadable."""
    file = info_file(path)
    try:
        with open(file, encoding="utf-8") as handle:
            info = json.load(handle)
    except FileNotFoundError as error:
        raise ModelInfoError(f"{path} holds no assets.extra/{METADATA_NAME}: not a pump_keras export.") from error
    except (OSError, ValueError) as error:
        raise ModelInfoError(f"cannot read {file}: {error}") from error
    if not isinstance(info, dict):
        raise ModelInfoError(f"{file} is not a pump_keras model record (not a JSON object).")
    return info


def is_synthetic(info: dict) -> bool:
    """Whether the model was recorded as trained on synthetic recordings."""
    return bool((info.get("provenance") or {}).get("synthetic"))


def synthetic_warning(info: dict, model: str) -> Optional[str]:
    """A warning when the model was trained on synthetic recordings, else None."""
    if not is_synthetic(info):
        return None
    return (f"{model} was trained on SYNTHETIC pump recordings (a demonstration of the machinery): "
            "its scores say nothing about real pumps.")


def clip_length_warning(path: str, info: dict) -> Optional[str]:
    """A warning when the WAV file `path` is longer or shorter than the training clips by more than the tolerance.

    None when it is within the tolerance, when the export recorded no clip
    length, or when the header cannot be read (the decoder names that
    problem itself).
    """
    clip = info.get("clip") or {}
    expected, tolerance = clip.get("seconds"), clip.get("length_tolerance")
    if not expected or tolerance is None:
        return None
    try:
        seconds = read_wav_header(path).seconds
    except (OSError, WavFormatError):
        return None
    if abs(seconds - expected) <= tolerance * expected:
        return None
    return (f"{path} is {seconds:.3g} s long, but the model was trained on {expected:.3g} s clips "
            f"(tolerance {tolerance:.0%}): it is scored whole, as one clip, so its score does not mean what "
            f"a training clip's does. Scoring long recordings in windows is not supported yet; cut it into "
            f"{expected:.3g} s clips.")


def clip_length_warnings(paths: Sequence[str], info: dict) -> List[str]:
    """`clip_length_warning` of every path that has one."""
    return [warning for warning in (clip_length_warning(path, info) for path in paths) if warning]
