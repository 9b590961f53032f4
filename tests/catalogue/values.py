"""Bad values in caches and inputs are never silent: NaN / inf in cached features (train, predict, the Python
API), video files that decode fewer frames than their container announces, `folders` sub-folders without an
image, and a device or a FIFO given where a file or folder is expected.

NaN / inf features are refused wherever a head reads them (features.finite), with one line naming the cache,
extractor, output, video and frame; the other three answer with a warning (kept in ``Result.err`` here) or one
error line.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np

from classify.__main__ import main as classify_main
from classify.run import run as classify_run
from extract.cli import main as extract_main
from features.labels import join, load_labels
from features.store import FeatureStore
from features.tasks import EXPR

from . import Case, Result, api, cli
from helpers import build_small_world as world, noise_video

from .classify import no_run_folder
from .extract import PixelExtractor
from .predict import no_output, shared_run

ROW = 5             # the damaged row of a video: frame ROW + 1 (the world's frames are 1..n)


# ------------------------------------------------------------------------- NaN / inf in cached features

def damaged(tmp: Path, shared: Path, output: str, value: float, video: str = "vid0000") -> Path:
    """A copy of the classify world's cache with `value` in one column of frame ROW + 1 of `video`."""
    import h5py
    out = tmp / "damaged.h5"
    shutil.copy(world(shared) / "features.h5", out)
    with h5py.File(out, "a") as f:
        g = f["extractors/enet"]
        k = list(g["video_names"].asstr()[()]).index(video)
        r = int(g["video_start"][k]) + ROW
        assert g["frame"][r] == ROW + 1 and g["face"][r]
        row = g[output][r]
        row[1] = value
        g[output][r] = row
    return out


def va_run(shared: Path) -> Path:
    """`shared/values/runs/va/r`: a VA run of the pre-trained valence/arousal outputs (no training)."""
    rd = shared / "values" / "runs" / "va" / "r"
    if not (rd / "metrics.json").exists():
        w = world(shared)
        classify_run("va", w / "features.h5", w / "labels", ["va_only"], name="r", runs_dir=shared / "values" / "runs",
                     ks=[0, 2])
    return rd


def predict(tmp: Path, cache: Path, *args) -> Result:
    return cli(classify_main, ["predict", *args, "--cache", cache, "--out", tmp / "p.csv", "--timelines", "0"])


def train(tmp: Path, shared: Path, cache: Path, heads: str, features: str) -> Result:
    return cli(classify_main, ["--task", "expr", "--cache", cache, "--labels", world(shared) / "labels",
                               "--heads", heads, "--features", features, "--runs-dir", tmp / "runs", "--k", "0:4:2"])


def join_api(tmp: Path, shared: Path) -> Result:
    cache = damaged(tmp, shared, "embedding", np.nan, "vid0001")
    labels = load_labels(world(shared) / "labels", EXPR, "train")
    with FeatureStore(cache) as s:
        return api(lambda: join(s, labels, EXPR, ["enet/embedding"]))


def _where(video: str = "vid0000") -> str:
    return f"holds NaN or infinite values (first: video '{video}', frame {ROW + 1})"


# ---------------------------------------------------------------------------------- warnings of a run

def logged(fn) -> Result:
    """`api(fn)` with the warnings of the `extract` loggers appended to ``err`` (the CLI prints them on stderr
    through logging, which ``cli``'s stderr capture does not see)."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")

    lg = logging.getLogger("extract")
    h, level = Keep(logging.WARNING), lg.level
    lg.addHandler(h)
    lg.setLevel(logging.WARNING)
    try:
        res = api(fn)
    finally:
        lg.removeHandler(h)
        lg.setLevel(level)
    res.err = "".join(f"{ln}\n" for ln in lines) + res.err
    return res


def extract_api(data: Path, out: Path, **kw) -> Result:
    from extract.faces import DetectorConfig
    from extract.runner import run
    from extract.sources import discover
    return logged(lambda: run(discover(data), [PixelExtractor()], out, workers=0, progress=False,
                              detector=DetectorConfig(detect="off"), **kw))


def encode(path: Path, n: int = 40, options: dict | None = None) -> Path:
    return noise_video(path, n, options)


def truncated(ext: str, options: dict | None = None):
    """A folder with a whole 40-frame video and one cut after half its bytes (header intact), extracted."""
    def go(tmp: Path, shared: Path) -> Result:
        d = tmp / "videos"
        d.mkdir()
        encode(d / f"whole{ext}", options=options)
        cut = encode(d / f"cut{ext}", options=options)
        b = cut.read_bytes()
        cut.write_bytes(b[:len(b) // 2])
        return extract_api(d, tmp / "c.h5")
    return go


def warned_short(ext: str):
    def check(tmp: Path, shared: Path, res: Result) -> None:
        m = re.search(rf"cut{re.escape(ext)}: decoded (\d+) of the 40 frames its container announces", res.err)
        assert m, f"no warning with the numbers: {res.err!r}"
        assert f"whole{ext}" not in res.err, res.err
        with FeatureStore(tmp / "c.h5") as s:
            assert s.read(["cut"], "pix").index.shape[0] == int(m.group(1)) < 39
            assert s.read(["whole"], "pix").index.shape[0] == 40
    return check


# ------------------------------------------------------------------------- folders without an image

def png(path: Path) -> None:
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(path)


def folders_with(tmp: Path, **subs: list[str]) -> Path:
    """`tmp/data/<sub>/<files>`: .png files are images, anything else is written as text."""
    d = tmp / "data"
    for sub, files in subs.items():
        (d / sub).mkdir(parents=True)
        for f in files:
            if f.endswith(".png"):
                png(d / sub / f)
            else:
                (d / sub / f).write_text("not an image")
    return d


def skipped_named(*expected: str):
    def check(tmp: Path, shared: Path, res: Result) -> None:
        for text in expected:
            assert text in res.err, f"{text!r} not in {res.err!r}"
        with FeatureStore(tmp / "c.h5") as s:
            assert s.videos("pix") == ["v1"]
    return check


# ------------------------------------------------------------------------------- special files

def fifo(tmp: Path) -> Path:
    p = tmp / "pipe"
    os.mkfifo(p)
    return p


def extract_data(tmp: Path, data: Path, *args) -> Result:
    return cli(extract_main, ["run", "--data", data, "--out", tmp / "c.h5", "--workers", "0", "--quiet", *args])


def no_cache(tmp: Path, shared: Path, res: Result) -> None:
    assert not (tmp / "c.h5").exists()


CASES = [
    Case("classify predict", "NaN in the cached logits the run's head reads",
         lambda tmp, shared: predict(tmp, damaged(tmp, shared, "logits", np.nan), "--run", shared_run(shared)),
         expect=f"output 'logits': 1 frame with a face in 1 video {_where()}", check=no_output,
         defect="traceback"),
    Case("classify predict", "inf in the cached valence/arousal of a va_only run",
         lambda tmp, shared: predict(tmp, damaged(tmp, shared, "va", np.inf), "--run", va_run(shared)),
         expect=f"output 'va': 1 frame with a face in 1 video {_where()}", check=no_output, defect="silent"),
    Case("classify predict", "--pretrained on cached logits holding -inf",
         lambda tmp, shared: predict(tmp, damaged(tmp, shared, "logits", -np.inf), "--pretrained", "enet"),
         expect=f"damaged.h5: extractor 'enet', output 'logits': 1 frame with a face in 1 video {_where()}",
         check=no_output, defect="silent"),
    Case("classify", "inf in the cached logits of a training video",
         lambda tmp, shared: train(tmp, shared, damaged(tmp, shared, "logits", np.inf), "logits",
                                   "logits=enet/logits"),
         expect=f"output 'logits': 1 frame with a face in 1 video {_where()}", check=no_run_folder(),
         defect="misleading"),
    Case("classify", "NaN in the cached embedding of a validation video",
         lambda tmp, shared: train(tmp, shared, damaged(tmp, shared, "embedding", np.nan, "vid0004"), "mlp",
                                   "mlp=enet/embedding"),
         expect=f"output 'embedding': 1 frame with a face in 1 video {_where('vid0004')}", check=no_run_folder(),
         defect="misleading"),
    Case("features join (API)", "NaN in the cached embedding of a labelled video", join_api,
         expect=f"output 'embedding': 1 frame with a face in 1 video {_where('vid0001')}", defect="silent"),

    Case("extract run (API)", "an mp4 (frame count in its header) cut after half its bytes",
         truncated(".mp4", {"movflags": "faststart"}), expect=None, check=warned_short(".mp4"), defect="silent"),
    Case("extract run (API)", "an avi (frame count in its header) cut after half its bytes", truncated(".avi"),
         expect=None, check=warned_short(".avi"), defect="silent"),
    Case("extract run (API)", "an mkv (duration in its header) cut after half its bytes", truncated(".mkv"),
         expect=None, check=warned_short(".mkv"), defect="silent"),

    Case("extract run (API)", "layout folders with an empty sub-folder",
         lambda tmp, shared: extract_api(folders_with(tmp, v1=["1.png", "2.png"], v2=[]), tmp / "c.h5"),
         expect=None, check=skipped_named("1 sub-folder holds no image", "v2 (empty)"), defect="silent"),
    Case("extract run (API)", "layout folders with sub-folders of other files",
         lambda tmp, shared: extract_api(folders_with(tmp, v1=["1.png"], notes=["a.txt", "b.csv"], raw=["c.mp3"]),
                                         tmp / "c.h5"),
         expect=None, check=skipped_named("2 sub-folders hold no image", "notes (2 other entries)",
                                          "raw (1 other entry)"), defect="silent"),
    Case("extract run", "layout folders where no sub-folder holds an image",
         lambda tmp, shared: extract_data(tmp, folders_with(tmp, a=[], b=["x.txt"]), "--layout", "folders"),
         expect="no videos found (layout folders); 2 sub-folders hold no image (jpg, png, ...) and are skipped: "
                "a (empty), b (1 other entry)", check=no_cache, defect="misleading"),

    Case("extract run", "--data /dev/zero", lambda tmp, shared: extract_data(tmp, Path("/dev/zero")),
         expect="/dev/zero: the data path is a character device, not a regular file or folder", check=no_cache,
         defect="misleading"),
    Case("extract run", "--data a FIFO", lambda tmp, shared: extract_data(tmp, fifo(tmp)),
         expect="pipe: the data path is a named pipe (FIFO), not a regular file or folder", check=no_cache,
         defect="misleading"),
    Case("extract run", "--layout videos --data a FIFO",
         lambda tmp, shared: extract_data(tmp, fifo(tmp), "--layout", "videos"),
         expect="the data path is a named pipe (FIFO)", check=no_cache, defect="misleading"),
    Case("classify", "--labels a FIFO",
         lambda tmp, shared: cli(classify_main, ["--task", "expr", "--cache", world(shared) / "features.h5", "--labels",
                                                 fifo(tmp), "--heads", "logits", "--runs-dir", tmp / "runs"]),
         expect="pipe: --labels is a named pipe (FIFO), not a regular file or folder", check=no_run_folder(),
         defect="misleading"),
    Case("classify predict", "--source a FIFO",
         lambda tmp, shared: predict(tmp, world(shared) / "features.h5", "--run", shared_run(shared), "--source",
                                     fifo(tmp)),
         expect="--source is a named pipe (FIFO), not a regular file or folder", check=no_output,
         defect="misleading"),
]
