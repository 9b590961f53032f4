"""Bad values of the person-tracking options of `python -m extract run` (`--faces all` on video files:
`--track-gap`, `--track-min`, `--track-move`) and of `python -m classify predict --max-gap`, on the command line
and through the Python API."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from extract.cli import main

from . import Case, Result, api, cli

CMD = "extract run (tracks)"


def _videos(shared: Path) -> Path:
    """A folder with one short, faceless video file (what the checks need: a layout of videos)."""
    d = shared / "track_videos"
    if not d.exists():
        import av
        d.mkdir()
        with av.open(str(d / "clip.mp4"), "w") as c:
            s = c.add_stream("mpeg4", rate=12)
            s.height, s.width, s.pix_fmt = 48, 64, "yuv420p"
            for _ in range(3):
                c.mux(s.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), 90, np.uint8), format="rgb24")))
            c.mux(s.encode())
    return d


def _run(*extra):
    def go(tmp: Path, shared: Path) -> Result:
        return cli(main, ["run", "--data", _videos(shared), "--out", tmp / "c.h5", "--quiet", "--workers", "0",
                          "--detector", "haar", "--extractors", "fer", *extra])
    return go


def _nothing_written(tmp: Path, shared: Path, res: Result) -> None:
    assert not (tmp / "c.h5").exists()


def _api(**track):
    def go(tmp: Path, shared: Path) -> Result:
        from extract.faces import DetectorConfig
        from extract.runner import run
        from extract.sources import video_files
        return api(lambda: run(video_files(_videos(shared)), [], tmp / "c.h5", workers=0, progress=False,
                               detector=DetectorConfig(detector="haar", faces="all", **track)))
    return go


def _predict(*extra):
    def go(tmp: Path, shared: Path) -> Result:
        from classify.__main__ import main as classify_main
        return cli(classify_main, ["predict", "--pretrained", "fer", "--cache", tmp / "none.h5", "--out",
                                   tmp / "p.csv", *extra])
    return go


def _predict_api(max_gap):
    def go(tmp: Path, shared: Path) -> Result:
        from classify.predict import predict
        return api(lambda: predict(tmp / "none.h5", tmp / "p.csv", pretrained="fer", max_gap=max_gap))
    return go


def _no_table(tmp: Path, shared: Path, res: Result) -> None:
    assert not (tmp / "p.csv").exists()


PREDICT = "classify predict (faces)"
ALL = ("--faces", "all")
CASES = [
    Case(CMD, "--track-gap negative", _run(*ALL, "--track-gap", "-1"), "argument --track-gap: must be >= 0",
         check=_nothing_written),
    Case(CMD, "--track-gap beyond int32", _run(*ALL, "--track-gap", "3000000000"),
         "argument --track-gap: must be <= 2147483647", check=_nothing_written),
    Case(CMD, "--track-gap not a number", _run(*ALL, "--track-gap", "1s"),
         "argument --track-gap: expected an integer", check=_nothing_written),
    Case(CMD, "--track-min 0", _run(*ALL, "--track-min", "0"), "argument --track-min: must be >= 1",
         check=_nothing_written),
    Case(CMD, "--track-move 0", _run(*ALL, "--track-move", "0"), "argument --track-move: must be > 0.0",
         check=_nothing_written),
    Case(CMD, "--track-move nan", _run(*ALL, "--track-move", "nan"), "argument --track-move: must be > 0.0",
         check=_nothing_written),
    Case(CMD, "--track-move above its bound", _run(*ALL, "--track-move", "1e9"), "<= 100.0",
         check=_nothing_written),
    Case(CMD, "--track-gap without --faces all", _run("--track-gap", "5"), "needs --faces all on video files",
         check=_nothing_written),
    Case(CMD, "API: track_min=0", _api(track_min=0), "--track-min must be an integer >= 1",
         check=_nothing_written),
    Case(CMD, "API: track_gap=-3", _api(track_gap=-3), "--track-gap must be an integer >= 0",
         check=_nothing_written),
    Case(CMD, "API: track_move=inf", _api(track_move=float("inf")), "--track-move must be > 0",
         check=_nothing_written),
    Case(PREDICT, "--max-gap negative", _predict("--max-gap", "-1"), "argument --max-gap: must be >= 0.0",
         check=_no_table),
    Case(PREDICT, "--max-gap nan", _predict("--max-gap", "nan"), "argument --max-gap: must be >= 0.0",
         check=_no_table),
    Case(PREDICT, "--max-gap above its bound", _predict("--max-gap", "1e12"), "<= 1000000.0", check=_no_table),
    Case(PREDICT, "API: max_gap=-2", _predict_api(-2.0), "--max-gap must be >= 0", check=_no_table),
    Case(PREDICT, "API: max_gap='1s'", _predict_api("1s"), "--max-gap must be >= 0", check=_no_table),
]
