"""examples/first_search.ipynb runs from its first cell to its last in a real Jupyter kernel, on
tiny synthetic data: the notebook path a newcomer takes works as written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import make_tiny_mnist

nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (pip install -e '.[dev]')")
nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (pip install -e '.[dev]')")
pytest.importorskip("ipykernel", reason="ipykernel (the Jupyter kernel) is not installed (pip install -e '.[dev]')")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "first_search.ipynb"
ROOT = NOTEBOOK.parents[1]
# The tiny data: 500 training images, of which 100 validate.
TINY = {"TRIALS": "2", "EPOCHS": "2", "VAL_SIZE": "100", "CONFIRM_SEEDS": "2"}


def test_the_first_search_notebook_runs_in_a_jupyter_kernel(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    (parameters,) = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    for name, value in TINY.items():
        assert name in parameters.source, f"the parameters cell no longer sets {name}"
    parameters.source += "\n" + "\n".join(f"{name} = {value}" for name, value in TINY.items())
    # The notebook reads ../data from examples/, as it does in a clone.
    work = tmp_path / "clone" / "examples"
    work.mkdir(parents=True)
    make_tiny_mnist(tmp_path / "clone" / "data", n_train=500, n_test=100)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    previous = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        client = nbclient.NotebookClient(notebook, timeout=240, kernel_name="python3",
                                         resources={"metadata": {"path": str(work)}})
        client.execute()
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    outputs = {i: "".join(o.get("text", "") for o in c.get("outputs", []) if o.get("output_type") == "stream")
               for i, c in enumerate(notebook.cells) if c.cell_type == "code"}
    shown = "\n".join(outputs.values())
    assert "trial #0:" in shown and "MFLOPs/image" in shown  # the search said what it trained
    assert "this run: 2 trials" in shown
    assert "test accuracy" in shown  # evaluate's line
    kinds = [o.get("output_type") for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert "error" not in kinds
    images = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) == 2  # the accuracy curves and the digits
    tables = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "text/html" in o.get("data", {})]
    assert tables and "<table" in tables[0]["data"]["text/html"]  # the leaderboard DataFrame
    assert (work / "best_net.py").is_file() and (work / "best_net.safetensors").is_file()
