"""The quickstart notebook (notebooks/quickstart.ipynb) runs top to bottom in a real Jupyter kernel, offline.

- It is stored clean (no outputs), with the real-model cells switched off (``RUN_REAL = False``).
- Executed, no cell errors; the tiny model learns (printed test accuracy well above chance); the sample images,
  the predictions and the loss curve are displayed inline; everything is written under ``MMFT_NOTEBOOK_OUTPUT``.
"""

import json
import os
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"
KERNEL_NAME = "mmft-notebook-test"


def cells_tagged(notebook, tag):
    cells = [cell for cell in notebook.cells if tag in cell.get("metadata", {}).get("tags", [])]
    assert cells, f"no cell tagged {tag!r} in {NOTEBOOK.name}"
    return cells


def outputs_of(cell):
    """All outputs of a cell as (mime type or stream name, content) pairs."""
    found = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            found.append((output["name"], output["text"]))
        elif output["output_type"] in ("display_data", "execute_result"):
            found.extend(output["data"].items())
    return found


def test_notebook_is_stored_clean_with_real_cells_off():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "store the notebook without outputs"
    # The Hub cells must not run by default (in the test below nor for a reader who runs everything).
    guard = cells_tagged(notebook, "real-model")[0].source
    assert re.search(r"^RUN_REAL = False\b", guard, re.MULTILINE), guard[:200]
    assert "push_to_hub=True" in guard and "hub_model_id=" in guard


def write_kernelspec(kernels_dir: Path) -> None:
    """A kernelspec that runs *this* interpreter, so the kernel sees the same packages (and mmft) as the tests,
    whatever kernels the machine has installed globally."""
    from ipykernel.kernelspec import write_kernel_spec

    write_kernel_spec(kernels_dir / KERNEL_NAME, overrides={"display_name": "mmft tests"})


@pytest.mark.slow
def test_quickstart_notebook_runs_offline_and_learns(tmp_path):
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient

    from mmft.data.shapes import chance_accuracy

    write_kernelspec(tmp_path / "kernels")
    kernel_manager = AsyncKernelManager(
        kernel_name=KERNEL_NAME, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
    )
    output_dir = tmp_path / "notebook-output"
    env = {
        **os.environ,
        "MMFT_NOTEBOOK_OUTPUT": str(output_dir),
        "MMFT_CACHE": str(tmp_path / "mmft-cache"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "MPLBACKEND": "agg",  # if matplotlib is installed, never try a GUI backend
    }
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        km=kernel_manager,
        timeout=1500,  # per cell: the notebook takes about a minute on 2 idle CPU cores, 10+ on busy ones
        resources={"metadata": {"path": str(REPO)}},  # run from the repository root, as a reader would
    )
    client.execute(env=env)  # raises CellExecutionError, with the traceback, if any cell fails

    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.execution_count is not None, cell.source[:80]
            assert not [o for o in cell.outputs if o["output_type"] == "error"], cell.source[:80]

    # Sample images with their questions, and predictions on test images, shown inline.
    for tag in ("samples", "predictions"):
        kinds = [kind for kind, _ in outputs_of(cells_tagged(notebook, tag)[0])]
        assert "image/png" in kinds, (tag, kinds)

    # The loss curve: an SVG (no matplotlib) with one point per logged loss, or a matplotlib PNG.
    curve = dict(outputs_of(cells_tagged(notebook, "loss-curve")[0]))
    assert "image/svg+xml" in curve or "image/png" in curve, list(curve)
    if "image/svg+xml" in curve:
        svg = ElementTree.fromstring(curve["image/svg+xml"])
        polyline = svg.find("{http://www.w3.org/2000/svg}polyline")
        assert polyline is not None and len(polyline.get("points").split()) >= 5, curve["image/svg+xml"][:300]
    losses = re.search(r"loss: ([\d.]+) at step \d+ -> ([\d.]+) at step", curve["stdout"])
    assert losses and float(losses[2]) < float(losses[1]) / 2, curve["stdout"]

    # The final accuracy, printed against chance: the tiny model learned to read the images.
    printed = "".join(text for kind, text in outputs_of(cells_tagged(notebook, "accuracy")[0]) if kind == "stdout")
    found = re.search(r"Test accuracy: ([\d.]+) \(before fine-tuning: ([\d.]+); chance: ([\d.]+)", printed)
    assert found, printed
    accuracy, before, chance = map(float, found.groups())
    assert chance == pytest.approx(chance_accuracy(), abs=1e-3)
    assert accuracy > chance_accuracy() + 0.2, printed  # chance is 0.26
    assert accuracy > before, printed

    # The real-model cells were skipped by their guard (offline, nothing would have worked anyway).
    real = "".join(text for kind, text in outputs_of(cells_tagged(notebook, "real-model")[0]) if kind == "stdout")
    assert "RUN_REAL is False" in real, real

    # Everything went under MMFT_NOTEBOOK_OUTPUT: the data, the trained model, the predictions shown above.
    run_dir = output_dir / "tiny-llava-shapes"
    assert (run_dir / "model.safetensors").exists()
    rows = [json.loads(line) for line in (run_dir / "eval_predictions.jsonl").read_text().splitlines()]
    assert rows and {"id", "question", "reference", "prediction"} <= set(rows[0])
    right = sum(same_answer(row["prediction"], row["reference"]) for row in rows)
    assert right / len(rows) == pytest.approx(accuracy, abs=0.02), (right, len(rows), accuracy)
    assert list((output_dir / "data").glob("train-*/train.jsonl"))


def same_answer(prediction: str, reference: str) -> bool:
    """The notebook's right/wrong rule (case and a trailing full stop ignored)."""
    return prediction.strip().strip(".").lower() == reference.strip().strip(".").lower()
