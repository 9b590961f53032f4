"""Helper functions shared by the test modules (the shared fixtures are in conftest.py): tiny extractors and
Aff-Wild2-style frame sets for the runner, a B0 stand-in, videos with a drawn face, small feature caches and
label files. torch and timm are imported inside the helpers that need them, so that a test of the store does
not load them."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from extract.base import Extractor, TorchExtractor
from features.store import ExtractorInfo, FeatureStore
from features.synthetic import make_feature_data
from features.tasks import AFFECTNET8, AU, EXPR, VA

# ---------------------------------------------------------------------------------------------- extraction


class TinyExtractor(Extractor):
    """A deterministic numpy 'model': each row depends on its own pixels only (like a real forward pass)."""

    def __init__(self, size: int = 8, name: str = "tiny", sha: str = "a" * 64, dim: int = 6, delay: float = 0.0):
        self.name, self.input_size, self.checkpoint_sha256 = name, size, sha
        self.outputs = {"embedding": dim, "logits": 3}
        self.class_names = ("a", "b", "c")
        self.extra = {}
        self.delay = delay
        rng = np.random.default_rng(size)
        self.P = rng.normal(size=(size * size * 3, dim))
        self.W = rng.normal(size=(dim, 3))
        self.calls: list[int] = []

    def __call__(self, batch):
        x = np.asarray(batch, np.float64).reshape(len(batch), -1) / 255.0
        self.check_batch(np.asarray(batch))
        self.calls.append(len(x))
        if self.delay:
            time.sleep(self.delay)
        # elementwise products + per-row sums: bit-identical whatever the batch composition
        emb = (x[:, :, None] * self.P[None]).sum(1)
        return {"embedding": emb.astype(np.float32),
                "logits": (emb[:, :, None] * self.W[None]).sum(1).astype(np.float32)}


def tiny_create(spec, *a, **k) -> TinyExtractor:
    """A stand-in for `extract.cli.create_extractor`: a TinyExtractor slowed down so that kills land mid-run
    (module-level, so that Ray pickles it by reference)."""
    return TinyExtractor(delay=0.15)


class TinyTorch(TorchExtractor):
    """A torch model whose rows depend on their own pixels only (conv + global pooling)."""

    def __init__(self, size: int):
        import torch
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.ReLU(),
                                  torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.body = net

            def forward(self, x):
                return {"embedding": self.body(x)}
        super().__init__("torchy", Net(), size, {"embedding": 4}, checkpoint_sha256="b" * 64)


def make_set(root: Path, n_train: int = 3, n_val: int = 1, n_frames: int = 14, size: int = 32):
    """The rendered synthetic Aff-Wild2 layout (crops, labels) at a tiny size."""
    from features.synthetic import make_affwild
    return make_affwild(root, n_train=n_train, n_val=n_val, n_frames=n_frames, size=size, seed=1)


def read_all(path, name="tiny"):
    """(videos, index, arrays) of one extractor in a cache (or its shards, given as a list)."""
    paths = path if isinstance(path, list) else [path]
    with FeatureStore(paths) as s:
        vids = sorted(s.videos(name))
        blk = s.read(vids, [name], outputs=("embedding", "logits"))
        return vids, blk.index.copy(), {k: v.copy() for k, v in blk.arrays.items()}


def assert_same(a, b):
    """Two `read_all` results hold the same videos, frames, faces and bit-identical outputs."""
    assert a[0] == b[0]
    assert a[1]["frame"].tolist() == b[1]["frame"].tolist()
    assert a[1]["face"].tolist() == b[1]["face"].tolist()
    assert a[1]["video"].astype(str).tolist() == b[1]["video"].astype(str).tolist()
    for k in a[2]:
        np.testing.assert_array_equal(a[2][k], b[2][k])


def b0_with_head(head):
    """timm's tf_efficientnet_b0 (seed 0, eval mode) with `head` as its classifier and non-trivial BatchNorm
    statistics, so that a wrong eps or a missing buffer would show: a stand-in for a published HSEmotion B0."""
    import timm
    import torch
    torch.manual_seed(0)
    m = timm.create_model("tf_efficientnet_b0", pretrained=False, num_classes=8)
    m.classifier = head
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 2.0)
    return m.eval()


def direct_forward(model, x01) -> tuple[np.ndarray, np.ndarray]:
    """(embedding, outputs) of a timm model on [0, 1] NCHW pixels normalised with the ImageNet statistics."""
    import torch
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        x = (x01 - mean) / std
        emb = model.forward_head(model.forward_features(x), pre_logits=True)
        return emb.numpy(), model(x).numpy()


def assert_close(a: np.ndarray, b: np.ndarray, rtol: float = 1e-4) -> None:
    """Equal up to `rtol`, with an absolute tolerance scaled by the largest value of `b`."""
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * float(np.abs(b).max()))

# --------------------------------------------------------------------------------------------------- videos


def encode(path: Path, frames: list[np.ndarray], fps: int = 12) -> Path:
    """An MPEG-4 video file of RGB frames."""
    import av
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        s.options = {"qscale": "3"}
        for f in frames:
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())
    return path


def noise_video(path: Path, n: int, options: dict | None = None) -> Path:
    """An MPEG-4 video of `n` 32x32 frames of seeded noise; `options` are the container's (e.g. how it records
    its length), so a file can be written with or without a frame count in its header."""
    import av
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", options=options or {}) as c:
        s = c.add_stream("mpeg4", rate=12)
        s.height, s.width, s.pix_fmt = 32, 32, "yuv420p"
        for _ in range(n):
            c.mux(s.encode(av.VideoFrame.from_ndarray(rng.integers(0, 256, (32, 32, 3), np.uint8), format="rgb24")))
        c.mux(s.encode())
    return path


def drawn_face(i: int) -> np.ndarray:
    """A cartoon face (skin oval, brows, eyes, nose, mouth) at x 105..215, y 45..195 of a 320x240 frame."""
    from PIL import Image, ImageDraw
    img = Image.new("RGB", (320, 240), (90, 90, 90))
    d = ImageDraw.Draw(img)
    ox, oy = 80 + (i % 3), 40
    dark = (40, 30, 30)
    d.ellipse([ox + 25, oy + 5, ox + 135, oy + 155], fill=(224, 180, 150))
    for ex in (ox + 55, ox + 105):
        d.line([(ex - 15, oy + 50), (ex + 15, oy + 48)], fill=dark, width=4)
        d.ellipse([ex - 12, oy + 60, ex + 12, oy + 72], fill=(245, 245, 245), outline=dark)
        d.ellipse([ex - 4, oy + 62, ex + 4, oy + 70], fill=dark)
    d.line([(ox + 80, oy + 70), (ox + 80, oy + 100)], fill=dark, width=2)
    d.polygon([(ox + 55, oy + 118), (ox + 80, oy + 112 + i % 4), (ox + 105, oy + 118), (ox + 80, oy + 126)],
              fill=(150, 60, 60))
    return np.asarray(img)


def face_frames(n_face: int, n_blank: int) -> list[np.ndarray]:
    """Frames with a drawn face, then frames of background only."""
    return [drawn_face(i) for i in range(n_face)] + [np.full((240, 320, 3), 90, np.uint8)] * n_blank

# ---------------------------------------------------------------------------------------------------- store


def info(name="m", sha="abc", dim=16, logits=8, va=True, dtype="float16"):
    """An extractor's provenance with embedding, logits and (optionally) VA outputs."""
    outs = {"embedding": dim, "logits": logits}
    if va:
        outs["va"] = 2
    return ExtractorInfo(name, sha, 224, {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}, outs,
                         embedding_dtype=dtype)


def video_data(n, dim=16, logits=8, va=True, seed=0):
    """One video's rows for `FeatureWriter.write_video` (about 10 % of the frames without a face)."""
    r = np.random.default_rng(seed)
    d = dict(frame=np.arange(1, n + 1), face=r.random(n) > 0.1, embedding=r.normal(size=(n, dim)),
             logits=r.normal(size=(n, logits)).astype(np.float32))
    if va:
        d["va"] = r.uniform(-1, 1, size=(n, 2)).astype(np.float32)
    return d


def write(path, videos, inf=None, **kw):
    """A cache with (name, n_frames) videos of one extractor (`inf`, or `info(**kw)`)."""
    inf = inf or info(**kw)
    with FeatureStore(path, "a") as s:
        w = s.writer(inf)
        for i, (v, n) in enumerate(videos):
            w.write_video(v, **video_data(n, seed=i))

# ------------------------------------------------------------------------------------- labels and heads


def write_labels(root: Path, task, split: str, video: str, rows) -> Path:
    """An Aff-Wild2-style annotation file: root/<task folder>/<Train_Set|Validation_Set>/<video>.txt."""
    d = root / task.folders[0] / {"train": "Train_Set", "val": "Validation_Set"}[split]
    d.mkdir(parents=True, exist_ok=True)
    lines = [task.header] + [",".join(str(v) for v in np.atleast_1d(r)) for r in rows]
    p = d / f"{video}.txt"
    p.write_text("\n".join(lines) + "\n")
    return p


def build_small_world(shared: Path) -> Path:
    """`shared/classify`: features.h5 (extractor enet: embedding 8, logits 8, va 2) and labels/ for the three
    tasks on 6 videos (4 train, 2 val), plus labels_extra/ whose train split also names a video with no
    features. Built once per `shared` folder."""
    n_videos, n_train = 6, 4
    root = shared / "classify"
    if (root / "done").exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    d = make_feature_data(600, 8, n_videos, seed=1, noise=1.0)
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1, (len(d.X), 8)).astype(np.float32)
    logits[np.arange(len(d.X)), np.array([5, 0, 2, 3, 4, 6, 7, 1])[d.y_expr]] += 2.5
    inf = ExtractorInfo("enet", "0" * 64, 224, {}, {"embedding": 8, "logits": 8, "va": 2},
                        extra={"class_names": list(AFFECTNET8)})
    with FeatureStore(root / "features.h5", "a") as s:
        w = s.writer(inf)
        for i, name in enumerate(d.video_names):
            r = d.video == i
            split = "train" if i < n_train else "val"
            for labels in ("labels", "labels_extra"):
                for task, y in ((EXPR, d.y_expr), (VA, d.y_va), (AU, d.y_au)):
                    write_labels(root / labels, task, split, name, y[r])
            w.write_video(name, frame=d.frame[r].astype(np.int64), face=np.ones(r.sum(), bool),
                          embedding=d.X[r], logits=logits[r], va=d.y_va[r])
    write_labels(root / "labels_extra", EXPR, "train", "not_in_cache", np.arange(30) % 8)
    (root / "done").touch()
    return root


def build_fusion_world(root, n_frames=2400, n_videos=10, n_train=7):
    """Extractors a (embedding 16) and b (embedding 8, logits 8) on the same frames; c (embedding 4) lacks
    frames 10-19 of the first video (a different frame set). Returns (cache, labels)."""
    d = make_feature_data(n_frames, 24, n_videos, seed=5, noise=0.8)
    cache, labels = root / "features.h5", root / "labels"
    infos = [ExtractorInfo("a", "0" * 64, 224, {}, {"embedding": 16}),
             ExtractorInfo("b", "1" * 64, 224, {}, {"embedding": 8, "logits": 8}),
             ExtractorInfo("c", "2" * 64, 224, {}, {"embedding": 4})]
    with FeatureStore(cache, "a") as s:
        for inf in infos:
            w = s.writer(inf)
            for i, name in enumerate(d.video_names):
                r = d.video == i
                keep = np.ones(r.sum(), bool)
                if inf.name == "c" and i == 0:
                    keep[9:19] = False
                X = d.X[r].astype(np.float32)
                outs = {"embedding": {"a": X[:, :16], "b": X[:, 16:24], "c": X[:, :4]}[inf.name]}
                if inf.name == "b":
                    outs["logits"] = X[:, :8]
                w.write_video(name, frame=d.frame[r][keep].astype(np.int64), face=np.ones(keep.sum(), bool),
                              **{k: v[keep] for k, v in outs.items()})
    for i, name in enumerate(d.video_names):
        r = d.video == i
        for task, y in ((EXPR, d.y_expr), (VA, d.y_va), (AU, d.y_au)):
            write_labels(labels, task, "train" if i < n_train else "val", name, y[r])
    (root / "test.txt").write_text("".join(f"{n}\n" for n in d.video_names[n_train:]))
    return cache, labels


def mtcnn_available() -> bool:
    try:
        from extract.mtcnn import weight_files
        weight_files()
        return True
    except Exception:
        return False


def two_people(frames: list[np.ndarray], blank: range = range(0)) -> list[np.ndarray]:
    """The clip beside its mirror image; the mirrored person is blanked out (background grey) in `blank`."""
    out = []
    for i, f in enumerate(frames):
        right = f[:, ::-1].copy()
        if i in blank:
            right[:] = 90
        out.append(np.concatenate([f, right], axis=1))
    return out
