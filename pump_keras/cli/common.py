"""What every command shares: how an error the user can fix reaches them."""

from __future__ import annotations

import functools
import sys
from typing import Callable, Optional, Sequence

from pump_keras.errors import PumpKerasError

# Input the user can fix: the toolkit's own errors, bad values, missing or
# unreadable files. Anything else is a bug and keeps its traceback.
USER_ERRORS = (PumpKerasError, ValueError, OSError)
USAGE_ERROR = 2


def _is_tensorflow_error(error: BaseException) -> bool:
    # tf.errors.OpError without importing TensorFlow (the serving client runs without it).
    return type(error).__module__.startswith("tensorflow") and hasattr(error, "message")


def report_error(error: BaseException) -> int:
    """Prints `error: MESSAGE` on stderr; returns the usage-error exit status, 2."""
    message = error.message if _is_tensorflow_error(error) else error
    print(f"error: {message}", file=sys.stderr)
    return USAGE_ERROR


Main = Callable[[Optional[Sequence[str]]], int]


def command(main: Optional[Main] = None, *, tensorflow_errors: bool = False):
    """Wraps a command's `main(argv)`: a user error becomes `error: ...` on stderr and exit status 2.

    With `tensorflow_errors`, TensorFlow's op errors count as user errors
    too (the in-graph decoder names the file it cannot read); elsewhere they
    keep their traceback.
    """
    if main is None:
        return functools.partial(command, tensorflow_errors=tensorflow_errors)

    @functools.wraps(main)
    def run(argv: Optional[Sequence[str]] = None) -> int:
        try:
            return main(argv)
        except USER_ERRORS as error:
            return report_error(error)
        except Exception as error:
            if tensorflow_errors and _is_tensorflow_error(error):
                return report_error(error)
            raise

    return run
