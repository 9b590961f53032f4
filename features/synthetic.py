"""A synthetic Aff-Wild2-like data set, deterministic by seed, for tests, the demo and benchmarks.

Every frame is driven by 12 action-unit intensities in [0, 1] (the order of `features.tasks.AU.labels`). A video
is a sequence of expression episodes (a class, a peak intensity, smooth onset and offset; tens of frames each)
plus slow noise, and every label derives from the same controls: AU = intensity > 0.5; EXPR = the episode's
class while it is clearly expressed (envelope > 0.5), else Neutral; valence/arousal = the class's circumplex
position (jittered per episode) scaled by the envelope. Labels are therefore smooth in time, so temporal
smoothing of per-frame predictions helps, as on the real data.

Two modes:
- `make_affwild(root, ...)` renders a parametric face per frame (`features.synthetic_faces`) as JPEG crops and
  writes exactly the Aff-Wild2 layout, quirks included (frames without a crop, a `_left`/`_right` pair, invalid
  rows, a video missing from one task, the MTL file, organisers' test sample lists).
- `make_feature_data(n_frames, ...)` emits feature-level data at Aff-Wild2 scale without rendering (X = latent
  controls through a random projection, a per-video identity offset and noise), for benchmarks.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import InputError
from .synthetic_faces import Identity, random_identity, render_face
from .tasks import AU, EXPR, VA, Task, get_task

__all__ = ["PROTOTYPES", "VA_CENTRES", "CLASS_WEIGHTS", "Controls", "make_controls", "Identity",
           "random_identity", "render_face", "SyntheticInfo", "make_affwild", "FeatureData",
           "iter_feature_videos", "make_feature_data"]

N_AU = AU.n_outputs
_A = {name: i for i, name in enumerate(AU.labels)}
_identity = random_identity      # older name, kept for callers


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
    """Per-frame latent state of one video (row i is frame i + 1)."""
    aus: np.ndarray        # (n, 12) intensities in [0, 1]
    expr: np.ndarray       # (n,) class 0..7
    va: np.ndarray         # (n, 2) in [-1, 1]

    def __len__(self) -> int:
        return len(self.expr)

    @property
    def au_labels(self) -> np.ndarray:
        return (self.aus > 0.5).astype(np.int64)


def _smooth_noise(rng: np.random.Generator, n: int, d: int, width: int = 9) -> np.ndarray:
    """Slowly varying noise: white noise through a moving average (unit variance)."""
    x = rng.standard_normal((n + width - 1, d))
    c = np.cumsum(np.vstack([np.zeros((1, d)), x]), axis=0)
    return (c[width:] - c[:-width]) / np.sqrt(width)


def make_controls(n: int, rng: np.random.Generator, episode_len: tuple[int, int] = (20, 70)) -> Controls:
    """Smooth expression episodes over n frames, and the labels they imply (vectorised over episodes: the
    feature-level mode makes tens of thousands of them)."""
    lo, hi = episode_len
    length = rng.integers(lo, hi, n // lo + 1)
    k = int(np.searchsorted(np.cumsum(length), n)) + 1           # episodes needed to cover n frames
    length = length[:k]
    start = np.cumsum(length) - length
    c = rng.choice(8, size=k, p=CLASS_WEIGHTS)
    peak = rng.uniform(0.7, 1.0, k)
    proto = PROTOTYPES[c]
    # Other: two or three AUs at random, outside the usual prototypes' pairings
    other = c == 7
    pick = np.argsort(rng.random((k, N_AU)), axis=1).argsort(axis=1) < rng.integers(2, 4, k)[:, None]
    proto = np.where(other[:, None], pick.astype(float), proto) * rng.uniform(0.8, 1.0, (k, N_AU))
    centre = np.clip(VA_CENTRES[c] + rng.normal(0, 0.1, (k, 2)), -1, 1)
    ep = np.repeat(np.arange(k), length)[:n]                      # episode of each frame
    u = np.arange(n) - start[ep]
    ramp = np.maximum(2, length // 4)[ep]
    env = np.minimum(1.0, np.minimum((u + 1) / ramp, (length[ep] - u) / ramp))
    env = np.sin(env * np.pi / 2) ** 2 * peak[ep]                 # smooth onset and offset
    aus = np.clip(env[:, None] * proto[ep] + 0.08 * _smooth_noise(rng, n, N_AU), 0, 1)
    expr = np.where(env > 0.5, c[ep], 0).astype(np.int64)
    va = np.clip(env[:, None] * centre[ep] + 0.05 * _smooth_noise(rng, n, 2), -1, 1)
    return Controls(aus, expr, va)


# ----------------------------------------------------------------------------------------------------------
# the Aff-Wild2 layout

SPLIT_FOLDERS = {"train": "Train_Set", "val": "Validation_Set"}
MTL_FILES = {"train": "train_set.txt", "val": "validation_set.txt"}


@dataclass
class SyntheticInfo:
    """What `make_affwild` wrote: paths, videos per split, and the true per-frame controls."""
    root: Path
    splits: dict[str, list[str]]                     # "train" / "val" / "test" -> videos
    controls: dict[str, Controls] = field(repr=False, default_factory=dict)
    missing_crops: dict[str, np.ndarray] = field(repr=False, default_factory=dict)   # 1-based frames
    invalid: dict[str, dict[str, np.ndarray]] = field(repr=False, default_factory=dict)  # task -> video -> frames
    annotated: dict[str, list[str]] = field(default_factory=dict)   # task -> videos with an annotation file
    mtl: dict[str, Path] = field(default_factory=dict)              # split -> MTL file
    test_samples: dict[str, Path] = field(default_factory=dict)     # task -> organisers' sample list

    @property
    def crops(self) -> Path:
        return self.root / "cropped"

    def split_of(self, video: str) -> str:
        return next(s for s, vs in self.splits.items() if video in vs)

    def annotation(self, task: str | Task, video: str) -> Path:
        """Where `video`'s labels of `task` are (the file exists only if video is in `annotated[task]`)."""
        t = get_task(task)
        return self.root / t.folders[0] / SPLIT_FOLDERS[self.split_of(video)] / f"{video}.txt"

    def labels(self, task: str | Task, video: str) -> np.ndarray:
        """The labels written for `video` (invalid rows marked), as the annotation file holds them."""
        t = get_task(task)
        ctl = self.controls[video]
        y = {"va": ctl.va, "expr": ctl.expr, "au": ctl.au_labels}[t.name].astype(t.label_dtype)
        if video not in self.annotated.get(t.name, ()):
            return np.full_like(y, t.invalid)
        y[self.invalid[t.name][video] - 1] = t.invalid
        return y


_RESOLUTIONS = ("1920x1080", "1280x720", "640x360", "484x360", "480x360", "960x540")


def _video_names(n: int, rng: np.random.Generator) -> list[str]:
    """Unique names in the styles of the real ones: `12-24-1920x1080`, `video10_1`, `118`."""
    out: list[str] = []
    while len(out) < n:
        kind = len(out) % 4
        if kind == 3:
            name = f"video{rng.integers(1, 99)}_{rng.integers(1, 4)}"
        elif kind == 2:
            name = str(rng.integers(1, 450))
        else:
            name = f"{rng.integers(1, 450)}-{rng.integers(10, 60)}-{rng.choice(_RESOLUTIONS)}"
        if name not in out:
            out.append(name)
    return out


def _fmt_labels(task: Task, rows: np.ndarray) -> list[str]:
    if task is VA:
        return [f"{v:.3f},{a:.3f}" if v != VA.invalid else "-5,-5" for v, a in rows]
    if task is EXPR:
        return [str(int(x)) for x in rows]
    return [",".join(str(int(x)) for x in r) for r in rows]


def _video_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _render_video(out_dir: Path, ctl: Controls, ident: Identity, skip: set[int], size: int,
                  rng: np.random.Generator) -> None:
    """JPEG crops 00001.jpg ... with slow head motion and lighting drift; frames in `skip` get no crop."""
    n = len(ctl)
    motion = _smooth_noise(rng, n, 4, width=15)
    pose = np.c_[0.02 * motion[:, :2], 4.0 * motion[:, 2]]         # dx, dy (image fractions), roll (deg)
    light = 1.0 + 0.05 * motion[:, 3]
    out_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        if i + 1 not in skip:
            img = render_face(ctl.aus[i], ident, size, rng, pose=tuple(pose[i]), light=float(light[i]))
            img.save(out_dir / f"{i + 1:05d}.jpg", quality=90)


def make_affwild(root: str | Path, n_train: int = 4, n_val: int = 2, n_frames: int = 120, size: int = 112,
                 seed: int = 0, n_test: int = 0) -> SyntheticInfo:
    """Write a small Aff-Wild2-like data set under `root` and return what was written.

    Layout: `cropped/<video>/00001.jpg`; `{VA_Estimation,EXPR_Classification,AU_Detection}_Challenge/
    {Train_Set,Validation_Set}/<video>.txt`; `MTL_Challenge/{train,validation}_set.txt`; with n_test > 0 also
    test crops and `test_samples/{va,expr,au}.txt`. The second training video is a `_left`/`_right` pair (two
    faces in one source video, so n_train + 1 training videos); each video has a short run of frames without
    a crop and a few invalid rows per task; the first training video has no AU annotation. Video lengths vary
    by +-20 % around n_frames.
    """
    if min(n_train, n_val, n_test) < 0 or n_frames < 10 or size < 32:
        raise InputError(f"make_affwild: need n_train, n_val, n_test >= 0, n_frames >= 10 and size >= 32 "
                         f"(got {n_train}, {n_val}, {n_test}, {n_frames}, {size})")
    root = Path(root)
    names = _video_names(n_train + n_val + n_test, np.random.default_rng(seed))
    splits = {"train": names[:n_train], "val": names[n_train:n_train + n_val], "test": names[n_train + n_val:]}
    if n_train >= 2:
        base = splits["train"][1]
        splits["train"][1:2] = [f"{base}_left", f"{base}_right"]
    info = SyntheticInfo(root, splits, invalid={t.name: {} for t in (VA, EXPR, AU)},
                         annotated={t.name: [] for t in (VA, EXPR, AU)})
    # as in the real data, not every video is annotated for every task
    no_au = splits["train"][0] if len(splits["train"]) > 2 else None
    for split, videos in splits.items():
        for video in videos:
            source = video.removesuffix("_left").removesuffix("_right")
            n = int(n_frames * _video_rng(seed, source).uniform(0.8, 1.2))   # a pair shares its length
            vrng = _video_rng(seed, video)
            ctl = make_controls(n, vrng)
            ident = random_identity(vrng)
            start = int(vrng.integers(1, max(2, n - 6)))       # a short run without a face (never frame 1)
            missing = np.arange(start, min(n, start + int(vrng.integers(2, 6)))) + 1
            info.controls[video], info.missing_crops[video] = ctl, missing
            _render_video(info.crops / video, ctl, ident, set(missing.tolist()), size, vrng)
            if split == "test":
                continue
            for task in (VA, EXPR, AU):
                a = int(vrng.integers(0, max(1, n - 4)))
                info.invalid[task.name][video] = np.arange(a, min(n, a + 3)) + 1
                if video == no_au and task is AU:
                    continue
                info.annotated[task.name].append(video)
                out = info.annotation(task, video)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(task.header + "\n" + "\n".join(_fmt_labels(task, info.labels(task, video))) + "\n")
    _write_mtl(info)
    if splits["test"]:
        d = root / "test_samples"
        d.mkdir(parents=True, exist_ok=True)
        rows = [f"{v}/{i + 1:05d}.jpg" for v in splits["test"] for i in range(len(info.controls[v]))]
        for task in (VA, EXPR, AU):
            info.test_samples[task.name] = d / f"{task.name}.txt"
            info.test_samples[task.name].write_text(f"image_location,{task.header}\n" + "\n".join(rows) + "\n")
    return info


def _write_mtl(info: SyntheticInfo) -> None:
    """The MTL challenge's single file per split: one row per frame with a crop, invalid markers kept."""
    d = info.root / "MTL_Challenge"
    d.mkdir(parents=True, exist_ok=True)
    header = "image,valence,arousal,expression," + AU.header
    for split, fname in MTL_FILES.items():
        rows = []
        for v in info.splits[split]:
            va, ex, au = (info.labels(t, v) for t in (VA, EXPR, AU))
            skip = set(info.missing_crops[v].tolist())
            rows += [f"{v}/{i + 1:05d}.jpg,{_fmt_labels(VA, va[i:i + 1])[0]},{ex[i]},"
                     + ",".join(map(str, au[i])) for i in range(len(ex)) if i + 1 not in skip]
        info.mtl[split] = d / fname
        info.mtl[split].write_text(header + "\n" + "\n".join(rows) + ("\n" if rows else ""))


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
    task: str = "expr"         # whose labels `y` returns

    def labels(self, task: str | Task) -> np.ndarray:
        return {"va": self.y_va, "expr": self.y_expr, "au": self.y_au}[get_task(task).name]

    @property
    def y(self) -> np.ndarray:
        return self.labels(self.task)


def _lengths(n_frames: int, n_videos: int, rng: np.random.Generator) -> np.ndarray:
    """Video lengths (each >= 1) summing to n_frames, unequal like real videos."""
    w = rng.gamma(2.0, 1.0, n_videos)
    return 1 + rng.multinomial(n_frames - n_videos, w / w.sum())


def _f16_into(src: np.ndarray, dst: np.ndarray, sign: np.ndarray) -> None:
    """float32 -> float16 by bit arithmetic, ~3x faster than numpy's cast (scalar on x86: ~7 s per million
    1290-wide rows). Rounds half up, flushes |x| < 6.1e-5 to +-6.1e-5 and saturates at +-65504: for
    synthetic features that is the same data. `src` is overwritten; `sign` is scratch of src's shape."""
    u = src.view(np.uint32)
    np.right_shift(u, 16, out=sign)
    np.bitwise_and(sign, 0x8000, out=sign)
    np.bitwise_and(u, 0x7FFFFFFF, out=u)
    np.clip(u, 0x38800000, 0x477FE000, out=u)        # smallest normal .. largest finite float16
    u -= 0x37FFF000                                  # re-bias the exponent (127 -> 15), + half an ulp
    u >>= 13
    u |= sign
    dst.view(np.uint16)[...] = u


class _Projection:
    """Latent controls -> features: z @ W + per-video offset + white noise (rows of a fixed noise bank)."""
    BLOCK = 256      # rows per step: keeps the scratch buffers in cache

    def __init__(self, n_features: int, seed: int, noise: float, identity: float, n_bank: int):
        rng = np.random.default_rng(seed)
        self.latent = N_AU + 8 + 2
        self.W = (rng.standard_normal((self.latent, n_features)) / np.sqrt(self.latent)).astype(np.float32)
        self.bias = (rng.standard_normal(n_features) * 0.1).astype(np.float32)
        self.identity = identity
        # Fresh normals for a million rows x 1290 cost ~20 s; rows drawn at random from a fixed bank of 16k
        # noise rows serve learning just as well (each row recurs with unrelated labels) at a tenth the cost.
        self.bank = noise * rng.standard_normal((n_bank, n_features), dtype=np.float32)

    def fill(self, ctl: Controls, rng: np.random.Generator, dst: np.ndarray) -> None:
        n, d = dst.shape
        z = np.hstack([ctl.aus, np.eye(8)[ctl.expr] * ctl.aus.max(axis=1, keepdims=True), ctl.va, np.ones((n, 1))])
        offset = self.bias + self.identity * rng.standard_normal(d, dtype=np.float32)
        W = np.vstack([self.W, offset[None]])        # the offset rides in the matmul via z's column of ones
        z = z.astype(np.float32)
        idx = rng.integers(0, len(self.bank), n)
        B = min(self.BLOCK, n)
        buf, nb = np.empty((B, d), np.float32), np.empty((B, d), np.float32)
        sign = np.empty((B, d), np.uint32) if dst.dtype == np.float16 else None
        for a in range(0, n, B):
            m = min(B, n - a)
            np.matmul(z[a:a + m], W, out=buf[:m])
            np.take(self.bank, idx[a:a + m], axis=0, out=nb[:m])
            buf[:m] += nb[:m]
            if sign is not None:
                _f16_into(buf[:m], dst[a:a + m], sign[:m])
            else:
                dst[a:a + m] = buf[:m]


def _one_blas_thread():
    """The matmuls here are tiny (256 x 23 x d): BLAS threads only add spin-waits, 4x slower on a busy box."""
    from threadpoolctl import threadpool_limits     # ships with scikit-learn
    return threadpool_limits(1, user_api="blas")


def _feature_videos(n_frames: int, n_features: int, n_videos: int, seed: int, noise: float, identity: float):
    if n_frames < 1 or n_features < 1 or n_videos < 1:
        raise InputError(f"feature data: need n_frames, n_features, n_videos >= 1 "
                         f"(got {n_frames}, {n_features}, {n_videos})")
    n_videos = min(n_videos, n_frames)
    proj = _Projection(n_features, seed, noise, identity, min(16384, n_frames))
    lens = _lengths(n_frames, n_videos, np.random.default_rng([seed, 1 << 30]))
    for i, n in enumerate(lens):
        vrng = np.random.default_rng([seed, i])
        yield i, f"vid{i:04d}", make_controls(int(n), vrng), vrng, proj


def iter_feature_videos(n_frames: int, n_features: int = 1290, n_videos: int = 600, seed: int = 0,
                        noise: float = 4.0, identity: float = 0.0, dtype=np.float32
                        ) -> Iterator[tuple[str, np.ndarray, Controls]]:
    """Per-video blocks (name, X (n, d) of dtype, controls), e.g. to write a cache without holding all rows.

    X = latent controls (12 AU intensities, expression one-hot scaled by intensity, valence, arousal) through a
    fixed random projection, plus a per-video offset of scale `identity` (who is in the video) and white noise
    of scale `noise`: a head has something real, but not trivial, to learn. Same rows as `make_feature_data`.
    """
    for _, name, ctl, vrng, proj in _feature_videos(n_frames, n_features, n_videos, seed, noise, identity):
        X = np.empty((len(ctl), n_features), dtype)
        with _one_blas_thread():
            proj.fill(ctl, vrng, X)
        yield name, X, ctl


def make_feature_data(n_frames: int, n_features: int = 1290, n_videos: int = 600, seed: int = 0,
                      dtype=np.float16, task: str = "expr", noise: float = 4.0,
                      identity: float = 0.0) -> FeatureData:
    """`iter_feature_videos` written into preallocated arrays (peak memory ~ the output plus one video).

    Rows are ordered by (video, frame), each video's rows contiguous; `task` picks what `.y` returns (all three
    tasks' labels are always there).
    """
    task = get_task(task).name
    n_videos = min(n_videos, n_frames)
    X = np.empty((n_frames, n_features), dtype)
    video = np.empty(n_frames, np.int32)
    frame = np.empty(n_frames, np.int32)
    y_va = np.empty((n_frames, 2), np.float32)
    y_expr = np.empty(n_frames, np.int64)
    y_au = np.empty((n_frames, N_AU), np.int64)
    names = []
    o = 0
    with _one_blas_thread():
        for i, name, ctl, vrng, proj in _feature_videos(n_frames, n_features, n_videos, seed, noise, identity):
            m = len(ctl)
            proj.fill(ctl, vrng, X[o:o + m])
            video[o:o + m] = i
            frame[o:o + m] = np.arange(1, m + 1)
            y_va[o:o + m], y_expr[o:o + m], y_au[o:o + m] = ctl.va, ctl.expr, ctl.au_labels
            names.append(name)
            o += m
    return FeatureData(X, video, frame, names, y_va, y_expr, y_au, task)
