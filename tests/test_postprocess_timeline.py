"""Smoothing runs over frames on every split: the validation scores of a video with an unlabelled stretch and
missing crops equal a brute-force reference (fill on the full timeline, smooth, then drop unlabelled frames),
and the k chosen on validation gives the same scores on the test split (`postprocess submit`) frame by frame.

Only APIs that predate the full-timeline layout are used to read the results (load_scores, fill_gaps,
box_filter, metrics.json, the submission file), so the same checks run against the old code fail there."""
import json

import numpy as np
import pytest

from classify.run import run
from features.store import ExtractorInfo, FeatureStore
from features.tasks import VA
from postprocess.cli import main as postprocess_main
from postprocess.gaps import fill_gaps
from postprocess.scores import load_scores, save_scores
from postprocess.smoothing import box_filter
from postprocess.sweep import sweep_k


def ref_fill(known: dict[int, np.ndarray], last: int) -> np.ndarray:
    """Frames 1..last: a frame with a score keeps it; any other takes the linear interpolation between the
    nearest scored frames before and after it (by frame number), or the nearest one at the video's edges."""
    out = []
    for f in range(1, last + 1):
        if f in known:
            out.append(known[f])
            continue
        before = [g for g in known if g < f]
        after = [g for g in known if g > f]
        if before and after:
            p, q = max(before), min(after)
            w = (f - p) / (q - p)
            out.append((1 - w) * known[p] + w * known[q])
        else:
            out.append(known[max(before)] if before else known[min(after)])
    return np.array(out, np.float64)


def ref_smooth(x: np.ndarray, k: int) -> np.ndarray:
    """Row i = mean of rows i-k .. i+k of the same video, the window cut at the video's edges."""
    return np.array([x[max(0, i - k):i + k + 1].mean(axis=0) for i in range(len(x))])


# ---- the postprocess side: a sparse validation split (labelled frames with a face only, as written before) --

def _sparse_val(tmp_path):
    """Two videos; in "a" frames 21..35 are unlabelled, 8..10 have no crop (not in the file at all) and 40..42
    no face; labelled frames 58..60 lie beyond the last crop."""
    rng = np.random.default_rng(0)
    n = {"a": 60, "b": 45}
    truth = {v: np.cumsum(rng.normal(0, 0.1, (m, 2)), axis=0).clip(-1, 1) for v, m in n.items()}
    raw = {v: (t + rng.normal(0, 0.3, t.shape)).clip(-1, 1) for v, t in truth.items()}
    crop = {"a": np.setdiff1d(np.arange(1, 58), [8, 9, 10]), "b": np.arange(1, 46)}
    face = {"a": ~np.isin(crop["a"], [40, 41, 42]), "b": np.ones(45, bool)}
    labelled = {"a": np.setdiff1d(np.arange(1, 61), np.arange(21, 36)), "b": np.arange(1, 46)}
    return n, truth, raw, crop, face, labelled


def test_sweep_on_sparse_validation_matches_brute_force_on_the_timeline(tmp_path):
    n, truth, raw, crop, face, labelled = _sparse_val(tmp_path)
    # what classify wrote before: labelled frames with a face only
    rows = [(v, f) for v in n for f in labelled[v] if f in set(crop[v][face[v]].tolist())]
    video = np.array([v for v, _ in rows])
    frame = np.array([f for _, f in rows])
    s = np.array([raw[v][f - 1] for v, f in rows], np.float32)
    y = np.array([truth[v][f - 1] for v, f in rows], np.float32)
    p = tmp_path / "scores.h5"
    save_scores(p, "val", video, frame, s, y=y, attrs={"task": "va"})
    ss = load_scores(p, "val")
    filled = fill_gaps(ss.scores, ss.face, ss.video, ss.frame)
    ks = [0, 1, 3, 7]
    table = sweep_k(VA, ss.y, filled, ss.video, ks)
    for k in ks:
        got, want, lab = [], [], []
        for v in n:
            keep = frame[video == v]
            known = {int(f): x.astype(np.float64) for f, x in zip(keep, s[video == v])}
            sm = ref_smooth(ref_fill(known, int(keep.max())), k)
            want.append(sm[keep - 1])
            lab.append(y[video == v])
            got.append(box_filter(filled, ss.video, k)[(ss.video == v) & np.isin(ss.frame, keep)])
        np.testing.assert_allclose(np.concatenate(got), np.concatenate(want), atol=1e-6)
        assert table.loc[table.k == k, "P_VA"].iloc[0] == pytest.approx(
            VA.score(np.concatenate(lab), np.concatenate(want)), abs=1e-6)


# ---- end to end: classify -> scores.h5 -> sweep -> submit ---------------------------------------------------

@pytest.fixture(scope="module")
def timeline_world(tmp_path_factory):
    """Cache + VA labels: 2 training videos, 2 validation videos as in `_sparse_val` (the va_only head scores a
    frame with the cached valence/arousal, so the reference needs no model)."""
    root = tmp_path_factory.mktemp("timeline")
    n, truth, raw, crop, face, labelled = _sparse_val(root)
    rng = np.random.default_rng(1)
    info = ExtractorInfo("enet", "0" * 64, 224, {}, {"embedding": 4, "va": 2}, embedding_dtype="float16")
    cache, labels = root / "features.h5", root / "labels"
    vids = {"t0": ("train", 50), "t1": ("train", 40), "a": ("val", 60), "b": ("val", 45)}
    with FeatureStore(cache, "a") as st:
        w = st.writer(info)
        for v, (split, m) in vids.items():
            if split == "train":
                t = np.cumsum(rng.normal(0, 0.1, (m, 2)), axis=0).clip(-1, 1)
                r, fr, fc, lab = (t + rng.normal(0, 0.3, t.shape)).clip(-1, 1), np.arange(1, m + 1), \
                    np.ones(m, bool), np.arange(1, m + 1)
            else:
                t, r, fr, fc, lab = truth[v], raw[v], crop[v], face[v], labelled[v]
            w.write_video(v, frame=fr, face=fc, embedding=rng.normal(size=(len(fr), 4)),
                          va=r[fr - 1].astype(np.float32))
            yv = np.full((m, 2), VA.invalid)
            yv[lab - 1] = t[lab - 1]
            d = labels / VA.folders[0] / {"train": "Train_Set", "val": "Validation_Set"}[split]
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{v}.txt").write_text(VA.header + "\n" + "".join(f"{a:.6f},{b:.6f}\n" for a, b in yv))
    (root / "test.txt").write_text("a\nb\n")
    # the organisers' list for the same videos: every frame, including 58..60 of "a" beyond its last crop
    (root / "samples.txt").write_text("image_location,valence,arousal\n" + "".join(
        f"{v}/{f:05d}.jpg\n" for v in ("a", "b") for f in range(1, n[v] + 1)))
    rd = run("va", cache, labels, ["va_only"], ["va_only=enet/va"], name="r", runs_dir=root / "runs",
             ks=[0, 1, 2, 3, 5, 8], test=root / "test.txt")
    ref_in = {v: {int(f): raw[v][f - 1].astype(np.float32).astype(np.float64)
                  for f in crop[v][face[v]]} for v in n}
    return root, rd, n, truth, labelled, ref_in


def _reference(n, ref_in, k, last):
    return {v: ref_smooth(ref_fill(ref_in[v], last[v]), k) for v in n}


def test_classify_validation_scores_equal_brute_force_on_the_full_timeline(timeline_world):
    root, rd, n, truth, labelled, ref_in = timeline_world
    m = json.loads((rd / "metrics.json").read_text())
    k = m["summary"]["k"]
    ss = load_scores(rd / "scores.h5", "val")
    smoothed = box_filter(fill_gaps(ss.scores, ss.face, ss.video, ss.frame), ss.video, k)
    ref = _reference(n, ref_in, k, {"a": 60, "b": 45})
    got, want, lab = [], [], []
    for v in n:
        rows = (ss.video == v) & np.isin(ss.frame, labelled[v])
        assert rows.sum() == len(labelled[v])             # every labelled frame scored, with a crop or not
        got.append(smoothed[rows])
        want.append(ref[v][labelled[v] - 1])
        lab.append(truth[v][labelled[v] - 1])
    np.testing.assert_allclose(np.concatenate(got), np.concatenate(want), atol=1e-5)
    assert m["summary"]["smoothed"] == pytest.approx(VA.score(np.concatenate(lab), np.concatenate(want)),
                                                     abs=1e-5)
    # the k chosen is the best over the candidates on the brute-force timeline too
    best = max([0, 1, 2, 3, 5, 8], key=lambda kk: VA.score(np.concatenate(lab), np.concatenate(
        [_reference(n, ref_in, kk, {"a": 60, "b": 45})[v][labelled[v] - 1] for v in n])))
    assert k == best and k > 0


def test_k_from_validation_gives_the_same_scores_on_the_test_split(timeline_world, capsys):
    root, rd, n, truth, labelled, ref_in = timeline_world
    assert postprocess_main(["sweep", "--run", str(rd), "--k", "0:8", "--cv", "0", "--timelines", "0"]) == 0
    cfg = json.loads((rd / "postprocess.json").read_text())
    k = cfg["k"]
    sub = root / "va_sub.txt"
    assert postprocess_main(["submit", "--run", str(rd), "--samples", str(root / "samples.txt"),
                             "--out", str(sub)]) == 0
    lines = sub.read_text().splitlines()[1:]
    got = {(ln.split(",")[0].split("/")[0], int(ln.split(",")[0].split("/")[1][:5])):
           np.array(ln.split(",")[1:], float) for ln in lines}
    ss = load_scores(rd / "scores.h5", "val")
    val = box_filter(fill_gaps(ss.scores, ss.face, ss.video, ss.frame), ss.video, k)
    ref = _reference(n, ref_in, k, {"a": 60, "b": 45})
    for v in n:
        for f in labelled[v]:
            i = np.flatnonzero((ss.video == v) & (ss.frame == f))[0]
            np.testing.assert_allclose(got[(v, f)], val[i], atol=2e-6)        # test == validation, same frame
            np.testing.assert_allclose(got[(v, f)], ref[v][f - 1], atol=2e-6)
    capsys.readouterr()
