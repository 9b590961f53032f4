"""The synthetic data set: exact Aff-Wild2 layout, determinism, labels that follow the controls, faces that
follow the AUs, and feature-level data with a learnable signal. Files are read back with plain pandas (not
features.labels) so the two modules check each other."""
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from features.errors import InputError
from features.synthetic import (PROTOTYPES, _f16_into, iter_feature_videos, make_affwild, make_controls,
                                make_feature_data, random_identity, render_face)
from features.tasks import AU, EXPR, VA

NAME = re.compile(r"(\d+-\d+-\d+x\d+|video\d+_\d+|\d+)(_left|_right)?")
FOLDER = {"train": "Train_Set", "val": "Validation_Set"}
AU_I = {n: i for i, n in enumerate(AU.labels)}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    return make_affwild(root, n_train=4, n_val=2, n_frames=60, size=64, seed=3, n_test=2)


def test_crops_are_one_based_five_digit_jpegs_with_gaps(synth):
    for split, videos in synth.splits.items():
        for v in videos:
            n = len(synth.controls[v])
            names = {p.name for p in (synth.root / "cropped" / v).iterdir()}
            assert all(re.fullmatch(r"\d{5}\.jpg", x) for x in names)
            missing = synth.missing_crops[v]
            assert 1 <= len(missing) < n and missing.min() > 1 and missing.max() <= n
            assert names == {f"{i:05d}.jpg" for i in range(1, n + 1)} - {f"{i:05d}.jpg" for i in missing}
    im = Image.open(synth.root / "cropped" / synth.splits["val"][0] / "00001.jpg")
    assert im.format == "JPEG" and im.mode == "RGB" and im.size == (64, 64)


def test_video_names_and_the_left_right_pair(synth):
    train = synth.splits["train"]
    every = [v for vs in synth.splits.values() for v in vs]
    assert len(train) == 5 and len(synth.splits["val"]) == 2 and len(synth.splits["test"]) == 2
    assert len(set(every)) == len(every) and all(NAME.fullmatch(v) for v in every)
    left = [v for v in train if v.endswith("_left")]
    assert len(left) == 1
    base = left[0].removesuffix("_left")
    right = base + "_right"
    assert right in train and base not in every
    # two faces of one source video: same length, different people
    assert len(synth.controls[left[0]]) == len(synth.controls[right])
    a = np.asarray(Image.open(synth.root / "cropped" / left[0] / "00001.jpg"), float)
    b = np.asarray(Image.open(synth.root / "cropped" / right / "00001.jpg"), float)
    assert np.abs(a - b).mean() > 10


@pytest.mark.parametrize("task", [VA, EXPR, AU], ids=lambda t: t.name)
def test_annotation_files(synth, task):
    n_invalid = 0
    for split in ("train", "val"):
        d = synth.root / task.folders[0] / FOLDER[split]
        files = sorted(p.stem for p in d.glob("*.txt"))
        assert files == sorted(v for v in synth.splits[split] if v in synth.annotated[task.name])
        for v in files:
            lines = (d / f"{v}.txt").read_text().splitlines()
            assert lines[0] == task.header and len(lines) == len(synth.controls[v]) + 1
            # EXPR files name all 8 classes in the header but hold one int per line
            df = pd.read_csv(d / f"{v}.txt", skiprows=1, header=None)
            assert df.shape == (len(synth.controls[v]), 1 if task is EXPR else task.n_outputs)
            y = df.to_numpy()
            bad = np.flatnonzero((y == task.invalid).any(axis=1)) + 1
            np.testing.assert_array_equal(bad, synth.invalid[task.name][v])
            assert (y[bad - 1] == task.invalid).all()       # a whole invalid row, as in the real files
            n_invalid += len(bad)
            ok = np.ones(len(y), bool)
            ok[bad - 1] = False
            ctl = synth.controls[v]
            want = {"va": ctl.va, "expr": ctl.expr[:, None], "au": ctl.au_labels}[task.name]
            np.testing.assert_allclose(y[ok], want[ok], atol=6e-4)
            lo, hi = task.value_range
            assert y[ok].min() >= lo and y[ok].max() <= hi
            if task is not VA:
                assert df.dtypes.map(lambda t: t.kind == "i").all()
    assert n_invalid > 0
    # the test videos are never annotated
    for v in synth.splits["test"]:
        assert not list(synth.root.glob(f"*_Challenge/*/{v}.txt"))


def test_a_video_missing_from_one_task(synth):
    first = synth.splits["train"][0]
    assert first not in synth.annotated["au"]
    assert first in synth.annotated["va"] and first in synth.annotated["expr"]
    assert not (synth.root / "AU_Detection_Challenge/Train_Set" / f"{first}.txt").exists()
    assert (synth.root / "VA_Estimation_Challenge/Train_Set" / f"{first}.txt").exists()


def test_mtl_file(synth):
    for split, fname in (("train", "train_set.txt"), ("val", "validation_set.txt")):
        path = synth.root / "MTL_Challenge" / fname
        assert path.read_text().splitlines()[0] == "image,valence,arousal,expression," + AU.header
        df = pd.read_csv(path)
        assert df.shape[1] == 16
        vid = df["image"].str.split("/").str[0]
        frame = df["image"].str.extract(r"/(\d{5})\.jpg$")[0].astype(int)
        assert set(vid) == set(synth.splits[split])
        for v in synth.splits[split]:
            got = frame[vid == v].to_numpy()
            want = np.setdiff1d(np.arange(1, len(synth.controls[v]) + 1), synth.missing_crops[v])
            np.testing.assert_array_equal(got, want)          # one row per crop, in frame order
            assert all((synth.root / "cropped" / x).exists() for x in df["image"][vid == v])
            rows = df[vid == v].to_numpy()[:, 1:].astype(float)
            for task, cols in ((VA, slice(0, 2)), (EXPR, slice(2, 3)), (AU, slice(3, 15))):
                y = synth.labels(task, v).reshape(len(synth.controls[v]), -1)[want - 1]
                np.testing.assert_allclose(rows[:, cols], y, atol=6e-4)
    # the video without AU files carries -1 AUs in the MTL file too
    df = pd.read_csv(synth.root / "MTL_Challenge/train_set.txt")
    first = df[df["image"].str.startswith(synth.splits["train"][0] + "/")]
    assert (first[list(AU.labels)] == -1).all().all()


def test_test_sample_lists(synth):
    assert {p.name for p in (synth.root / "test_samples").iterdir()} == {"va.txt", "expr.txt", "au.txt"}
    for task in (VA, EXPR, AU):
        lines = (synth.root / "test_samples" / f"{task.name}.txt").read_text().splitlines()
        assert lines[0] == "image_location," + task.header
        want = [f"{v}/{i:05d}.jpg" for v in synth.splits["test"] for i in range(1, len(synth.controls[v]) + 1)]
        assert lines[1:] == want          # every frame, with or without a crop; no values
    # test crops exist (bar the gaps)
    v = synth.splits["test"][0]
    assert len(list((synth.root / "cropped" / v).glob("*.jpg"))) == len(synth.controls[v]) - len(synth.missing_crops[v])


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_by_seed(tmp_path):
    kw = dict(n_train=2, n_val=1, n_frames=20, size=48, n_test=1)
    a = make_affwild(tmp_path / "a", seed=1, **kw)
    b = make_affwild(tmp_path / "b", seed=1, **kw)
    c = make_affwild(tmp_path / "c", seed=2, **kw)
    ta, tb, tc = _tree(tmp_path / "a"), _tree(tmp_path / "b"), _tree(tmp_path / "c")
    assert len(ta) > 50 and ta == tb                 # byte-identical crops and label files
    assert a.splits == b.splits and a.splits != c.splits and ta != tc
    for v in a.controls:
        np.testing.assert_array_equal(a.controls[v].aus, b.controls[v].aus)


def test_bad_arguments():
    with pytest.raises(InputError):
        make_affwild("/nonexistent-never", n_train=-1)
    with pytest.raises(InputError):
        make_feature_data(0)
    with pytest.raises(InputError):
        make_feature_data(10, task="pose")


def test_labels_follow_controls():
    ctl = make_controls(20000, np.random.default_rng(5))
    expr, au, va = ctl.expr, ctl.au_labels, ctl.va
    counts = np.bincount(expr, minlength=8)
    assert (counts > 200).all()                                      # every class occurs
    np.testing.assert_array_equal(au, ctl.aus > 0.5)
    assert ctl.aus.min() >= 0 and ctl.aus.max() <= 1 and np.abs(va).max() <= 1

    def rate(cls, *names):
        on = np.all([au[:, AU_I[n]] for n in names], axis=0)
        return on[expr == cls].mean(), on[expr != cls].mean()

    for cls, aus in ((4, ("AU6", "AU12")), (5, ("AU1", "AU4", "AU15")), (6, ("AU1", "AU2", "AU25", "AU26")),
                     (1, ("AU4", "AU7")), (2, ("AU10",)), (3, ("AU1", "AU2", "AU4", "AU25"))):
        inside, outside = rate(cls, *aus)
        assert inside > 0.6 and outside < 0.15, (EXPR.labels[cls], inside, outside)
    assert au[expr == 0].mean() < 0.05                              # Neutral: low everything
    v = [va[expr == c].mean(axis=0) for c in range(8)]
    assert v[4][0] > 0.4 > -0.4 > v[5][0]                           # Happiness positive, Sadness negative
    assert v[1][1] > 0.4 > v[5][1] and v[1][0] < -0.3               # Anger: negative and aroused
    # smooth in time: episodes of tens of frames, so box-filter smoothing has something to work with
    assert np.mean(np.diff(expr) != 0) < 0.06
    assert np.corrcoef(va[:-1, 0], va[1:, 0])[0, 1] > 0.95
    assert np.corrcoef(ctl.aus[:-5, AU_I["AU12"]], ctl.aus[5:, AU_I["AU12"]])[0, 1] > 0.8


def _render(aus, seed=1, ident=0):
    return np.asarray(render_face(aus, random_identity(np.random.default_rng(ident)), 96,
                                  np.random.default_rng(seed)), float)


def test_faces_follow_the_aus():
    neutral = _render(np.zeros(12))
    mouth, brows, top = np.s_[60:90, 25:75], np.s_[20:42, 15:80], np.s_[:6]
    open_ = np.zeros(12)
    open_[[AU_I["AU25"], AU_I["AU26"]]] = 1
    assert np.abs(_render(open_)[mouth] - neutral[mouth]).mean() > 5
    raised = np.zeros(12)
    raised[[AU_I["AU1"], AU_I["AU2"]]] = 1
    r = _render(raised)
    assert np.abs(r[brows] - neutral[brows]).mean() > 1.5 and np.abs(r[mouth] - neutral[mouth]).mean() < 1.5
    for cls in (1, 2, 4, 5):        # every prototype changes the face
        assert np.abs(_render(PROTOTYPES[cls]) - neutral).mean() > 1
    assert np.abs(_render(PROTOTYPES[4])[top] - neutral[top]).mean() < 1.5      # the background stays
    assert np.abs(_render(np.zeros(12), ident=1) - neutral).mean() > 10         # another person
    assert np.abs(_render(np.zeros(12), seed=2) - neutral).mean() > 1           # jitter and noise


def test_written_crops_show_an_open_mouth(synth):
    """In the data itself: the parted lips (AU25 + AU26) show as dark pixels in the lower face."""
    S = 64
    lower = np.s_[int(.62 * S):int(.85 * S), int(.3 * S):int(.7 * S)]
    seen = 0
    for v in synth.splits["train"] + synth.splits["val"]:
        ctl, d = synth.controls[v], synth.root / "cropped" / v
        frames = np.array([i for i in range(1, len(ctl) + 1) if (d / f"{i:05d}.jpg").exists()])
        dark = np.array([(np.asarray(Image.open(d / f"{i:05d}.jpg"), float)[lower].mean(axis=2) < 45).mean()
                         for i in frames])
        on = ctl.au_labels[frames - 1][:, [AU_I["AU25"], AU_I["AU26"]]].all(axis=1)
        assert dark[~on].mean() < 0.02
        if on.sum() >= 5:
            assert dark[on].mean() > 3 * dark[~on].mean() + 0.02, v
            seen += 1
    assert seen >= 2


def test_feature_data_shape_order_and_determinism():
    fd = make_feature_data(3000, 64, n_videos=12, seed=0)
    assert fd.X.shape == (3000, 64) and fd.X.dtype == np.float16 and np.isfinite(fd.X).all()
    assert fd.y_va.shape == (3000, 2) and fd.y_va.dtype == np.float32
    assert fd.y_expr.shape == (3000,) and fd.y_expr.dtype == np.int64
    assert fd.y_au.shape == (3000, 12) and fd.y_au.dtype == np.int64
    assert len(fd.video_names) == 12 == len(set(fd.video_names))
    assert fd.task == "expr" and fd.y is fd.y_expr and fd.labels("au") is fd.y_au
    # per-video contiguous rows in frame order (1-based)
    assert np.all(np.diff(fd.video) >= 0) and set(fd.video) == set(range(12))
    for i in range(12):
        rows = np.flatnonzero(fd.video == i)
        assert np.all(np.diff(rows) == 1)
        np.testing.assert_array_equal(fd.frame[rows], np.arange(1, len(rows) + 1))
    lens = np.bincount(fd.video)
    assert lens.min() >= 1 and lens.max() > 1.5 * lens.min()      # unequal, like real videos
    same = make_feature_data(3000, 64, n_videos=12, seed=0)
    np.testing.assert_array_equal(fd.X, same.X)
    np.testing.assert_array_equal(fd.y_au, same.y_au)
    other = make_feature_data(3000, 64, n_videos=12, seed=1)
    assert not np.array_equal(fd.X, other.X) and not np.array_equal(fd.y_expr, other.y_expr)
    f32 = make_feature_data(3000, 64, n_videos=12, seed=0, dtype=np.float32, task="va")
    assert f32.X.dtype == np.float32 and f32.y is f32.y_va
    np.testing.assert_allclose(fd.X.astype(np.float32), f32.X, rtol=1e-3, atol=1e-4)
    # a per-video offset (who is in the video) on request: video means spread apart
    ident = make_feature_data(3000, 64, n_videos=12, seed=0, identity=2.0)
    spread = [np.std([d.X[d.video == i].astype(np.float32).mean(axis=0) for i in range(12)], axis=0).mean()
              for d in (fd, ident)]
    assert spread[1] > 3 * spread[0]
    # the per-video iterator yields the same rows
    blocks = list(iter_feature_videos(3000, 64, n_videos=12, seed=0))
    assert [b[0] for b in blocks] == fd.video_names
    np.testing.assert_array_equal(np.vstack([b[1] for b in blocks]), f32.X)
    np.testing.assert_array_equal(np.concatenate([b[2].expr for b in blocks]), fd.y_expr)


def test_half_cast_matches_numpy():
    x = (np.random.default_rng(0).standard_normal((64, 300)) * np.logspace(-3, 4, 300)).astype(np.float32)
    x[0, :4] = [0.0, -2.5, 65504.0, 1e6]
    dst = np.empty(x.shape, np.float16)
    _f16_into(x.copy(), dst, np.empty(x.shape, np.uint32))
    big = np.abs(x) < 65504
    ref = np.where(big, x, 0).astype(np.float16)
    np.testing.assert_allclose(dst[big].astype(np.float32), ref[big].astype(np.float32), rtol=1e-3, atol=1e-4)
    assert dst[0, 3] == 65504 and np.mean(dst == ref) > 0.99


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_feature_level_signal_is_learnable():
    fd = make_feature_data(10000, n_videos=20, seed=0)           # the default 1290 features
    train, test = np.flatnonzero(fd.video < 10)[:5000], np.flatnonzero(fd.video >= 10)
    assert len(train) > 3000
    with threadpool_limits(1):
        m = LogisticRegression(max_iter=60, C=0.001).fit(fd.X[train].astype(np.float32), fd.y_expr[train])
        p = m.predict_proba(fd.X[test].astype(np.float32))
    f1 = EXPR.score(fd.y_expr[test], p)
    chance = EXPR.score(fd.y_expr[test], np.random.default_rng(0).permutation(p))
    assert chance < 0.2 and f1 > 0.35 and f1 > 2.5 * chance, (f1, chance)
    assert f1 < 0.95                                              # learnable, not trivial
