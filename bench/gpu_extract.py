"""GPU extraction rows, side by side in one run (what bench/gpu.sh runs on one GPU machine; not a `make bench`
module: it needs CUDA and a machine sized for 100,000 frames).

    python bench/gpu_extract.py [--device cuda] [--frames 100000] [--per-video 1000] [--batch 256] [--workers 14]
                                [--loop 2000] [--agree 4096] [--out FILE]

Rows (random-weight timm networks, speed and agreement only):
- B0 at 224 (bf16 + channels_last, batch 256): end to end with JPEG decode on the device (``--decode device``)
  vs model-only vs a per-image loop (hsemotion style), and end to end with PIL decode in the workers;
  goals: end to end >= 0.9 x model-only and >= 10,000 frames/s.
- B2 at 260: end to end vs model-only.
- B0 + ResNet18 (224) in one run, decoded once: end to end vs the two models alone back to back.
- bf16 and fp16 vs fp32 features of B0 (same frames): cosine of embeddings, max |logits delta|, and the change
  in macro F1 (the P_EXPR measure) of an MLP head trained on each precision's embeddings for a synthetic
  8-class task defined from the fp32 embedding (a proxy: the weights are random, there are no real labels).
The frames are generated here: JPEG crops of 112 px (quality 90) in videos of `--per-video` frames.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _write_video(args) -> None:
    root, v, n, size = args
    from PIL import Image
    rng = np.random.default_rng(v)
    base = rng.integers(0, 255, (size // 8, size // 8, 3), np.uint8)
    base = np.asarray(Image.fromarray(base).resize((size, size), Image.BILINEAR))   # face-like smoothness
    d = Path(root) / "cropped" / f"v{v:05d}"
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = np.roll(base, (i % size, (3 * i) % size), axis=(0, 1))
        Image.fromarray(img).save(d / f"{i + 1:05d}.jpg", quality=90)


def make_frames(root: Path, n: int, per_video: int, size: int = 112, procs: int | None = None) -> Path:
    """n JPEG crops in the Aff-Wild2 layout, written by `procs` processes."""
    jobs = [(str(root), v, min(per_video, n - v * per_video), size) for v in range((n + per_video - 1) // per_video)]
    with Pool(procs or os.cpu_count()) as p:
        p.map(_write_video, jobs)
    return root


def timm_ext(tmp: Path, arch: str, size: int, device: str, amp: str | None, name: str):
    import timm
    import torch
    from safetensors.torch import save_file
    from extract import factory
    w = tmp / f"{arch}.safetensors"
    if not w.exists():
        torch.manual_seed(0)
        net = timm.create_model(arch, pretrained=False, num_classes=8)
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(w))
    return factory.create(f"timm:{arch}:{w}:size={size}:name={name}", device=device, amp=amp,
                          channels_last=True, runtime="torch")


def e2e(src, exts, out: Path, batch: int, workers: int, device: str, decode: str):
    """(frames/s, summary) of a full run after a one-video warm-up run (cudnn autotune, allocator)."""
    from extract.runner import run
    run(src, exts, out.with_suffix(".warm.h5"), batch=batch, workers=workers, device=device, progress=False,
        limit_videos=1, decode=decode)
    t = time.perf_counter()
    s = run(src, exts, out, batch=batch, workers=workers, device=device, progress=False, decode=decode)
    return s.frames / (time.perf_counter() - t), s


def model_only(ext, n: int, batch: int, device: str) -> float:
    """uint8 batches already in (pinned) host memory through launch/finish, one batch in flight as the runner."""
    import torch
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (batch, ext.input_size, ext.input_size, 3),
                                                           np.uint8))
    if device.startswith("cuda"):
        x = x.pin_memory()
    with torch.inference_mode():
        ext(x)
        steps = max(2, n // batch)
        t = time.perf_counter()
        prev = None
        for _ in range(steps):
            fin = ext.launch(x)
            if prev is not None:
                prev()
            prev = fin
        prev()
        return steps * batch / (time.perf_counter() - t)


def per_image_loop(ext, paths: list[str], device: str) -> float:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_extract import _per_image_loop
    return _per_image_loop(ext, paths, device)


def agreement(tmp: Path, src, device: str, n: int, batch: int) -> list[dict]:
    """bf16 / fp16 vs fp32 B0 features of the same n frames (the runner's pixels)."""
    import torch
    from sklearn.metrics import f1_score
    from sklearn.neural_network import MLPClassifier
    from extract.datasets import ImageBatches
    vids = list(src.videos)
    ds = ImageBatches(vids, list(range(len(vids))), [224], batch)
    xs = []
    for i in range(len(ds)):
        xs.append(ds[i]["pix"][224])
        if sum(len(x) for x in xs) >= n:
            break
    x = torch.cat(xs)[:n]
    video = np.concatenate([ds.vid[:n]])
    feats = {}
    for amp in (None, "bf16", "fp16"):
        if amp == "fp16" and not device.startswith("cuda"):
            continue
        ext = timm_ext(tmp, "tf_efficientnet_b0", 224, device, amp, "b0")
        with torch.inference_mode():
            outs = [ext(x[i:i + batch]) for i in range(0, n, batch)]
        feats[amp or "fp32"] = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
    ref = feats["fp32"]
    # a synthetic 8-class task read from the fp32 embedding (random weights carry no real labels)
    rng = np.random.default_rng(0)
    emb = ref["embedding"]
    z = (emb - emb.mean(0)) / (emb.std(0) + 1e-6)
    y = np.argmax(z @ rng.normal(size=(z.shape[1], 8)) + rng.normal(scale=2.0, size=(len(z), 8)), 1)
    train = video % 5 != 0

    def f1(e):
        e = (e - e[train].mean(0)) / (e[train].std(0) + 1e-6)
        clf = MLPClassifier((256,), max_iter=200, random_state=0).fit(e[train], y[train])
        return f1_score(y[~train], clf.predict(e[~train]), average="macro")
    base = f1(emb)
    rows = []
    for prec, f in feats.items():
        if prec == "fp32":
            continue
        a, b = ref["embedding"].astype(np.float64), f["embedding"].astype(np.float64)
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
        dl = np.abs(ref["logits"] - f["logits"]).max()
        fp = f1(f["embedding"])
        rows.append({"row": f"B0 224 {prec} vs fp32 features, {n} frames", "cosine_min": float(cos.min()),
                     "cosine_mean": float(cos.mean()), "max_abs_logits_delta": float(dl),
                     "logits_scale": float(np.abs(ref["logits"]).max()),
                     "macro_f1_fp32": float(base), f"macro_f1_{prec}": float(fp), "delta_f1": float(fp - base)})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--per-video", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    ap.add_argument("--loop", type=int, default=2000, help="frames of the per-image loop")
    ap.add_argument("--agree", type=int, default=4096, help="frames of the precision agreement rows (0: none)")
    ap.add_argument("--small", type=int, default=20_000, help="frames of the B2 and B0+ResNet18 rows")
    ap.add_argument("--out", default=None, help="also write the rows here (JSON lines)")
    a = ap.parse_args(argv)
    import torch
    from extract.sources import discover
    cuda = a.device.startswith("cuda")
    dev_name = torch.cuda.get_device_name(0) if cuda else f"CPU x{torch.get_num_threads()}"
    amp = "bf16" if cuda else None
    rows: list[dict] = []

    def emit(r: dict) -> None:
        r = {"device": dev_name, **{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}}
        rows.append(r)
        print(json.dumps(r), flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(json.dumps(r) + "\n")

    with tempfile.TemporaryDirectory(prefix="gpu_extract_") as td:
        tmp = Path(td)
        t = time.perf_counter()
        src = discover(make_frames(tmp / "data", a.frames, a.per_video))
        small = discover(make_frames(tmp / "small", min(a.small, a.frames), a.per_video))
        emit({"row": "frames generated", "frames": a.frames, "seconds": round(time.perf_counter() - t, 1)})
        b0 = timm_ext(tmp, "tf_efficientnet_b0", 224, a.device, amp, "b0")
        fps, s = e2e(src, [b0], tmp / "b0_dev.h5", a.batch, a.workers, a.device, "device")
        mo = model_only(b0, min(a.frames, 50_000), a.batch, a.device)
        fps_w, sw = e2e(src, [b0], tmp / "b0_wrk.h5", a.batch, a.workers, a.device, "workers")
        paths = [p for v in src.videos for p in v.paths][:a.loop]
        loop = per_image_loop(b0, paths, a.device)
        emit({"row": f"B0 224 {amp or 'fp32'} channels_last batch {a.batch}, {a.frames} frames, {a.workers} workers",
              "e2e_decode_device": round(fps), "e2e_decode_workers": round(fps_w), "model_only": round(mo),
              "per_image_loop": round(loop), "ratio_e2e_model": round(fps / mo, 3),
              "ratio_e2e_loop": round(fps / loop, 1), "goal": "ratio >= 0.9 and e2e >= 10,000 frames/s",
              "ok": bool(fps / mo >= 0.9 and fps >= 10_000), "wait_s": round(s.wait_s, 1), "model_s": round(s.model_s, 1),
              "write_s": round(s.write_s, 1), "workers_wait_s": round(sw.wait_s, 1)})
        b2 = timm_ext(tmp, "tf_efficientnet_b2", 260, a.device, amp, "b2")
        fps, s = e2e(small, [b2], tmp / "b2.h5", a.batch, a.workers, a.device, "device")
        mo = model_only(b2, min(a.small, 20_000), a.batch, a.device)
        emit({"row": f"B2 260 {amp or 'fp32'} batch {a.batch}, {min(a.small, a.frames)} frames",
              "e2e_decode_device": round(fps), "model_only": round(mo), "ratio_e2e_model": round(fps / mo, 3),
              "wait_s": round(s.wait_s, 1), "model_s": round(s.model_s, 1)})
        r18 = timm_ext(tmp, "resnet18", 224, a.device, amp, "r18")
        fps, s = e2e(small, [b0, r18], tmp / "b0r18.h5", a.batch, a.workers, a.device, "device")
        m0, m1 = model_only(b0, min(a.small, 20_000), a.batch, a.device), model_only(r18, min(a.small, 20_000),
                                                                                       a.batch, a.device)
        both = 1 / (1 / m0 + 1 / m1)
        emit({"row": f"B0 + ResNet18 224 decoded once, batch {a.batch}, {min(a.small, a.frames)} frames",
              "e2e_decode_device": round(fps), "model_only_both": round(both), "ratio_e2e_model": round(fps / both, 3),
              "wait_s": round(s.wait_s, 1), "model_s": round(s.model_s, 1)})
        if a.agree:
            for r in agreement(tmp, small, a.device, min(a.agree, a.small, a.frames), a.batch):
                emit(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
