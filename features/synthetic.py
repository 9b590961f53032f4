"""A synthetic Aff-Wild2-like data set, deterministic by seed, for tests, the demo and benchmarks.

Every frame is driven by 12 action-unit intensities (the order of `features.tasks.AU.labels`). Each video is a
sequence of expression episodes (a class, a peak intensity, smooth onset and offset) plus slow noise, and all
labels derive from the same controls: AU = intensity > 0.5, EXPR = the episode's class while it is clearly
expressed (else Neutral), valence/arousal = the class's circumplex position scaled by the intensity.

Two modes:
- `make_affwild(root, ...)` renders a parametric face per frame (brows, lids, cheeks, lip corners, lips, jaw
  follow the AUs) as JPEG crops and writes exactly the Aff-Wild2 layout, quirks included.
- `make_feature_data(n_frames, ...)` emits feature-level data at scale without rendering (X = controls through a
  random projection plus noise), for benchmarks at Aff-Wild2 size.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw

from .tasks import AU, EXPR, VA

N_AU = AU.n_outputs
_A = {name: i for i, name in enumerate(AU.labels)}


def _proto(**aus: float) -> np.ndarray:
    v = np.zeros(N_AU)
    for k, x in aus.items():
        v[_A[k]] = x
    return v


# Prototypical AU combinations per Aff-Wild2 class (EMFACS-style); "Other" draws a random mix per episode.
PROTOTYPES = np.stack([
    _proto(),                                                    # Neutral
    _proto(AU4=1, AU7=1, AU23=0.9, AU24=0.8),                    # Anger
    _proto(AU10=1, AU4=0.7, AU15=0.4),                           # Disgust
    _proto(AU1=1, AU2=0.9, AU4=0.8, AU25=1),                     # Fear
    _proto(AU6=1, AU12=1, AU25=0.6),                             # Happiness
    _proto(AU1=1, AU4=0.9, AU15=1),                              # Sadness
    _proto(AU1=1, AU2=1, AU25=1, AU26=1),                        # Surprise
    _proto(),                                                    # Other (random per episode)
])
# (valence, arousal) at full intensity, after the circumplex model
VA_CENTRES = np.array([[0.0, -0.1], [-0.6, 0.7], [-0.6, 0.3], [-0.5, 0.8], [0.8, 0.5], [-0.7, -0.3],
                       [0.2, 0.8], [0.1, 0.2]])
CLASS_WEIGHTS = np.array([0.2, 0.1, 0.08, 0.08, 0.2, 0.12, 0.12, 0.1])   # imbalanced, like the real data


@dataclass
class Controls:
    """Per-frame latent state of one video."""
    aus: np.ndarray        # (n, 12) intensities in [0, 1]
    expr: np.ndarray       # (n,) class 0..7
    va: np.ndarray         # (n, 2)

    @property
    def au_labels(self) -> np.ndarray:
        return (self.aus > 0.5).astype(np.int64)


def _smooth_noise(rng: np.random.Generator, n: int, d: int, width: int = 9) -> np.ndarray:
    """Slowly varying noise: white noise through a moving average (unit variance)."""
    x = rng.standard_normal((n + width - 1, d))
    c = np.cumsum(np.vstack([np.zeros((1, d)), x]), axis=0)
    return (c[width:] - c[:-width]) / np.sqrt(width)


def make_controls(n: int, rng: np.random.Generator, episode_len: tuple[int, int] = (20, 70)) -> Controls:
    """Smooth expression episodes over n frames."""
    aus = np.zeros((n, N_AU))
    expr = np.zeros(n, np.int64)
    va = np.zeros((n, 2))
    t = 0
    while t < n:
        length = int(rng.integers(*episode_len))
        c = int(rng.choice(8, p=CLASS_WEIGHTS))
        peak = rng.uniform(0.7, 1.0)
        proto = PROTOTYPES[c].copy()
        if c == 7:   # Other: two or three AUs outside the usual prototypes' pairings
            proto[rng.choice(N_AU, size=rng.integers(2, 4), replace=False)] = 1.0
        proto *= rng.uniform(0.8, 1.0, N_AU)
        m = min(length, n - t)
        ramp = max(2, length // 4)
        u = np.arange(m)
        env = np.minimum(1.0, np.minimum((u + 1) / ramp, (length - u) / ramp))
        env = np.sin(env * np.pi / 2) ** 2 * peak                 # smooth onset and offset
        aus[t:t + m] = env[:, None] * proto
        strong = env > 0.5
        expr[t:t + m] = np.where(strong, c, 0)
        va[t:t + m] = env[:, None] * VA_CENTRES[c]
        t += length
    aus = np.clip(aus + 0.08 * _smooth_noise(rng, n, N_AU), 0, 1)
    va = np.clip(va + 0.05 * _smooth_noise(rng, n, 2), -1, 1)
    return Controls(aus, expr, va)


# ----------------------------------------------------------------------------------------------------------
# rendering

@dataclass
class Identity:
    skin: tuple[int, int, int]
    background: tuple[int, int, int]
    width: float       # face half-width as a fraction of the image
    eye_gap: float
    dx: float
    dy: float


def _identity(rng: np.random.Generator) -> Identity:
    tone = rng.uniform(0.35, 1.0)
    skin = tuple(int(v) for v in (np.array([230, 190, 160]) * tone + rng.integers(-10, 10, 3)).clip(0, 255))
    bg = tuple(int(v) for v in rng.integers(20, 235, 3))
    return Identity(skin, bg, rng.uniform(0.30, 0.38), rng.uniform(0.14, 0.19), rng.uniform(-0.03, 0.03),
                    rng.uniform(-0.03, 0.03))


def render_face(aus: np.ndarray, ident: Identity, size: int = 112, rng: np.random.Generator | None = None,
                jitter: float = 0.02) -> Image.Image:
    """One RGB face whose features follow the 12 AU intensities."""
    a = dict(zip(AU.labels, np.asarray(aus, float)))
    rng = rng or np.random.default_rng(0)
    S = size
    img = Image.new("RGB", (S, S), ident.background)
    d = ImageDraw.Draw(img)
    cx = S * (0.5 + ident.dx + rng.uniform(-jitter, jitter))
    cy = S * (0.5 + ident.dy + rng.uniform(-jitter, jitter))
    w = S * ident.width
    jaw = a["AU26"] * 0.06 * S
    d.ellipse([cx - w, cy - 0.45 * S, cx + w, cy + 0.42 * S + jaw], fill=ident.skin)
    dark = (40, 30, 30)
    eg = S * ident.eye_gap
    ey = cy - 0.10 * S
    for side in (-1, 1):
        ex = cx + side * eg
        # brows: AU1 raises the inner end, AU2 the outer end, AU4 lowers and draws them together
        inner_x = ex - side * (0.09 * S - a["AU4"] * 0.03 * S)
        outer_x = ex + side * 0.09 * S
        base = ey - 0.09 * S + a["AU4"] * 0.035 * S
        d.line([(inner_x, base - a["AU1"] * 0.06 * S), (outer_x, base - a["AU2"] * 0.06 * S)], fill=dark,
               width=max(1, S // 40))
        # eyes: AU7 tightens the lids, AU6 raises the cheeks under the eyes
        h = 0.035 * S * (1 - 0.6 * a["AU7"]) * (1 - 0.3 * a["AU6"]) + 0.004 * S
        d.ellipse([ex - 0.05 * S, ey - h, ex + 0.05 * S, ey + h], fill=(245, 245, 245), outline=dark)
        d.ellipse([ex - 0.015 * S, ey - min(h, 0.015 * S), ex + 0.015 * S, ey + min(h, 0.015 * S)], fill=dark)
        ch = ey + 0.11 * S - a["AU6"] * 0.04 * S
        blush = tuple(int(min(255, c + 25 * a["AU6"])) if i == 0 else c for i, c in enumerate(ident.skin))
        d.ellipse([ex - 0.05 * S, ch - 0.03 * S, ex + 0.05 * S, ch + 0.03 * S], fill=blush)
    # nose; AU10 lifts the upper lip and wrinkles beside the nose
    d.line([(cx, ey), (cx, cy + 0.07 * S)], fill=dark, width=1)
    if a["AU10"] > 0.3:
        for side in (-1, 1):
            d.line([(cx + side * 0.03 * S, cy + 0.03 * S), (cx + side * 0.05 * S, cy + 0.08 * S)], fill=dark)
    # mouth: AU12 pulls the corners up, AU15 down; AU23 narrows, AU24 presses the lips thin; AU25 parts the
    # lips, AU26 drops the jaw
    my = cy + 0.20 * S + jaw * 0.5 - a["AU10"] * 0.02 * S
    half = 0.12 * S * (1 - 0.35 * a["AU23"]) * (1 + 0.2 * a["AU12"])
    corner = my - (a["AU12"] - a["AU15"]) * 0.05 * S
    lip = max(1.0, 0.025 * S * (1 - 0.7 * a["AU24"]))
    gap = (a["AU25"] * 0.03 + a["AU26"] * 0.06) * S
    lipc = (150, 60, 60)
    d.polygon([(cx - half, corner), (cx, my - lip), (cx + half, corner), (cx, my)], fill=lipc)
    if gap > 1:
        d.polygon([(cx - half * 0.8, corner + 1), (cx, my), (cx + half * 0.8, corner + 1), (cx, my + gap)],
                  fill=(50, 15, 20))
    d.polygon([(cx - half, corner), (cx, my + gap), (cx + half, corner), (cx, my + gap + lip)], fill=lipc)
    arr = np.asarray(img, np.int16) + rng.integers(-6, 7, (S, S, 1))
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


# ----------------------------------------------------------------------------------------------------------
# the Aff-Wild2 layout

@dataclass
class SyntheticInfo:
    root: Path
    splits: dict[str, list[str]]                     # "train" / "val" / "test" -> videos
    controls: dict[str, Controls] = field(repr=False, default_factory=dict)
    missing_crops: dict[str, np.ndarray] = field(repr=False, default_factory=dict)   # 1-based frames


def _video_names(n: int, rng: np.random.Generator) -> list[str]:
    out = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            out.append(f"{rng.integers(1, 140)}-{rng.integers(10, 60)}-1920x1080")
        elif kind == 1:
            out.append(f"video{rng.integers(1, 99)}_{i}")
        else:
            out.append(f"{rng.integers(100, 440)}-{rng.integers(10, 60)}-640x360")
    return list(dict.fromkeys(out))[:n] if len(set(out)) == n else [f"{v}_{i}" for i, v in enumerate(out)]


def _fmt_labels(task, rows: np.ndarray) -> list[str]:
    if task is VA:
        return [f"{v:.3f},{a:.3f}" for v, a in rows]
    if task is EXPR:
        return [str(int(x)) for x in rows]
    return [",".join(str(int(x)) for x in r) for r in rows]


def make_affwild(root: str | Path, n_train: int = 4, n_val: int = 2, n_frames: int = 120, size: int = 112,
                 seed: int = 0, n_test: int = 0) -> SyntheticInfo:
    """Write a small Aff-Wild2-like data set under `root` (crops, annotations of the three tasks, MTL file,
    and for n_test > 0 test crops with the organisers' sample lists). Returns what was written."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    n_all = n_train + n_val + n_test
    names = _video_names(n_all, rng)
    # two people in one video: the second training video becomes a _left/_right pair
    splits = {"train": names[:n_train], "val": names[n_train:n_train + n_val], "test": names[n_train + n_val:]}
    if n_train >= 2:
        base = splits["train"][1]
        splits["train"][1:2] = [f"{base}_left", f"{base}_right"]
    info = SyntheticInfo(root, splits)
    mtl_rows: dict[str, list[str]] = {"train": [], "val": []}
    for split, videos in splits.items():
        for vi, video in enumerate(videos):
            vrng = np.random.default_rng([seed, zlib.crc32(video.encode())])
            n = int(n_frames * vrng.uniform(0.8, 1.2))
            ctl = make_controls(n, vrng)
            ident = _identity(vrng)
            # frames without a crop: one short run per video (no face found there)
            start = int(vrng.integers(1, max(2, n - 6)))
            missing = np.arange(start, min(n, start + int(vrng.integers(2, 6)))) + 1
            info.controls[video], info.missing_crops[video] = ctl, missing
            d = root / "cropped" / video
            d.mkdir(parents=True, exist_ok=True)
            skip = set(missing.tolist())
            for i in range(n):
                if i + 1 not in skip:
                    render_face(ctl.aus[i], ident, size, vrng).save(d / f"{i + 1:05d}.jpg", quality=90)
            if split == "test":
                continue
            folder = "Train_Set" if split == "train" else "Validation_Set"
            for task, y in ((VA, ctl.va), (EXPR, ctl.expr), (AU, ctl.au_labels)):
                if task is AU and split == "train" and vi == 0 and len(videos) > 2:
                    continue      # as in the real data, not every video is annotated for every task
                y = y.astype(float).copy()
                a = int(vrng.integers(0, max(1, n - 4)))
                y[a:a + 3] = task.invalid      # a few invalid rows
                out = root / task.folders[0] / folder / f"{video}.txt"
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(task.header + "\n" + "\n".join(_fmt_labels(task, y)) + "\n")
            au = ctl.au_labels
            mtl_rows[split] += [f"{video}/{i + 1:05d}.jpg,{ctl.va[i, 0]:.3f},{ctl.va[i, 1]:.3f},{ctl.expr[i]},"
                                + ",".join(map(str, au[i])) for i in range(n)]
    mtl = root / "MTL_Challenge"
    mtl.mkdir(parents=True, exist_ok=True)
    header = "image,valence,arousal,expression," + AU.header
    for split, fname in (("train", "train_set.txt"), ("val", "validation_set.txt")):
        (mtl / fname).write_text(header + "\n" + "\n".join(mtl_rows[split]) + "\n")
    if splits["test"]:
        samples = root / "test_samples"
        samples.mkdir(parents=True, exist_ok=True)
        rows = [f"{v}/{i + 1:05d}.jpg" for v in splits["test"] for i in range(len(info.controls[v].expr))]
        for task in (VA, EXPR, AU):
            (samples / f"{task.name}.txt").write_text(f"image_location,{task.header}\n" + "\n".join(rows) + "\n")
    return info


# ----------------------------------------------------------------------------------------------------------
# feature-level data at scale

@dataclass
class FeatureData:
    X: np.ndarray              # (n, d)
    video: np.ndarray          # (n,) int32 video id; rows of a video are contiguous, in frame order
    frame: np.ndarray          # (n,) int32, 1-based
    video_names: list[str]
    y_va: np.ndarray           # (n, 2) float32
    y_expr: np.ndarray         # (n,) int64
    y_au: np.ndarray           # (n, 12) int64


def _lengths(n_frames: int, n_videos: int, rng: np.random.Generator) -> np.ndarray:
    w = rng.gamma(2.0, 1.0, n_videos)
    lens = np.maximum(1, np.floor(w / w.sum() * n_frames)).astype(np.int64)
    lens[np.argmax(lens)] += n_frames - lens.sum()
    return lens


def iter_feature_videos(n_frames: int, n_features: int = 1290, n_videos: int = 600, seed: int = 0,
                        noise: float = 4.0) -> Iterator[tuple[str, np.ndarray, Controls]]:
    """Per-video blocks (name, X float32 (n, d), controls): latent controls through a fixed random
    projection plus white noise, so a head has something real, but not trivial, to learn."""
    rng = np.random.default_rng(seed)
    latent = N_AU + 8 + 2
    W = rng.standard_normal((latent, n_features)).astype(np.float32) / np.sqrt(latent)
    bias = rng.standard_normal(n_features).astype(np.float32) * 0.1
    # Drawing fresh normals for a million rows x 1290 costs ~20 s here; rows gathered at random from a fixed
    # bank of 16k noise rows are as good for learning purposes and ~10x cheaper.
    bank = noise * rng.standard_normal((min(16384, max(1, n_frames)), n_features), dtype=np.float32)
    for i, n in enumerate(_lengths(n_frames, n_videos, rng)):
        vrng = np.random.default_rng([seed, i])
        ctl = make_controls(int(n), vrng)
        z = np.hstack([ctl.aus, np.eye(8)[ctl.expr] * ctl.aus.max(axis=1, keepdims=True), ctl.va])
        X = z.astype(np.float32) @ W
        X += bank[vrng.integers(0, len(bank), len(X))]
        X += bias
        yield f"vid{i:04d}", X, ctl


def make_feature_data(n_frames: int, n_features: int = 1290, n_videos: int = 600, seed: int = 0,
                      dtype=np.float16, noise: float = 4.0) -> FeatureData:
    """All of `iter_feature_videos` in preallocated arrays (peak memory ~ the output plus one video)."""
    n_videos = min(n_videos, n_frames)
    X = np.empty((n_frames, n_features), dtype)
    video = np.empty(n_frames, np.int32)
    frame = np.empty(n_frames, np.int32)
    y_va = np.empty((n_frames, 2), np.float32)
    y_expr = np.empty(n_frames, np.int64)
    y_au = np.empty((n_frames, N_AU), np.int64)
    names = []
    o = 0
    for i, (name, Xv, ctl) in enumerate(iter_feature_videos(n_frames, n_features, n_videos, seed, noise)):
        m = len(Xv)
        X[o:o + m] = Xv
        video[o:o + m] = i
        frame[o:o + m] = np.arange(1, m + 1)
        y_va[o:o + m], y_expr[o:o + m], y_au[o:o + m] = ctl.va, ctl.expr, ctl.au_labels
        names.append(name)
        o += m
    return FeatureData(X, video, frame, names, y_va, y_expr, y_au)
