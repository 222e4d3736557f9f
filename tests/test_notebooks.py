"""The notebooks run top to bottom, headlessly, with CPU-quick settings; the repository keeps them output-free."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow  # trains models or runs commands end to end

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))


def test_the_three_notebooks_are_there_and_stripped():
    assert [path.name for path in NOTEBOOKS] == [
        "01_data_and_features.ipynb", "02_train.ipynb", "03_evaluate_and_deploy.ipynb"]
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has outputs"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("notebooks")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, workdir, monkeypatch):
    monkeypatch.setenv("PUMP_KERAS_NOTEBOOK_CI", "1")
    monkeypatch.setenv("PUMP_KERAS_ROOT", str(REPO_ROOT))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(workdir)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    # Where a notebook trains, it does so first, so training gets its CPU allocator.
    assert not [o for o in outputs if o.output_type == "stream" and "CPU allocator" in o.text]
    assert any(o.output_type == "display_data" and "image/png" in o.get("data", {}) for o in outputs), \
        "no figure shown"
