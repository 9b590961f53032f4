"""Test-session set-up and the fixtures several test modules share (shared helper functions: helpers.py)."""
from features.import_order import torch_before_tensorflow

# One pytest process imports both stacks; triton loaded after TensorFlow crashes the process (see the function).
torch_before_tensorflow()

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from features.store import ExtractorInfo, FeatureStore  # noqa: E402
from features.synthetic import make_feature_data  # noqa: E402
from features.tasks import AFFECTNET8, AU, EXPR, VA  # noqa: E402
from helpers import build_small_world, make_set, write_labels  # noqa: E402

N_TRAIN_VIDEOS = 8


@pytest.fixture(scope="module")
def enet_world(tmp_path_factory):
    """12 videos (8 train, 4 val): one extractor with embedding (24), logits (8, AffectNet order) and VA.
    Train video vid0000 lacks features for its last 5 labelled frames and has 3 face-less frames.
    (root, cache, labels); root/test.txt names the 4 validation videos."""
    root = tmp_path_factory.mktemp("classify")
    d = make_feature_data(3000, 24, 12, seed=3, noise=1.0)
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1, (len(d.X), 8)).astype(np.float32)
    logits[np.arange(len(d.X)), np.array([5, 0, 2, 3, 4, 6, 7, 1])[d.y_expr]] += 2.5
    va = np.clip(d.y_va + rng.normal(0, 0.2, d.y_va.shape), -1, 1).astype(np.float32)
    info = ExtractorInfo("enet", "0" * 64, 224, {}, {"embedding": 24, "logits": 8, "va": 2},
                         embedding_dtype="float16", extra={"class_names": list(AFFECTNET8)})
    cache = root / "features.h5"
    labels = root / "labels"
    with FeatureStore(cache, "a") as s:
        w = s.writer(info)
        for i, name in enumerate(d.video_names):
            r = d.video == i
            split = "train" if i < N_TRAIN_VIDEOS else "val"
            for task, y in ((EXPR, d.y_expr), (VA, d.y_va), (AU, d.y_au)):
                write_labels(labels, task, split, name, y[r])
            keep = np.ones(r.sum(), bool)
            face = np.ones(r.sum(), bool)
            if i == 0:
                keep[-5:] = False
                face[:3] = False
            w.write_video(name, frame=d.frame[r][keep].astype(np.int64), face=face[keep],
                          embedding=d.X[r][keep], logits=logits[r][keep], va=va[r][keep])
    (root / "test.txt").write_text("".join(f"{n}\n" for n in d.video_names[N_TRAIN_VIDEOS:]))
    return root, cache, labels


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    """The bad-input catalogue's small cache (helpers.build_small_world: extractor enet, 6 videos, labels for
    the three tasks), built afresh for each module."""
    return build_small_world(tmp_path_factory.mktemp("shared"))


@pytest.fixture(scope="module")
def crops(tmp_path_factory):
    """A rendered Aff-Wild2-style set of 32x32 crops, some frames without a crop."""
    root = tmp_path_factory.mktemp("aff32")
    make_set(root, n_frames=11, size=32)
    return root
