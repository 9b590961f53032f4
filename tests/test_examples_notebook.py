"""examples/experiment_on_cache.ipynb runs top to bottom. With nbclient installed it is executed by a Jupyter
kernel; otherwise its code cells run in order in one namespace here (the notebook's code is plain Python, so
this checks the same code without adding Jupyter to the dependencies)."""
import json
import os
from pathlib import Path


import classify  # noqa: F401  (sets the OpenMP wait policy before torch loads)

NB = Path(__file__).resolve().parents[1] / "examples" / "experiment_on_cache.ipynb"


def test_notebook_runs(monkeypatch, capsys):
    nb = json.loads(NB.read_text())
    try:
        import nbclient
        import nbformat
    except ImportError:
        nbclient = None
    monkeypatch.setenv("PYTHONPATH", str(NB.parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if nbclient is not None:
        nbclient.NotebookClient(nbformat.reads(NB.read_text(), 4), timeout=600,
                                resources={"metadata": {"path": str(NB.parents[1])}}).execute()
        return
    ns: dict = {"__name__": "__notebook__"}
    for i, cell in enumerate(c for c in nb["cells"] if c["cell_type"] == "code"):
        exec(compile("".join(cell["source"]), f"{NB.name}[code cell {i}]", "exec"), ns)
    out = capsys.readouterr().out
    assert "fusion_mlp" in out and "temporal" in out and "best k" in out and "blend" in out
    assert len(ns["scores"]) == 2 and ns["blend"].val_score_ >= max(
        ns["EXPR"].score(ns["va"].y, s) for s in ns["scores"].values()) - 1e-9
