"""Command line: ``python -m extract {run,list,convert,openface}``.

    python -m extract run --data DIR --out FILE --extractors fer[,spec2] --device cpu|cuda --batch 64
                          [--workers N] [--shard i/n] [--layout auto|affwild|folders|videos]
                          [--limit-videos N] [--allow-pickle] [--amp bf16|fp16] [--channels-last]
                          [--engine local|ray] [--ray-address auto|HOST:PORT] [--gpus-per-worker G]
    python -m extract list
    python -m extract convert ...          (extract.convert)
    python -m extract openface CSV_DIR --out FILE

Bad input and I/O failures print one line ``error: ...`` to stderr and exit 2.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path
from typing import Sequence

from features.errors import InputError

log = logging.getLogger("extract")
DEFAULT_DATA = "data/synthetic"


def split_specs(text: str) -> list[str]:
    """``fer,timm:x:w.pt:mean=0.5,0.5,0.5`` -> specs; a comma starts a new spec only before a name.

    Option values may hold commas (``mean=0.5,0.5,0.5``), so a comma-separated piece that does not look like
    the start of a spec (it contains '=' before any ':' or is a bare number) is glued to the previous spec.
    """
    out: list[str] = []
    for piece in text.split(","):
        p = piece.strip()
        head = p.split(":", 1)[0]
        if out and (not p or "=" in head or head.replace(".", "", 1).lstrip("+-").isdigit()):
            out[-1] += "," + piece
        elif p:
            out.append(p)
    if not out:
        raise InputError("--extractors is empty")
    return out


def create_extractor(spec: str, device: str, allow_pickle: bool = False, amp: str | None = None,
                     channels_last: bool = False, compile: bool = False, runtime: str = "torch"):
    """Build one extractor through the factory (extract.factory.create: `allow_pickle` goes only to factories
    that take it; `runtime="onnxruntime"` applies to torch networks, as the spec option does)."""
    from . import factory
    return factory.create(spec, allow_pickle=allow_pickle, device=device, amp=amp or None,
                          channels_last=channels_last or None, compile=compile or None,
                          runtime=runtime if runtime != "torch" else None)


def _ensure_default_data(data: Path) -> None:
    """`make extract` on a fresh checkout: generate the synthetic set when the default folder is missing."""
    if data.exists() or data.as_posix().rstrip("/") != DEFAULT_DATA:
        return
    from features.synthetic import make_affwild
    log.info("generating the synthetic data set in %s", data)
    make_affwild(data)


def cmd_run(a: argparse.Namespace) -> int:
    import torch
    from .faces import DetectorConfig
    from .runner import run
    from .sources import discover, parse_shard

    if a.device.startswith("cuda") and a.engine != "ray" and not torch.cuda.is_available():  # Ray: the workers' GPUs
        raise InputError(f"--device {a.device}: no CUDA device is available here")
    if a.threads:
        torch.set_num_threads(a.threads)
    shard = parse_shard(a.shard)
    if a.engine == "ray" and shard is not None:
        raise InputError("--shard and --engine ray exclude each other: the Ray engine spreads the videos over its "
                         "workers itself (drop --shard)")
    data = Path(a.data)
    _ensure_default_data(data)
    det = DetectorConfig(margin=a.margin, smooth=a.smooth, detect_size=a.detect_size)
    source = discover(data, a.layout, crops=a.crops, detector=det.to_dict())
    amp = a.amp if a.amp != "none" else None
    if a.engine == "ray":
        return _run_ray(a, source, det, amp)
    extractors = [create_extractor(s, a.device, a.allow_pickle, amp, a.channels_last, a.compile, a.runtime)
                  for s in split_specs(a.extractors)]
    summary = run(source, extractors, a.out, batch=a.batch, workers=a.workers, device=a.device, shard=shard,
                  limit_videos=a.limit_videos, detector=det, progress=not a.quiet,
                  resize_on=a.resize_on)
    print(f"extract: {summary.line()}", file=sys.stderr)
    return 0


def _run_ray(a: argparse.Namespace, source, det, amp: str | None) -> int:
    """--engine ray: the workers build the extractors themselves (extract.ray_engine)."""
    from functools import partial

    from . import ray_engine
    from .runner import Settings
    make = partial(ray_engine.build_all, create_extractor, split_specs(a.extractors), a.device, a.allow_pickle, amp,
                   a.channels_last, a.compile, a.runtime)
    settings = Settings(batch=a.batch, workers=a.workers, device=a.device, detector=det, progress=not a.quiet,
                        resize_on=a.resize_on)
    summary = ray_engine.run(source, make, a.out, settings=settings, address=a.ray_address,
                             n_workers=a.ray_workers, gpus_per_worker=a.gpus_per_worker,
                             limit_videos=a.limit_videos)
    print(f"extract: {summary.line()}", file=sys.stderr)
    return 0


def cmd_list(a: argparse.Namespace) -> int:
    from . import factory
    for name in factory.list_extractors():
        print(name)
    return 0


def _delegate(module: str, func: str, argv: Sequence[str]) -> int:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        raise InputError(f"{module} is not available in this installation") from None
    return int(getattr(mod, func)(list(argv)) or 0)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m extract", description="Frozen facial feature extraction.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="extract features of every video into an HDF5 cache (resumable)")
    r.add_argument("--data", default=DEFAULT_DATA, help="data folder (or one video file)")
    r.add_argument("--out", default="cache/features.h5", help="HDF5 cache to create or extend")
    r.add_argument("--extractors", default="fer", help="comma-separated extractor specs (python -m extract list)")
    r.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    r.add_argument("--batch", type=int, default=64)
    r.add_argument("--workers", type=int, default=None, help="decode processes (default: cores - 1, at most 8)")
    r.add_argument("--threads", type=int, default=0, help="torch CPU threads in the main process (0: default)")
    r.add_argument("--shard", default=None, help="i/n: extract shard i of n into <out>.shard-i-of-n.h5")
    r.add_argument("--layout", default="auto", choices=["auto", "affwild", "folders", "videos"])
    r.add_argument("--crops", default="auto", choices=["auto", "cropped", "cropped_aligned"],
                   help="Aff-Wild2 crop folder (auto: cropped, else cropped_aligned)")
    r.add_argument("--limit-videos", type=int, default=None, help="only the first N videos (sorted by name)")
    r.add_argument("--allow-pickle", action="store_true",
                   help="allow loading whole pickled modules (.pt): runs code from the file, trusted files only")
    r.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"],
                   help="autocast for torch models (changes the features; recorded in the cache)")
    r.add_argument("--channels-last", action="store_true", help="NHWC memory format for torch models (GPU)")
    r.add_argument("--compile", action="store_true",
                   help="torch.compile torch models (about a minute of compiling; ~1.5x faster B0 on a 2-core CPU)")
    r.add_argument("--runtime", default="torch", choices=["torch", "onnxruntime"],
                   help="run torch models through onnxruntime (exported in memory; ~2x faster B0 on a 2-core CPU; "
                        "needs the onnx extra)")
    r.add_argument("--margin", type=float, default=0.2, help="videos: crop side = (1 + margin) x face box")
    r.add_argument("--smooth", type=float, default=0.0, help="videos: box smoothing factor in [0, 1)")
    r.add_argument("--detect-size", type=int, default=256, help="videos: long side seen by the face detector")
    r.add_argument("--resize-on", default="auto", choices=["auto", "workers", "device"],
                   help="resize crops in the decode workers (PIL) or a batch at a time on the device (same "
                        "pixels; auto: device on CUDA)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="local: this machine; ray: a pool of Ray workers, one per GPU, each writing "
                        "<out>.shard-i-of-n.h5 (needs the ray extra)")
    r.add_argument("--ray-address", default=None,
                   help="--engine ray: auto (the cluster this node joined) or HOST:PORT; default: start Ray here")
    r.add_argument("--gpus-per-worker", type=float, default=1.0, help="--engine ray with CUDA: GPUs per worker")
    r.add_argument("--ray-workers", type=int, default=None,
                   help="--engine ray: number of workers (default: one per GPU on CUDA, one per CPU otherwise)")
    r.set_defaults(func=cmd_run)
    ls = sub.add_parser("list", help="list registered extractors")
    ls.set_defaults(func=cmd_list)
    sub.add_parser("convert", help="convert a checkpoint (see python -m extract convert -h)", add_help=False)
    sub.add_parser("openface", help="read OpenFace CSVs into the cache (python -m extract openface -h)",
                   add_help=False)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if argv and argv[0] == "convert":
            return _delegate("extract.convert", "main", argv[1:])
        if argv and argv[0] == "openface":
            return _delegate("extract.openface", "main", argv[1:])
        a = build_parser().parse_args(argv)
        return a.func(a)
    except (InputError, OSError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; committed videos are kept, rerun to resume", file=sys.stderr)
        return 130
