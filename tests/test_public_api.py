"""The public API: what `pump_keras` exports, the error hierarchy, and `python -m pump_keras <command>`."""

import inspect
import subprocess
import sys

import pytest

import pump_keras
from pump_keras import errors
from pump_keras.cli import common
from pump_keras.cli.main import COMMANDS, main as dispatch
from tests.conftest import REPO_ROOT


def test_every_public_name_resolves_and_importing_the_package_is_cheap():
    for name in pump_keras.__all__:
        assert getattr(pump_keras, name) is not None, name
    assert set(pump_keras.__all__) <= set(dir(pump_keras))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        pump_keras.nothing
    probe = "import sys, pump_keras; assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    subprocess.run([sys.executable, "-c", probe], check=True, cwd=REPO_ROOT)


def test_the_public_functions_are_the_library_ones():
    from pump_keras.deploy.export import export_run
    from pump_keras.evaluation.report import evaluate_run
    from pump_keras.training.loop import train

    assert pump_keras.train_run is train and pump_keras.evaluate_run is evaluate_run
    assert pump_keras.export_run is export_run


def test_every_error_kind_is_a_pump_keras_error_and_keeps_its_builtin_base():
    kinds = [cls for _, cls in inspect.getmembers(errors, inspect.isclass) if cls.__module__ == errors.__name__]
    assert len(kinds) >= 15
    for kind in kinds:
        assert issubclass(kind, errors.PumpKerasError), kind
        if kind is not errors.PumpKerasError:
            assert issubclass(kind, (ValueError, RuntimeError)), kind


def test_a_user_error_becomes_an_error_line_and_status_2(capsys):
    @common.command
    def fails(argv=None):
        raise errors.DatasetError("data/x.wav: not a WAV file")

    assert fails([]) == 2
    assert capsys.readouterr().err == "error: data/x.wav: not a WAV file\n"

    @common.command
    def bug(argv=None):
        raise KeyError("a bug keeps its traceback")

    with pytest.raises(KeyError):
        bug([])


def test_python_dash_m_pump_keras_dispatches_to_every_command(capsys):
    listing = subprocess.run([sys.executable, "-m", "pump_keras", "--help"], cwd=REPO_ROOT,
                             capture_output=True, text=True)
    assert listing.returncode == 0
    for name in COMMANDS:
        assert name in listing.stdout
    for name in COMMANDS:  # in this process: each command's own parser answers --help
        with pytest.raises(SystemExit) as exit_:
            dispatch([name, "--help"])
        assert exit_.value.code == 0 and "usage:" in capsys.readouterr().out, name
    assert dispatch(["fly"]) == 2 and "unknown command 'fly'" in capsys.readouterr().err
