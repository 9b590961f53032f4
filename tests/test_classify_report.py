"""Honest headline numbers: the video-level cross-validated estimate of what a run tunes on validation
(classify.crossval), and the rows and markdown that label each number (classify.report)."""
from types import SimpleNamespace

import numpy as np
import pytest

from classify import crossval, report
from classify.run import smoothing
from features.tasks import AU, EXPR, VA
from postprocess.scores import timeline_scores


def _timeline(n_videos: int, frames: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    video = np.repeat([f"v{i}" for i in range(n_videos)], frames)
    frame = np.tile(np.arange(1, frames + 1), n_videos)
    face = rng.random(len(video)) > 0.1                      # some frames without a face: filled from neighbours
    return rng, video, frame, face


def _with_gaps(scores: np.ndarray, face: np.ndarray) -> np.ndarray:
    s = scores.astype(np.float32).copy()
    s[~face] = np.nan
    return s


def test_nothing_chosen_gives_the_in_sample_number():
    """One member, k fixed, VA: nothing is chosen per fold, so the pooled held-out metric is the run's number."""
    rng, video, frame, face = _timeline(7, 60)
    y = np.clip(rng.normal(0, 0.5, (len(video), 2)), -1, 1).astype(np.float32)
    s = _with_gaps(np.clip(y + rng.normal(0, 0.4, y.shape), -1, 1), face)
    est = crossval.cross_validated(VA, y, video, frame, face, {"m": s}, 3)
    sm = smoothing(VA, timeline_scores("va", video, frame, s, face, y), 3)
    assert est.n_splits == 5 and est.fold_k == [3] * 5
    assert est.metric == pytest.approx(sm["metric_smoothed"], abs=1e-9)


@pytest.mark.parametrize("task", [EXPR, AU])
def test_tuning_on_noise_is_optimistic_in_sample_and_not_in_cv(task):
    """Scores that know nothing of the labels: k and AU thresholds tuned on validation look better than chance
    in-sample; the cross-validated estimate of the same choices does not (it is below the in-sample one)."""
    rng, video, frame, face = _timeline(8, 80, seed=1)
    if task is EXPR:
        y = rng.integers(0, 8, len(video))
        s = rng.dirichlet(np.ones(8), len(video))
    else:
        y = (rng.random((len(video), 12)) < 0.2).astype(np.int64)
        s = rng.random((len(video), 12))
    s = _with_gaps(s, face)
    ks = list(range(0, 21, 2))
    sm = smoothing(task, timeline_scores(task.name, video, frame, s, face, y), ks)
    in_sample = sm.get("metric_smoothed_thresholds", sm["metric_smoothed"])
    est = crossval.cross_validated(task, y, video, frame, face, {"m": s}, ks)
    assert est.metric < in_sample
    assert len(est.fold_k) == 5 and all(k in ks for k in est.fold_k)


def test_blend_weights_are_chosen_per_fold():
    """A blend of a useful member and a noise member: weights re-chosen on each fold's training videos, and the
    estimate scores held-out videos with weights that never saw them (it cannot beat the in-sample blend)."""
    from classify.blend import BlendHead
    rng, video, frame, face = _timeline(6, 80, seed=2)
    y = rng.integers(0, 8, len(video))
    good = np.eye(8)[y] * 0.6 + rng.dirichlet(np.ones(8), len(video)) * 0.8
    noise = rng.dirichlet(np.ones(8), len(video))
    members = {"good": _with_gaps(good, face), "noise": _with_gaps(noise, face)}
    est = crossval.cross_validated(EXPR, y, video, frame, face, members, 0, blend=True)
    assert len(est.fold_weights) == 5 and all(abs(sum(w) - 1) < 1e-6 for w in est.fold_weights)
    assert all(w[0] >= w[1] for w in est.fold_weights)          # the useful member dominates every fold
    b = BlendHead(EXPR).fit({k: v[face] for k, v in members.items()}, y[face])
    in_sample = smoothing(EXPR, timeline_scores("expr", video, frame, b.predict_proba(members), face, y), 0)
    assert est.metric <= in_sample["metric_smoothed"] + 1e-12


def test_folds_split_labelled_videos_only():
    rng, video, frame, face = _timeline(6, 10)
    y = rng.integers(0, 8, len(video))
    y[video == "v5"] = EXPR.invalid                              # a video without a labelled frame
    fold = crossval.video_folds(EXPR, y, video, 5)
    assert (fold[video == "v5"] == -1).all()
    for v in np.unique(video[video != "v5"]):
        assert len(np.unique(fold[video == v])) == 1              # a video is never split
    assert sorted(np.unique(fold[fold >= 0])) == [0, 1, 2, 3, 4]


def test_too_few_videos_gives_no_number_and_says_why():
    rng, video, frame, face = _timeline(4, 30)
    y = rng.integers(0, 8, len(video))
    est = crossval.cross_validated(EXPR, y, video, frame, face, {"m": rng.random((len(video), 8))}, [0, 2])
    assert est.metric is None and est.n_splits == 0
    assert est.note == ("the validation set is too small for a video-level cross-validated estimate "
                        "(4 labelled videos; it needs at least 5)")


def test_fold_rows_mean_and_std():
    head = SimpleNamespace(fold_scores_=[0.1, 0.3, 0.2], fold_videos_=[3, 3, 4])
    rows = report.fold_rows("mlp", "a/embedding", head, 3)
    assert [r["metric_raw"] for r in rows[:3]] == [0.1, 0.3, 0.2]
    mean = rows[3]
    assert mean["method"] == "mlp mean ± std of 3 folds"
    assert mean["metric_raw"] == pytest.approx(np.mean([0.1, 0.3, 0.2]))
    assert mean["metric_raw_std"] == pytest.approx(np.std([0.1, 0.3, 0.2], ddof=1))
    assert report.fold_rows("mlp", "a/embedding", SimpleNamespace(), None) == []


def test_markdown_marks_in_sample_cells_and_carries_the_estimate():
    tuned = ["weights"] + report.tuned_after(AU, [0, 2])
    assert tuned == ["weights", "k", "thresholds"]
    est = crossval.CVEstimate(0.41234, 5, 6)
    blend = dict(method="blend (0.5·a + 0.5·b)", feature_set="x & y", ensemble="yes", metric_raw=0.5, k=2,
                 metric_smoothed=0.55, metric_smoothed_thresholds=0.6, **report.row_fields(AU, tuned, False, est),
                 scored_on="val (6 videos)")
    member = dict(method="a", feature_set="x", ensemble="no", metric_raw=0.45, k=2, metric_smoothed=0.5,
                  metric_smoothed_thresholds=0.52, **report.row_fields(AU, ["k", "thresholds"], False, est),
                  scored_on="val (6 videos)")
    md = report.markdown(AU, [member, blend], False, 6, {"a": est, "blend": est})
    lines = {ln.split("|")[1].strip(): [c.strip() for c in ln.strip("|").split("|")] for ln in md.splitlines()
             if ln.startswith("| ") and not ln.startswith("| Method")}
    assert lines["a"][3:8] == ["0.4500", "2", "0.5000 (in-sample)", "0.5200 (in-sample)", "0.4123"]
    assert lines["blend (0.5·a + 0.5·b)"][3] == "0.5000 (in-sample)"
    assert "video-level CV" in md and "too small" not in md
    small = crossval.CVEstimate(None, 0, 2, note=crossval.too_small_note(2))
    member["metric_cv"] = None
    md = report.markdown(AU, [member], False, 2, {"a": small})
    assert "| n/a |" in md and "No cross-validated estimate (n/a): the validation set is too small" in md
    line = report.honesty_line(member, small, False, 2)
    assert line.startswith("in-sample (k, thresholds chosen on these 2 validation videos)") and "too small" in line
    tv = report.row_fields(VA, ["k"], True, None)
    assert tv["in_sample"] == "metric_raw, metric_smoothed" and "training (--train-val)" in tv["tuned_on_val"]
    assert not report.needs_cv(["k"], True) and not report.needs_cv(["epoch"], False)


def test_run_labels_every_number(tmp_path, caplog):
    """A k-fold run of two VA rules and their blend on 6 validation videos: the fold mean row is the mean of the
    fold rows (± their std), the OOF rows say so, the blend's numbers are marked in-sample in results.md with
    the cross-validated estimate beside them, and the log says the same."""
    import json
    import logging

    from catalogue.honest import honest_world
    from classify.run import run
    w = honest_world(tmp_path)
    caplog.set_level(logging.INFO)
    d = run("va", w / "features.h5", w / "labels", ["va_only", "blend"], ["va_only=enet/va", "va_only=enet2/va"],
            runs_dir=tmp_path / "runs", ks=[0, 2, 4], opts={"kfold": 3})
    lines = caplog.messages
    m = json.loads((d / "metrics.json").read_text())
    md = (d / "results.md").read_text()
    for member in ("va_only-enet.va", "va_only-enet2.va"):
        folds = [r["metric_raw"] for r in m["heads"] if r["method"].startswith(f"{member} fold ")]
        mean = next(r for r in m["heads"] if r["method"] == f"{member} mean ± std of 3 folds")
        assert len(folds) == 3 and mean["metric_raw"] == pytest.approx(np.mean(folds), abs=1e-4)
        assert mean["metric_raw_std"] == pytest.approx(np.std(folds, ddof=1), abs=1e-4)
        assert f"| {member} mean ± std of 3 folds | enet" in md and f"{mean['metric_raw']:.4f} ± " in md
        main = next(r for r in m["heads"] if r["method"] == member)
        assert "out-of-fold" in main["scored_on"] and main["in_sample"] == "metric_smoothed"
    s = m["summary"]
    assert m["final"] == "blend" and s["in_sample"] == ["frame_level", "smoothed"]
    assert s["cross_validated"] == pytest.approx(s["cross_validation"]["metric"], abs=1e-4)
    blend_line = next(ln for ln in md.splitlines() if ln.startswith("| blend ("))
    assert blend_line.count("(in-sample)") == 2 and f"| {s['cross_validated']:.4f} |" in blend_line
    assert "in-sample (weights, k chosen on these 6 validation videos); video-level 5-fold CV estimate" in lines[-1]
