"""Headline numbers that say what they are: k-fold rows, numbers tuned on the videos they are scored on, and one
pixel convention for every extractor runtime.

The classify cases run on a world of their own with enough validation videos for a video-level
cross-validated estimate (`honest_world`: 3 train + 6 validation videos, two extractors whose valence/arousal
outputs are the labels plus noise, so rule heads blend without training) and on the classify catalogue's world,
whose 2 validation videos are too few for one.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from classify.__main__ import main
from classify.rules import AFFECTNET8
from features.store import ExtractorInfo, FeatureStore
from features.synthetic import make_feature_data
from features.tasks import AU, EXPR, VA

from . import Case, Result, api, cli
from .classify import classify as small_classify
from .classify import write_labels

N_VIDEOS, N_TRAIN = 9, 3


def honest_world(shared: Path) -> Path:
    """`shared/honest`: features.h5 with extractors enet and enet2 (embedding 8, logits 8, va 2; va = labels
    plus noise of sd 0.3 and 0.6) and labels/ for the three tasks: 3 train and 6 validation videos."""
    root = shared / "honest"
    if (root / "done").exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    d = make_feature_data(900, 8, N_VIDEOS, seed=5, noise=1.0)
    rng = np.random.default_rng(1)
    with FeatureStore(root / "features.h5", "a") as s:
        writers = {}
        for name, sd in (("enet", 0.3), ("enet2", 0.6)):
            info = ExtractorInfo(name, name[-1] * 64, 224, {}, {"embedding": 8, "logits": 8, "va": 2},
                                 extra={"class_names": list(AFFECTNET8)})
            logits = rng.normal(0, 1, (len(d.X), 8)).astype(np.float32)
            logits[np.arange(len(d.X)), np.array([5, 0, 2, 3, 4, 6, 7, 1])[d.y_expr]] += 1.5 / (1 + sd)
            va = np.clip(d.y_va + rng.normal(0, sd, d.y_va.shape), -1, 1).astype(np.float32)
            writers[name] = (s.writer(info), logits, va)
        for i, vname in enumerate(d.video_names):
            r = d.video == i
            split = "train" if i < N_TRAIN else "val"
            for task, y in ((EXPR, d.y_expr), (VA, d.y_va), (AU, d.y_au)):
                write_labels(root / "labels", task, split, vname, y[r])
            for w, logits, va in writers.values():
                w.write_video(vname, frame=d.frame[r].astype(np.int64), face=np.ones(r.sum(), bool),
                              embedding=d.X[r], logits=logits[r], va=va[r])
    (root / "done").touch()
    return root


def classify(tmp: Path, shared: Path, *args) -> Result:
    w = honest_world(shared)
    return cli(main, ["--cache", w / "features.h5", "--labels", w / "labels", "--runs-dir", tmp / "runs", *args])


def _run(tmp: Path, task: str) -> tuple[dict, str]:
    d = tmp / "runs" / task / "latest"
    return json.loads((d / "metrics.json").read_text()), (d / "results.md").read_text()


def _md_row(md: str, method: str) -> list[str]:
    line = next(ln for ln in md.splitlines() if ln.startswith((f"| {method} |", f"| {method} (")))
    return [c.strip() for c in line.strip("|").split("|")]


# -- k-fold: every number labelled for what it is, and the real mean of the folds ------------------------------

def kfold_rows(tmp: Path, shared: Path, res: Result) -> None:
    m, md = _run(tmp, "expr")
    folds = [r for r in m["heads"] if " fold " in r["method"] and "mean" not in r["method"]]
    mean = next(r for r in m["heads"] if "mean ± std of 3 folds" in r["method"])
    vals = [r["metric_raw"] for r in folds]
    assert len(folds) == 3 and abs(mean["metric_raw"] - np.mean(vals)) <= 1e-4, (mean, vals)
    assert abs(mean["metric_raw_std"] - np.std(vals, ddof=1)) <= 1e-4
    main_row = m["heads"][0]
    assert "out-of-fold" in main_row["scored_on"] and "mean of" not in main_row["ensemble"]
    assert "± " in md and "out-of-fold" in md and "frame-level out-of-fold" in res.log


def kfold_fixed_k(tmp: Path, shared: Path, res: Result) -> None:
    """--k 2 --kfold 3 on VA: nothing tuned on validation, so nothing in-sample; the fold mean is the mean."""
    m, md = _run(tmp, "va")
    folds = [r["metric_raw"] for r in m["heads"] if " fold " in r["method"] and "mean" not in r["method"]]
    mean = next(r for r in m["heads"] if " mean ± std of " in r["method"])
    assert abs(mean["metric_raw"] - np.mean(folds)) <= 1e-4 and mean["metric_raw_std"] >= 0
    assert "(in-sample)" not in md and m["summary"]["in_sample"] == []


# -- numbers tuned on the videos they are scored on ------------------------------------------------------------

def blend_cv(tmp: Path, shared: Path, res: Result) -> None:
    m, md = _run(tmp, "va")
    s = m["summary"]
    assert m["final"] == "blend" and s["in_sample"] == ["frame_level", "smoothed"], s
    assert isinstance(s["cross_validated"], float) and s["cross_validation"]["folds"] == 5
    assert len(s["cross_validation"]["fold_weights"]) == 5
    cells = _md_row(md, "blend")
    assert cells[3].endswith("(in-sample)") and cells[5].endswith("(in-sample)"), cells
    assert cells[6] == f"{s['cross_validated']:.4f}", cells
    assert "video-level CV" in md and "video-level 5-fold CV estimate" in res.out


def thresholds_cv(tmp: Path, shared: Path, res: Result) -> None:
    m, md = _run(tmp, "au")
    s = m["summary"]
    assert "smoothed_thresholds" in s["in_sample"] and isinstance(s["cross_validated"], float), s
    cells = _md_row(md, m["final"])
    assert cells[6].endswith("(in-sample)") and cells[7] == f"{s['cross_validated']:.4f}", cells


def too_small(task: str):
    def check(tmp: Path, shared: Path, res: Result) -> None:
        m, md = _run(tmp, task)
        s = m["summary"]
        assert s["in_sample"] and s["cross_validated"] is None, s
        note = s["cross_validation"]["note"]
        assert "too small for a video-level cross-validated estimate (2 labelled videos" in note, note
        assert "(in-sample)" in md and "No cross-validated estimate" in md and "too small" in md
        assert "too small" in res.out and "in-sample" in res.out
    return check


# -- one pixel convention: floats in [0, 1], uint8 in [0, 255], every runtime ----------------------------------

def _tiny_torch():
    import torch

    from extract.base import TorchExtractor
    torch.manual_seed(0)
    body = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten())

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = body

        def forward(self, x):
            return {"embedding": self.body(x)}
    return TorchExtractor("tiny", Net(), 32, {"embedding": 4}, checkpoint_sha256="c" * 64)


def onnx_float_frames(tmp: Path, shared: Path) -> Result:
    """The same float [0, 1] frames through a torch extractor and its onnxruntime twin."""
    from extract.models.onnx_twin import from_torch
    frames = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype(np.float32) / 255
    out = {}

    def go():
        ext = _tiny_torch()
        out["torch"], out["onnx"] = ext(frames)["embedding"], from_torch(ext)(frames)["embedding"]
    res = api(go)
    if not res.traceback and "torch" in out:
        (tmp / "diff.txt").write_text(repr(float(np.abs(out["torch"] - out["onnx"]).max())))
    return res


def same_outputs(tmp: Path, shared: Path, res: Result) -> None:
    diff = float((tmp / "diff.txt").read_text())
    assert diff < 1e-4, f"torch and onnxruntime disagree on the same float frames by {diff}"


def float_0_255(runtime: str):
    """[0, 255] floats (a common slip): refused with one line, not taken for something else."""
    def run(tmp: Path, shared: Path) -> Result:
        frames = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype(np.float32)

        def go():
            ext = _tiny_torch()
            if runtime == "onnxruntime":
                from extract.models.onnx_twin import from_torch
                ext = from_torch(ext)
            ext(frames)
        return api(go)
    return run


CASES = [
    Case("classify", "--kfold 3: the fold mean row is the mean of the fold rows, the OOF row says out-of-fold",
         lambda tmp, shared: classify(tmp, shared, "--task", "expr", "--heads", "logits", "--k", "0:4:2",
                                      "--kfold", "3"),
         expect=None, check=kfold_rows, defect="misleading"),
    Case("classify", "--kfold 3 with a fixed --k on VA rules: mean ± std of the folds, nothing in-sample",
         lambda tmp, shared: classify(tmp, shared, "--task", "va", "--heads", "va_only", "--k", "2", "--kfold", "3"),
         expect=None, check=kfold_fixed_k, defect="misleading"),
    Case("classify", "blend weights and k chosen on 6 validation videos: in-sample, with the CV estimate beside",
         lambda tmp, shared: classify(tmp, shared, "--task", "va", "--heads", "va_only,blend", "--features",
                                      "va_only=enet/va,va_only=enet2/va", "--k", "0:6:2"),
         expect=None, check=blend_cv, defect="misleading"),
    Case("classify", "AU thresholds tuned on 6 validation videos: in-sample, with the CV estimate beside",
         lambda tmp, shared: classify(tmp, shared, "--task", "au", "--heads", "fusion_mlp", "--epochs", "1",
                                      "--k", "0:4:2"),
         expect=None, check=thresholds_cv, defect="misleading"),
    Case("classify", "k chosen on 2 validation videos: in-sample, too small for a CV estimate, said so",
         lambda tmp, shared: small_classify(tmp, shared, "--task", "expr", heads="logits"),
         expect=None, check=too_small("expr"), defect="misleading"),
    Case("classify", "AU thresholds tuned on 2 validation videos: in-sample, too small for a CV estimate, said so",
         lambda tmp, shared: small_classify(tmp, shared, "--task", "au", "--epochs", "1", heads="fusion_mlp"),
         expect=None, check=too_small("au"), defect="misleading"),
    Case("extract api", "float [0, 1] frames give the same features through onnxruntime as through torch",
         onnx_float_frames, expect=None, check=same_outputs, defect="silent"),
    Case("extract api", "float [0, 255] frames to a torch extractor", float_0_255("torch"),
         expect="float batch must hold pixels in [0, 1]", defect="silent"),
    Case("extract api", "float [0, 255] frames to an onnxruntime extractor", float_0_255("onnxruntime"),
         expect="float batch must hold pixels in [0, 1]", defect="silent"),
]
