"""examples/experiment_on_cache.ipynb runs top to bottom in a Jupyter kernel (nbclient), so it never rots; its
printed results and its two plots are checked."""
import os
from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient", reason="nbclient is in the project's test extra (pip install -e .[test])")
nbformat = pytest.importorskip("nbformat")

NB = Path(__file__).resolve().parents[1] / "examples" / "experiment_on_cache.ipynb"


def test_notebook_runs(monkeypatch):
    root = NB.parents[1]
    monkeypatch.setenv("PYTHONPATH", str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.reads(NB.read_text(), 4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(root)}}).execute()
    outs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outs if o.output_type == "stream")
    assert "fusion_mlp" in text and "temporal" in text and "best k" in text and "blend" in text, text
    pngs = [o for o in outs if o.output_type == "display_data" and "image/png" in o.data]
    assert len(pngs) == 2, "the metric-by-k plot and one video's timeline"
    assert not [o for o in outs if o.output_type == "error"]
