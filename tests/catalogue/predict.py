"""Bad input to `python -m classify predict`: run folders, caches, videos, output names, --pretrained.

One shared run (the logits rule on the classify catalogue's world, about a second) serves every case; each case
copies what it damages into its own folder.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from classify.__main__ import main
from classify.run import run
from features.store import ExtractorInfo, FeatureStore
from helpers import build_small_world

from . import Case, Result, cli


def shared_run(shared: Path) -> Path:
    """`shared/predict/runs/expr/r`: an EXPR run on the classify world's cache (extractor enet)."""
    d = shared / "predict"
    rd = d / "runs" / "expr" / "r"
    if not (rd / "metrics.json").exists():
        w = build_small_world(shared)
        run("expr", w / "features.h5", w / "labels", ["logits"], name="r", runs_dir=d / "runs", ks=[0, 2])
    return rd


def predict(tmp: Path, shared: Path, *args, run_dir: Path | None = None, cache: Path | None = None,
            out: str = "p.csv") -> Result:
    w = build_small_world(shared)
    rd = shared_run(shared) if run_dir is None else run_dir
    argv = ["predict", *(["--run", rd] if "--pretrained" not in args else []),
            "--cache", cache or w / "features.h5", "--out", tmp / out, "--timelines", "0", *args]
    return cli(main, argv)


def copy_run(tmp: Path, shared: Path) -> Path:
    rd = tmp / "runs" / "expr" / "r"
    shutil.copytree(shared_run(shared), rd)
    return rd


def other_cache(tmp: Path, shared: Path, name: str = "enet", sha: str = "1" * 64, logits: bool = True) -> Path:
    """One video of the world's cache under another checkpoint hash (or another extractor name)."""
    src = FeatureStore(build_small_world(shared) / "features.h5")
    info = src.info("enet")
    v = src.videos("enet")[0]
    outs = {"embedding": info.outputs["embedding"], **({"logits": 8} if logits else {})}
    blk = src.read([v], "enet", tuple(outs))
    with FeatureStore(tmp / "other.h5", "a") as s:
        s.writer(ExtractorInfo(name, sha, info.input_size, info.normalization, outs, extra=info.extra)).write_video(
            v, blk.index["frame"].to_numpy(), blk.index["face"].to_numpy(), blk.arrays["enet/embedding"],
            blk.arrays["enet/logits"] if logits else None)
    return tmp / "other.h5"


def no_output(tmp: Path, shared: Path, res: Result) -> None:
    left = sorted(p.name for p in tmp.iterdir() if p.name.startswith(("p.", ".p.")))
    assert not left, left


def kept(tmp: Path, shared: Path, res: Result) -> None:
    assert (tmp / "p.csv").read_text() == "mine\n"


def existing_out(tmp: Path, shared: Path) -> Result:
    (tmp / "p.csv").write_text("mine\n")
    return predict(tmp, shared)


def without_heads(tmp: Path, shared: Path) -> Result:
    rd = copy_run(tmp, shared)
    shutil.rmtree(rd / "heads")
    return predict(tmp, shared, run_dir=rd)


def tampered_head(tmp: Path, shared: Path) -> Result:
    rd = copy_run(tmp, shared)
    f = rd / "heads" / "logits" / "other.npz"
    b = f.read_bytes()
    f.write_bytes(b[:-1] + bytes([b[-1] ^ 1]))
    return predict(tmp, shared, run_dir=rd)


def bad_metrics(tmp: Path, shared: Path) -> Result:
    rd = copy_run(tmp, shared)
    (rd / "metrics.json").write_text("{not json")
    return predict(tmp, shared, run_dir=rd)


def failed_run(tmp: Path, shared: Path) -> Result:
    rd = copy_run(tmp, shared)
    failed = rd.with_name("r.failed")
    rd.rename(failed)
    (failed / "FAILED.txt").write_text("RuntimeError: boom\n")
    return predict(tmp, shared, run_dir=failed)


def bad_postprocess(tmp: Path, shared: Path) -> Result:
    rd = copy_run(tmp, shared)
    (rd / "postprocess.json").write_text(json.dumps({"task": "expr", "k": -3}))
    return predict(tmp, shared, run_dir=rd)


def lama_without_allow_pickle(tmp: Path, shared: Path) -> Result:
    """A run whose final head is LightAutoML (a pickle): refused before anything is unpickled."""
    rd = copy_run(tmp, shared)
    h = rd / "heads" / "lama"
    h.mkdir()
    (h / "lama.pkl").write_bytes(b"not unpickled")
    (h / "head.json").write_text(json.dumps({"kind": "lama", "task": "expr", "params": {},
                                             "feature_set": "enet/logits", "sha256": {}}))
    m = json.loads((rd / "metrics.json").read_text())
    (rd / "metrics.json").write_text(json.dumps({**m, "final": "lama"}))
    return predict(tmp, shared, run_dir=rd)


def table_written(tmp: Path, shared: Path, res: Result) -> None:
    import pandas as pd
    t = pd.read_csv(tmp / "p.csv")
    assert len(t) > 0 and t["label"].notna().all() and np.isfinite(t["Neutral"]).all()


CASES = [
    Case("classify predict", "a run and a cache made by its extractors", lambda tmp, shared: predict(tmp, shared),
         expect=None, check=table_written),
    Case("classify predict", "run folder missing",
         lambda tmp, shared: predict(tmp, shared, run_dir=tmp / "runs" / "expr" / "nope"),
         expect="run folder not found", check=no_output),
    Case("classify predict", "run without heads", without_heads, expect="final head 'logits' was not saved",
         check=no_output),
    Case("classify predict", "head file changed since training", tampered_head,
         expect="sha256 differs from the one recorded", check=no_output),
    Case("classify predict", "LightAutoML head without --allow-pickle", lama_without_allow_pickle,
         expect="--allow-pickle", check=no_output),
    Case("classify predict", "metrics.json not JSON", bad_metrics, expect="not valid JSON", check=no_output),
    Case("classify predict", "a failed run", failed_run, expect="this run failed", check=no_output),
    Case("classify predict", "postprocess.json with a negative k", bad_postprocess, expect="postprocess.json",
         check=no_output),
    Case("classify predict", "cache from another checkpoint",
         lambda tmp, shared: predict(tmp, shared, cache=other_cache(tmp, shared)),
         expect="extractor 'enet' differs from the one run", check=no_output),
    Case("classify predict", "cache without the run's extractor",
         lambda tmp, shared: predict(tmp, shared, cache=other_cache(tmp, shared, name="fer")),
         expect="the cache holds no features of extractor 'enet'", check=no_output),
    Case("classify predict", "cache file missing",
         lambda tmp, shared: predict(tmp, shared, cache=tmp / "nothing.h5"), expect="nothing.h5", check=no_output),
    Case("classify predict", "unknown video", lambda tmp, shared: predict(tmp, shared, "--videos", "nope"),
         expect="video 'nope' is not in the cache", check=no_output),
    Case("classify predict", "bad --out extension", lambda tmp, shared: predict(tmp, shared, out="p.txt"),
         expect="--out must end in .csv or .parquet", check=no_output),
    Case("classify predict", "--out exists", existing_out, expect="output exists", check=kept),
    Case("classify predict", "--out missing", lambda tmp, shared: cli(main, ["predict", "--run", "x"]),
         expect="--out"),
    Case("classify predict", "--run and --pretrained together",
         lambda tmp, shared: predict(tmp, shared, "--run", shared_run(shared), "--pretrained", "enet"),
         expect="not allowed with argument", check=no_output),
    Case("classify predict", "--pretrained on an extractor without logits",
         lambda tmp, shared: predict(tmp, shared, "--pretrained", "fer",
                                     cache=other_cache(tmp, shared, name="fer", logits=False)),
         expect="has no class logits", check=no_output),
    Case("classify predict", "--pretrained on an extractor the cache lacks",
         lambda tmp, shared: predict(tmp, shared, "--pretrained", "nope"),
         expect="the cache holds no extractor of that name", check=no_output),
    Case("classify predict", "--fps 0", lambda tmp, shared: predict(tmp, shared, "--fps", "0"),
         expect="--fps must be a positive frame rate", check=no_output),
    Case("classify predict", "--k -1", lambda tmp, shared: predict(tmp, shared, "--k", "-1"),
         expect="--k", check=no_output),
    Case("classify predict", "--timelines abc", lambda tmp, shared: predict(tmp, shared, "--timelines", "abc"),
         expect="--timelines: a number of videos or 'all'", check=no_output),
    Case("classify predict", "--source missing", lambda tmp, shared: predict(tmp, shared, "--source", tmp / "no.mp4"),
         expect="--source: no such video file or folder", check=no_output),
]
