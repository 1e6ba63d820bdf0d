"""docs/walkthrough.ipynb: committed with its outputs and small, and it runs top to bottom on the real UTKFace folder.

The execution test needs the real dataset: AGEKIT_UTKFACE, or ../shared/data/UTKFace beside the repository (where
CI has it); it is skipped, saying so, when neither exists. It needs requirements-dev.txt (nbclient, ipykernel).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import utkface_folder

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "docs" / "walkthrough.ipynb"
MAX_BYTES = 3 * 2**20  # committed outputs stay small: JPEG galleries, plotly figures as JSON
SECTIONS = 7

# Run after the notebook's own cells, in its kernel: the claims its text makes about the numbers it computed.
CLAIMS = """
assert straddling_groups(assignment, report.duplicate_groups) == [], "the committed split has a straddling group"
same_labels = subsets["leaked: copy in train, same labels"]
mae = {name: headline_metrics(frame[frame["file"].isin(same_labels)])["age_mae"] for name, frame in frames.items()}
assert mae["leaky"] < mae["grouped"], f"the leak did not show on leaked faces: {mae}"
assert len(live.history) == LIVE_EPOCHS and (RUNS / "live_facecnn" / "model.safetensors").is_file()
print("claims hold")
"""


def test_committed_notebook_was_run_top_to_bottom_and_is_small() -> None:
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert [cell["execution_count"] for cell in code] == list(range(1, len(code) + 1))  # one run, in order
    assert not [out for cell in code for out in cell["outputs"] if out["output_type"] == "error"]
    headings = [line for cell in notebook["cells"] if cell["cell_type"] == "markdown"
                for line in "".join(cell["source"]).splitlines() if line.startswith("## ")]
    assert [h.split(".")[0] for h in headings] == [f"## {i}" for i in range(1, SECTIONS + 1)]
    assert NOTEBOOK.stat().st_size < MAX_BYTES


@pytest.mark.slow
@pytest.mark.skipif(utkface_folder() is None,
                    reason="the walkthrough needs the real UTKFace folder: set AGEKIT_UTKFACE or put it in "
                           "../shared/data/UTKFace")
def test_walkthrough_runs_top_to_bottom(monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat", reason="pip install -r requirements-dev.txt")
    nbclient = pytest.importorskip("nbclient", reason="pip install -r requirements-dev.txt")
    monkeypatch.setenv("AGEKIT_UTKFACE", str(utkface_folder()))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(CLAIMS))
    client = nbclient.NotebookClient(notebook, timeout=1800, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError, naming the cell, when any cell fails
    assert notebook.cells[-1].outputs[-1]["text"] == "claims hold\n"
