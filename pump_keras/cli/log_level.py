"""TensorFlow's C++ log level for the command-line entry points, set before TensorFlow is imported."""

from __future__ import annotations

import os

# 3 keeps INFO, WARNING and ERROR lines of TensorFlow's C++ runtime off the
# console: "failed call to cuInit" on a machine without a GPU driver,
# "NodeDef mentions attribute use_unbounded_threadpool" and the like. Python
# exceptions carry their own messages, so nothing the user must act on is lost.
QUIET_LEVEL = "3"


def quiet_tensorflow_logs() -> None:
    """Sets `TF_CPP_MIN_LOG_LEVEL` to `QUIET_LEVEL` unless the user set it (0 shows everything).

    TensorFlow reads it once, when it is first imported, so every entry point
    calls this before importing anything that imports TensorFlow.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", QUIET_LEVEL)
