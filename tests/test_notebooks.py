"""The example notebooks run from top to bottom (on few steps) and are stored without outputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO_ROOT / "examples" / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 600
STEPS = 20  # optimiser steps per training run: enough to run every cell, not to learn much


def test_there_are_three_notebooks():
    assert [path.name for path in NOTEBOOKS] == [
        "01_quick_start.ipynb",
        "02_compare_fha_mha.ipynb",
        "03_look_inside.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_is_stored_without_outputs(path):
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs(path, sample_dir, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("FHA_SAMPLE_DATA", str(sample_dir))
    monkeypatch.setenv("FHA_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("FHA_NOTEBOOK_STEPS", str(STEPS))
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if a cell fails
    errors = [output for cell in notebook.cells for output in cell.get("outputs", []) if output.output_type == "error"]
    assert not errors
    assert any((tmp_path / "runs").rglob("model.safetensors"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebooks_use_the_library_not_the_command_line(path):
    """fha.cli is the command line's inside, free to change: notebooks show the library."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    code = "".join(line for cell in notebook["cells"] if cell["cell_type"] == "code" for line in cell["source"])
    assert "fha.cli" not in code


# What each `jupyter` command of the README needs installed; ipywidgets draws tqdm's bars in a notebook.
JUPYTER_COMMAND_PACKAGES = {"lab": "jupyterlab", "nbconvert": "nbconvert", "notebook": "notebook"}
NOTEBOOK_PROGRESS_PACKAGE = "ipywidgets"


def test_the_notebooks_extra_installs_what_the_readme_uses():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    extra = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]["notebooks"]
    installed = {re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower() for requirement in extra}
    commands = set(re.findall(r"`jupyter (\w+)", readme))
    assert commands >= {"lab", "nbconvert"}
    assert {JUPYTER_COMMAND_PACKAGES[command] for command in commands} | {NOTEBOOK_PROGRESS_PACKAGE} <= installed
    assert re.findall(r'pip install -e "\.\[notebooks\]"[^`]*`', readme) == ['pip install -e ".[notebooks]"`']
