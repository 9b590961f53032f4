import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression

from features.labels import load_labels, read_annotation, read_mtl
from features.synthetic import PROTOTYPES, _identity, make_affwild, make_feature_data, render_face
from features.tasks import AU, EXPR, VA


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    return make_affwild(root, n_train=4, n_val=2, n_frames=100, size=64, seed=3, n_test=1)


def test_layout_is_affwild(synth):
    root = synth.root
    train, val = synth.splits["train"], synth.splits["val"]
    assert any(v.endswith("_left") for v in train) and any(v.endswith("_right") for v in train)
    for v in train + val:
        n = len(synth.controls[v].expr)
        jpgs = sorted(p.name for p in (root / "cropped" / v).glob("*.jpg"))
        assert len(jpgs) == n - len(synth.missing_crops[v]) and jpgs[0] in ("00001.jpg", "00002.jpg")
        assert all(not (root / "cropped" / v / f"{f:05d}.jpg").exists() for f in synth.missing_crops[v])
        lines = (root / "EXPR_Classification_Challenge" / ("Train_Set" if v in train else "Validation_Set")
                 / f"{v}.txt").read_text().splitlines()
        assert lines[0] == EXPR.header and len(lines) == n + 1
    # every task parses with the strict reader, with some invalid rows dropped, and one video lacks AU
    for task in (VA, EXPR, AU):
        df = load_labels(root, task, "train")
        assert df.attrs["n_invalid"] > 0
    assert len(list((root / "AU_Detection_Challenge" / "Train_Set").glob("*.txt"))) == len(train) - 1
    mtl = read_mtl(root / "MTL_Challenge" / "train_set.txt")
    assert set(mtl["video"]) == set(train)
    sample = (root / "test_samples" / "au.txt").read_text().splitlines()
    assert sample[0] == "image_location," + AU.header and sample[1].endswith("/00001.jpg")
    assert Image.open(next((root / "cropped" / train[0]).glob("*.jpg"))).size == (64, 64)


def test_deterministic_by_seed(tmp_path):
    a = make_affwild(tmp_path / "a", 2, 1, 30, 48, seed=1)
    b = make_affwild(tmp_path / "b", 2, 1, 30, 48, seed=1)
    c = make_affwild(tmp_path / "c", 2, 1, 30, 48, seed=2)
    va = a.splits["train"][0]
    assert a.splits == b.splits
    assert ((tmp_path / "a/cropped" / va / "00001.jpg").read_bytes()
            == (tmp_path / "b/cropped" / va / "00001.jpg").read_bytes())
    assert a.splits != c.splits


def test_labels_follow_controls(synth):
    ctl = [synth.controls[v] for v in synth.splits["train"] + synth.splits["val"]]
    expr = np.concatenate([c.expr for c in ctl])
    au = np.concatenate([c.au_labels for c in ctl])
    va = np.concatenate([c.va for c in ctl])
    happy, sad = expr == 4, expr == 5
    assert happy.any() and sad.any()
    au12 = AU.labels.index("AU12")
    assert au[happy, au12].mean() > 0.8 > 0.2 > au[~happy, au12].mean()
    assert va[happy, 0].mean() > 0.3 > -0.3 > va[sad, 0].mean()
    # labels come from real controls, so the annotation files hold them (bar the invalid rows)
    v = synth.splits["val"][0]
    y = read_annotation(synth.root / "VA_Estimation_Challenge/Validation_Set" / f"{v}.txt", VA)
    ok = y[:, 0] != VA.invalid
    np.testing.assert_allclose(y[ok], synth.controls[v].va[ok], atol=1e-3)


def test_faces_change_with_expression():
    ident = _identity(np.random.default_rng(0))
    neutral = np.asarray(render_face(PROTOTYPES[0], ident, 96, np.random.default_rng(1)), float)
    surprise = np.asarray(render_face(PROTOTYPES[6], ident, 96, np.random.default_rng(1)), float)
    happy = np.asarray(render_face(PROTOTYPES[4], ident, 96, np.random.default_rng(1)), float)
    mouth = np.s_[60:90, 25:75]
    assert np.abs(neutral[mouth] - surprise[mouth]).mean() > 5      # open mouth
    assert np.abs(neutral[mouth] - happy[mouth]).mean() > 2         # raised corners
    top = np.s_[:15]
    assert np.abs(neutral[top] - happy[top]).mean() < 2              # background/forehead alike


def test_feature_level_mode_is_learnable():
    fd = make_feature_data(20000, 200, n_videos=40, seed=0, noise=2.0)
    assert fd.X.shape == (20000, 200) and fd.X.dtype == np.float16
    assert np.all(np.diff(fd.video) >= 0) and len(np.unique(fd.video)) == 40
    starts = np.r_[0, np.flatnonzero(np.diff(fd.video)) + 1]
    assert np.all(fd.frame[starts] == 1)
    train, test = fd.video < 30, fd.video >= 30
    m = LogisticRegression(max_iter=500).fit(fd.X[train].astype(np.float32), fd.y_expr[train])
    f1 = EXPR.score(fd.y_expr[test], m.predict_proba(fd.X[test].astype(np.float32)))
    assert f1 > 0.3         # chance macro F1 over 8 classes is about 0.1
    b = make_feature_data(20000, 200, n_videos=40, seed=0, noise=2.0)
    np.testing.assert_array_equal(fd.X, b.X)
