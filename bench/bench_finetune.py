"""Fine-tuning throughput: training frames/s of `python -m extract finetune` vs the same network's forward+backward
on random tensors already on the device (the ceiling: what training reaches if frames cost nothing to read).

    python bench/bench_finetune.py [--device cpu|cuda] [--frames N] [--per-video N] [--batch B] [--workers W]
                                   [--amp none|bf16|fp16] [--arch tf_efficientnet_b0] [--size 224] [--quick]
                                   [--out FILE.jsonl]

Rows (measured side by side in one run, same network, batch, input size, amp and device):
- training frames/s of the second epoch (the first warms up cudnn, the allocator and the page cache) / the
  ceiling; goal >= 0.8: the input pipeline (JPEG decode, resize, flip and crop in the decode workers; colour
  jitter and normalisation on the device) and the optimizer step cost at most a fifth of the time.
- the input pipeline alone (the decode workers' batches, nothing on the device) / the ceiling: above 1 when the
  workers can keep up with the network at all.
The network is a timm model (default tf_efficientnet_b0, EmotiEffNet-B0's architecture) with random weights,
loaded through the registry's generic timm spec; the frames are generated here: 112 px JPEG crops in the
Aff-Wild2 layout with EXPR labels (random: speed only).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GOAL = 0.8


def _write_video(args) -> None:
    """One video of crops (smooth random images shifted frame by frame) and its EXPR labels."""
    root, name, n, split = args
    from PIL import Image
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    base = rng.integers(0, 255, (14, 14, 3), np.uint8)
    base = np.asarray(Image.fromarray(base).resize((112, 112), Image.BILINEAR))
    d = Path(root) / "cropped" / name
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.roll(base, (i % 112, (3 * i) % 112), axis=(0, 1))).save(d / f"{i + 1:05d}.jpg", quality=90)
    lab = Path(root) / "EXPR_Classification_Challenge" / split
    lab.mkdir(parents=True, exist_ok=True)
    y = rng.integers(0, 8, n)
    (lab / f"{name}.txt").write_text("Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n"
                                     + "\n".join(map(str, y)) + "\n")


def make_data(root: Path, frames: int, per_video: int, val_videos: int = 2) -> Path:
    n_train = max(1, -(-frames // per_video))
    jobs = [(str(root), f"t{v:04d}", per_video, "Train_Set") for v in range(n_train)]
    jobs += [(str(root), f"v{v:04d}", min(per_video, 200), "Validation_Set") for v in range(val_videos)]
    # threads, not processes: Pillow's JPEG encoder releases the GIL, and bench/run.py loads this module under a
    # name a process pool could not pickle its functions by
    with ThreadPoolExecutor(max(1, min(len(jobs), os.cpu_count() or 1))) as pool:
        list(pool.map(_write_video, jobs))
    return root


def _weights(tmp: Path, arch: str) -> Path:
    import timm
    import torch
    from safetensors.torch import save_file
    torch.manual_seed(0)
    m = timm.create_model(arch, pretrained=False, num_classes=8)
    w = tmp / f"{arch}.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(w))
    return w


def _pipeline_only(settings, size: int, per_epoch_rows: int) -> float:
    """Frames/s of the decode workers' batches alone (epoch 1's training sample, augmented), nothing on the device."""
    from extract.finetune.frames import EpochOrder, FrameSet, crop_videos, labelled_frames
    from extract.finetune.train import _loader
    from features.tasks import EXPR
    fr = labelled_frames(settings.data, EXPR, "train", crop_videos(settings.data))
    keys = list(EpochOrder(fr, settings.frames_per_video, settings.seed))[:per_epoch_rows]
    loader = _loader(FrameSet(fr, size, EXPR, True, settings.seed), settings, keys, drop_last=False)
    it = iter(loader)
    next(it)                                # the workers' start-up is left out, as in a running fine-tuning
    n, t = 0, time.perf_counter()
    for xb, _, _ in it:
        n += len(xb)
    return n / (time.perf_counter() - t)


def run(quick: bool = False, device: str | None = None, frames: int | None = None, per_video: int | None = None,
        batch: int | None = None, workers: int | None = None, amp: str | None = None,
        arch: str = "tf_efficientnet_b0", size: int = 224) -> list[dict]:
    import torch
    from extract.finetune import Settings, finetune
    device = device or "cpu"
    cuda = device.startswith("cuda")
    cores = os.cpu_count() or 2
    if not cuda:
        torch.set_num_threads(max(1, cores - 1))        # one core decodes
    frames = frames or (20000 if cuda else (32 if quick else 96))
    per_video = per_video or (500 if cuda else 16)
    batch = batch or (256 if cuda else 8)
    workers = workers if workers is not None else (max(1, cores - 2) if cuda else 1)
    amp = (amp or ("bf16" if cuda else "none"))
    amp = None if amp == "none" else amp
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_finetune_") as td:
        tmp = Path(td)
        data = make_data(tmp / "data", frames, per_video)
        w = _weights(tmp, arch)
        s = Settings(task="expr", data=data, source=f"timm:{arch}:{w}:size={size}", out=tmp / "ft.safetensors",
                     epochs=2, batch=batch, frames_per_video=per_video, val_frames_per_video=max(batch, 8),
                     device=device, amp=amp, workers=workers, ceiling_steps=10 if cuda else 2, progress=False)
        res = finetune(s)
        fps, top = res.history[-1]["frames_per_s"], res.ceiling
        what = f"{arch} {size} px, batch {batch}{', ' + amp if amp else ''}, {workers} decode workers"
        dev = torch.cuda.get_device_name(0) if cuda else f"CPU ({cores} cores)"
        rows.append({"benchmark": f"fine-tuning on {dev}: training frames/s (epoch 2) / forward+backward on random "
                                  f"tensors ({what})",
                     "measured": f"{fps:.1f} frames/s", "baseline": f"{top:.1f} frames/s (ceiling)",
                     "ratio": fps / top, "goal": f">= {GOAL}", "ok": fps / top >= GOAL})
        pipe = _pipeline_only(s, size, min(res.history[-1]["frames"], batch * (50 if cuda else 4)))
        rows.append({"benchmark": f"fine-tuning input pipeline alone on {dev} (decode, resize, flip and crop in "
                                  f"{workers} workers) / the ceiling",
                     "measured": f"{pipe:.1f} frames/s", "baseline": f"{top:.1f} frames/s (ceiling)",
                     "ratio": pipe / top, "goal": ">= 1 (informative)", "ok": True})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--frames", type=int, default=None, help="training frames (videos of --per-video frames)")
    ap.add_argument("--per-video", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--amp", default=None, choices=["none", "bf16", "fp16"])
    ap.add_argument("--arch", default="tf_efficientnet_b0")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None, help="append the rows as JSON lines")
    a = ap.parse_args(argv)
    rows = run(a.quick, a.device, a.frames, a.per_video, a.batch, a.workers, a.amp, a.arch, a.size)
    for r in rows:
        print(f"{r['benchmark']}: {r['measured']} vs {r['baseline']} = {r['ratio']:.2f} (goal {r['goal']}: "
              f"{'ok' if r['ok'] else 'NOT MET'})", flush=True)
    if a.out:
        with open(a.out, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
