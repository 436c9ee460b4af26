"""The example notebooks run, cell by cell, in a kernel of this interpreter."""

import json
import pathlib
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def run(notebook, kernels, cwd):
    """Execute ``notebook`` with its working directory ``cwd``; its code outputs."""
    # a kernel spec naming this very interpreter: the default "python3" spec may name
    # whatever `python` is first on PATH, which need not have mmsb
    spec = kernels / "kernels" / "mmsb-test"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "mmsb test", "language": "python"}))
    nb = nbformat.read(notebook, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit it without outputs"
    nbclient.NotebookClient(nb, kernel_name="mmsb-test", timeout=300,
                            resources={"metadata": {"path": str(cwd)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    return outputs


def text_of(outputs):
    return "".join(o.get("text", "") for o in outputs if o.output_type == "stream")


def test_quickstart_runs_and_shows_what_it_says(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    outputs = run(EXAMPLES / "quickstart.ipynb", tmp_path, tmp_path)
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("mmsb.State" in h or "State" in h for h in html)      # the state's HTML view
    # readings 15..22 °C, the first zeroed by a sparse delta, plus 273.15 through sum and passthrough
    assert "[273.15 289.15 290.15" in text_of(outputs)
    assert any("image/png" in o.get("data", {}) for o in outputs)     # the graph plot


def test_live_bus_watches_a_writer_process(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    outputs = run(EXAMPLES / "live_bus.ipynb", tmp_path, EXAMPLES)  # it starts bus_writer.py beside it
    text = text_of(outputs)
    assert "the histogram matched the walkers in 50 of 50 snapshots" in text
    assert "40 frames drawn" in text
    assert "writer exited with 0" in text and "StateClosedError" in text
    spread = text.split("spread went from ")[1].split()
    assert float(spread[2]) > float(spread[0])  # the write from the notebook reached the writer
    assert any("image/png" in o.get("data", {}) for o in outputs)     # the live figure
