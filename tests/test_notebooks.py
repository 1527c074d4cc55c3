"""Execute the worked-example notebooks on small settings so they never rot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")


@pytest.fixture(scope="module")
def notebook_out(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("notebooks")


OUTPUTS = {"01_tour.ipynb": "tour", "02_compare_variants.ipynb": "variants",
           "03_concepts.ipynb": "concepts", "04_data_attribution.ipynb": "data_attribution"}


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_notebook_runs(name, notebook_out, monkeypatch):
    monkeypatch.setenv("DEEPPROFILE_NB_FAST", "1")
    monkeypatch.setenv("DEEPPROFILE_NB_OUT", str(notebook_out))
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert all(not cell.get("outputs") for cell in book.cells if cell.cell_type == "code"), (
        f"{name} is committed with outputs; strip them"
    )
    client = nbclient.NotebookClient(book, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute(env=dict(os.environ))
    errors = [out for cell in book.cells if cell.cell_type == "code"
              for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors
    assert (notebook_out / OUTPUTS[name]).exists()
