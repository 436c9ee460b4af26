"""examples/quickstart.ipynb runs, cell by cell, in a kernel of this interpreter."""

import json
import pathlib
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


def test_quickstart_runs_and_shows_what_it_says(tmp_path, monkeypatch):
    # a kernel spec naming this very interpreter: the default "python3" spec may name
    # whatever `python` is first on PATH, which need not have mmsb
    spec = tmp_path / "kernels" / "mmsb-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "mmsb test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit it without outputs"
    nbclient.NotebookClient(nb, kernel_name="mmsb-test", timeout=300,
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("mmsb.State" in h or "State" in h for h in html)      # the state's HTML view
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    # readings 15..22 °C, the first zeroed by a sparse delta, plus 273.15 through sum and passthrough
    assert "[273.15 289.15 290.15" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)     # the graph plot
