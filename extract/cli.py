"""Command line: ``python -m extract {run,list,convert,openface,merge,finetune}``.

    python -m extract run --data DIR --cache FILE --extractors fer[,spec2] --device cpu|cuda --batch 64
                          [--workers N] [--shard i/n] [--layout auto|affwild|folders|images|videos]
                          [--detect auto|on|off] [--detector auto|mtcnn|haar] [--faces largest|all]
                          [--track-gap FRAMES] [--track-min FRAMES] [--track-move SIDES]
                          [--limit-videos N] [--allow-pickle] [--amp bf16|fp16] [--channels-last]
                          [--engine local|ray] [--ray-address auto|HOST:PORT] [--gpus-per-worker G]
    python -m extract list
    python -m extract convert ...          (extract.convert)
    python -m extract openface CSV_DIR --out FILE
    python -m extract merge CACHE_OR_SHARD... --out FILE [--remove-inputs]
    python -m extract finetune --task expr|va|au --data ROOT --from SPEC --out CKPT.safetensors [--epochs N]
                               [--batch N] [--lr X] [--backbone-lr X] [--freeze-until K] [--frames-per-video N]
                               [--device cpu|cuda] [--amp bf16|fp16] [--workers N] [--seed N]   (extract.finetune)

Bad input and I/O failures print one line ``error: ...`` to stderr and exit 2. A command's summary line goes to
stdout, progress and log lines to stderr; ``-v`` adds debug lines and the dependencies' own (features.quiet).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path
from typing import Iterable, Sequence

from features.cli import add_verbose, setup_console
from features.cliargs import INT32_MAX, cores, cpu_count, integer, number
from features.errors import InputError

from .faces import MAX_TRACK_MOVE

log = logging.getLogger("extract")
DEFAULT_DATA = "data/synthetic"
# upper bounds of the numeric options: each value above them only allocates more (a batch of 224 x 224 float
# crops is 0.6 MB a frame; a face crop of margin m is (1 + m)^2 of the face box; each decode worker is a process)
MAX_BATCH = 4096
MAX_WORKERS = 2 * cpu_count()       # decode processes beyond that only compete for the cores
MAX_MARGIN = 4.0
MAX_DETECT_SIZE = 4096


def split_specs(text: str | Sequence[str], names: Iterable[str] | None = None) -> list[str]:
    """``fer,exported:m.pt2:classes=a,b,c,timm:x:w.pt:mean=0.5,0.5,0.5`` -> one string per spec.

    Option values may hold commas (``mean=0.5,0.5,0.5``, ``classes=a,b,c``), so a comma starts a new spec
    only when the text after it begins with a registered extractor name (`names`, default the registry's),
    followed by ``:`` or the end; after an option (``key=value``) any other piece continues that value. A value
    piece that is itself an extractor name (a class called ``fer``) needs double quotes around the value
    (``classes="happy,fer"``): commas inside quotes never split. Several ``--extractors`` options add up.
    """
    if names is None:
        from . import registry
        names = registry.list_extractors()
    names = set(names)
    texts = [text] if isinstance(text, str) else list(text)
    out: list[str] = []
    for t in texts:
        if t.count('"') % 2:
            raise InputError(f"--extractors: unbalanced double quote in {t!r}")
        pieces, cur, quoted = [], [], False
        for ch in t:        # split on commas outside double quotes (csv's quoting needs quotes at field start)
            if ch == '"':
                quoted = not quoted
            elif ch == "," and not quoted:
                pieces.append("".join(cur))
                cur = []
            else:
                cur.append(ch)
        pieces.append("".join(cur))
        first = True
        for piece in pieces:
            p = piece.strip()
            head = p.split(":", 1)[0]
            in_value = bool(out) and not first and "=" in out[-1].rsplit(":", 1)[-1]
            if in_value and head not in names:
                out[-1] += "," + p
            elif p:
                out.append(p)
                first = False
    if not out:
        raise InputError("--extractors is empty")
    return out


def create_extractor(spec: str, device: str, allow_pickle: bool = False, amp: str | None = None,
                     channels_last: bool = False, compile: bool = False, runtime: str = "auto"):
    """Build one extractor through the factory (extract.factory.create: `allow_pickle` goes only to factories
    that take it; `runtime` (auto | torch | onnxruntime) is the runtime of a spec that names none, see
    extract.factory.apply_runtime)."""
    from . import factory
    return factory.create(spec, allow_pickle=allow_pickle, device=device, amp=amp or None,
                          channels_last=channels_last or None, compile=compile or None, default_runtime=runtime)


def _ensure_default_data(data: Path) -> None:
    """`make extract` on a fresh checkout: generate the synthetic set when the default folder is missing."""
    if data.exists() or data.as_posix().rstrip("/") != DEFAULT_DATA:
        return
    from features.synthetic import make_affwild
    log.info("generating the synthetic data set in %s", data)
    make_affwild(data)


def cmd_run(a: argparse.Namespace) -> int:
    import torch
    from .faces import DetectorConfig, resolve
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
    track = {k: getattr(a, k) for k in ("track_gap", "track_min", "track_move") if getattr(a, k) is not None}
    det = DetectorConfig(detector=a.detector, detect=a.detect, faces=a.faces, margin=a.margin, smooth=a.smooth,
                         detect_size=a.detect_size, **track)
    source = discover(data, a.layout, crops=a.crops, detector=det.to_dict())
    det = resolve(det, source.layout)       # before the models load: a bad combination stops at once
    if track and not (det.faces == "all" and source.layout == "videos"):
        raise InputError(f"--{next(iter(track)).replace('_', '-')} links the faces of video files into persons: it "
                         f"needs --faces all on video files (here --faces {det.faces}, layout {source.layout})")
    amp = a.amp if a.amp != "none" else None
    if a.engine == "ray":
        return _run_ray(a, source, det, amp)
    extractors = [create_extractor(s, a.device, a.allow_pickle, amp, a.channels_last, a.compile, a.runtime)
                  for s in split_specs(a.extractors or ["fer"])]
    summary = run(source, extractors, a.out, batch=a.batch, workers=a.workers, device=a.device, shard=shard,
                  limit_videos=a.limit_videos, detector=det, progress=not a.quiet,
                  resize_on=a.resize_on, decode=a.decode)
    print(f"extract: {summary.line()}")
    return 0


def _run_ray(a: argparse.Namespace, source, det, amp: str | None) -> int:
    """--engine ray: the workers build the extractors themselves (extract.ray_engine)."""
    from functools import partial

    from . import ray_engine
    from .runner import Settings
    make = partial(ray_engine.build_all, create_extractor, split_specs(a.extractors or ["fer"]), a.device,
                   a.allow_pickle, amp,
                   a.channels_last, a.compile, a.runtime)
    settings = Settings(batch=a.batch, workers=a.workers, device=a.device, detector=det, progress=not a.quiet,
                        resize_on=a.resize_on, decode=a.decode)
    summary = ray_engine.run(source, make, a.out, settings=settings, address=a.ray_address,
                             n_workers=a.ray_workers, gpus_per_worker=a.gpus_per_worker,
                             limit_videos=a.limit_videos)
    print(f"extract: {summary.line()}")
    return 0


def cmd_list(a: argparse.Namespace) -> int:
    from . import factory
    for name in factory.list_extractors():
        print(name)
    return 0


# -- merge: shard files (or any caches) into one file ---------------------------------------------------------
def cmd_merge(a: argparse.Namespace) -> int:
    from features.store import cache_files, merge_caches
    inputs = [p for spec in a.inputs for p in cache_files(spec)]
    counts = merge_caches(inputs, a.out, remove_inputs=a.remove_inputs,
                          compression=None if a.compression == "none" else a.compression)
    kept = "removed" if a.remove_inputs else "kept"
    print(f"merge: {len(inputs)} files -> {a.out}: "
          f"{', '.join(f'{e} {n} videos' for e, n in counts.items())} (inputs {kept})")
    return 0


def add_merge_parser(sub) -> None:
    m = sub.add_parser("merge", help="fold shard files (or several caches) into one cache file",
                       description="Fold cache files into one, atomically (written as OUT.tmp, then renamed). "
                                   "An input FILE.h5 that is absent stands for its shard files "
                                   "FILE.shard-i-of-n.h5 (what extract run --shard i/n writes). OUT may be one of "
                                   "the inputs; any other existing OUT is refused. Inputs are kept unless "
                                   "--remove-inputs. A file still being written (its lock is held) is refused.")
    m.add_argument("inputs", nargs="+", metavar="CACHE", help="cache or shard files (comma lists and globs too)")
    m.add_argument("--out", required=True, help="the merged cache file")
    m.add_argument("--remove-inputs", action="store_true",
                   help="delete the input files (and their segments) once the merged file is in place")
    m.add_argument("--compression", default="none", choices=["none", "lzf", "gzip"],
                   help="HDF5 compression of the merged file (default none: fastest reads)")
    add_verbose(m)
    m.set_defaults(func=cmd_merge)


# -- finetune: train a network on a task's crops (extract.finetune); here only its options ---------------------
def cmd_finetune(a: argparse.Namespace) -> int:
    from .finetune import Settings, finetune
    _ensure_default_data(Path(a.data))
    if a.threads:
        import torch
        torch.set_num_threads(a.threads)
    s = Settings(task=a.task, data=a.data, source=a.source, out=a.out, epochs=a.epochs, batch=a.batch, lr=a.lr,
                 backbone_lr=a.backbone_lr, freeze_until=a.freeze_until, frames_per_video=a.frames_per_video,
                 val_frames_per_video=a.val_frames_per_video, loss=a.loss, device=a.device,
                 amp=None if a.amp == "none" else a.amp, workers=a.workers, seed=a.seed, crops=a.crops,
                 ceiling_steps=a.ceiling_steps, allow_pickle=a.allow_pickle, force=a.force, progress=not a.quiet)
    res = finetune(s)
    print(f"finetune: {res.line()}")
    return 0


def add_finetune_parser(sub) -> None:
    from features.cliargs import SEED_MAX

    from .finetune.settings import MAX_BATCH as FT_BATCH, MAX_CEILING_STEPS, MAX_EPOCHS, MAX_LR
    f = sub.add_parser(
        "finetune", help="train a network on a task's labelled crops; the result is an extractor (finetuned:CKPT)",
        description="Fine-tune a torch extractor's whole network on the task's labelled training crops (its "
                    "classifier replaced by the task's outputs), choose the best epoch by the official metric on "
                    "the validation split, and write CKPT.safetensors (weights + metadata; run it with extract run "
                    "--extractors finetuned:CKPT.safetensors) and its report CKPT.json. An interrupted run resumes "
                    "from its last finished epoch when the same command is given again (state in "
                    "CKPT.state.safetensors); a second run on the same --out is refused while one runs.")
    f.add_argument("--task", required=True, choices=["expr", "va", "au"])
    f.add_argument("--data", required=True,
                   help="Aff-Wild2 root: crops (cropped/ or cropped_aligned/) and the task's annotations (challenge "
                        "folders or MTL files) of the train and validation splits")
    f.add_argument("--from", dest="source", required=True,
                   help="extractor spec of the start network, e.g. enet_b0_8_va_mtl:ckpt.safetensors, "
                        "resnet18_msceleb:r18.pth, timm:convnext_tiny:w.safetensors:size=224, finetuned:ft.safetensors")
    f.add_argument("--out", required=True, help="the checkpoint to write (.safetensors); the report goes beside it")
    f.add_argument("--epochs", type=integer(1, MAX_EPOCHS), default=5, help=f"epochs (1 to {MAX_EPOCHS}; default 5)")
    f.add_argument("--batch", type=integer(1, FT_BATCH), default=32,
                   help=f"frames per step (1 to {FT_BATCH}; default 32; 256 for B0 at 224 px on a GPU)")
    f.add_argument("--lr", type=number(0, MAX_LR, low_open=True), default=1e-3,
                   help="learning rate of the new classifier (default 0.001)")
    f.add_argument("--backbone-lr", type=number(0, MAX_LR, low_open=True), default=None,
                   help="learning rate of the rest of the network (default --lr / 10)")
    f.add_argument("--freeze-until", type=integer(0, 10_000), default=0,
                   help="leading layer groups kept frozen (timm's stem, stages, ...; 0: train everything)")
    f.add_argument("--frames-per-video", type=integer(1), default=256,
                   help="training frames drawn per video each epoch (neighbouring frames are near copies)")
    f.add_argument("--val-frames-per-video", type=integer(1), default=None,
                   help="validation frames per video, evenly spaced (default: every labelled frame)")
    f.add_argument("--loss", default=None,
                   help="ce, ce_dice (expr); bce, focal, asl (au); ccc, mse_ccc (va); default ce / bce / ccc")
    f.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    f.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"],
                   help="autocast (bf16 on CPU or GPU; fp16 on CUDA, with gradient scaling)")
    f.add_argument("--workers", type=integer(0, MAX_WORKERS), default=0,
                   help=f"decode processes (0: decode in this process; at most {MAX_WORKERS})")
    f.add_argument("--threads", type=cores(0), default=0, help="torch CPU threads (0: default)")
    f.add_argument("--seed", type=integer(0, SEED_MAX), default=0,
                   help="seed of the classifier's initialisation, the frame samples and the augmentation")
    f.add_argument("--crops", default="auto", choices=["auto", "cropped", "cropped_aligned"],
                   help="Aff-Wild2 crop folder (auto: cropped, else cropped_aligned)")
    f.add_argument("--ceiling-steps", type=integer(0, MAX_CEILING_STEPS), default=None,
                   help="steps timed for the forward+backward ceiling on random tensors (default 10 on CUDA, 2 on "
                        "a CPU; 0: not measured)")
    f.add_argument("--allow-pickle", action="store_true",
                   help="unpickle a start checkpoint that holds Python objects (runs code from the file: only for "
                        "files you trust; or convert it once with python -m extract convert)")
    f.add_argument("--force", action="store_true", help="replace an existing checkpoint and report")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    add_verbose(f)
    f.set_defaults(func=cmd_finetune)


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
    r.add_argument("--cache", "--out", dest="out", default="cache/features.h5",
                   help="HDF5 cache to create or extend (--out is the same flag)")
    r.add_argument("--extractors", action="append", default=None,
                   help="comma-separated extractor specs (python -m extract list; default fer); option values may "
                        "hold commas (classes=a,b,c); may be repeated")
    r.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    r.add_argument("--batch", type=integer(1, MAX_BATCH), default=64,
                   help=f"frames per forward pass (1 to {MAX_BATCH})")
    r.add_argument("--workers", type=integer(0, MAX_WORKERS), default=None,
                   help=f"decode processes (default: cores - 1, at most 8; 0: decode in the main process; at most "
                        f"{MAX_WORKERS})")
    r.add_argument("--threads", type=cores(0), default=0,
                   help="torch CPU threads in the main process (0: default)")
    r.add_argument("--shard", default=None, help="i/n: extract shard i of n into <out>.shard-i-of-n.h5")
    r.add_argument("--layout", default="auto", choices=["auto", "affwild", "folders", "images", "videos"],
                   help="images: a flat folder of photos, one item per photo named by its file stem (auto picks it "
                        "for a folder of images without sub-folders)")
    r.add_argument("--crops", default="auto", choices=["auto", "cropped", "cropped_aligned"],
                   help="Aff-Wild2 crop folder (auto: cropped, else cropped_aligned)")
    r.add_argument("--limit-videos", type=integer(1), default=None,
                   help="only the first N videos (sorted by name; N >= 1)")
    r.add_argument("--allow-pickle", action="store_true",
                   help="load model files that run code when loaded: checkpoints holding pickled Python objects "
                        "(whole pickled modules), TorchScript archives, .pt2 programs with pickles or code in them, "
                        "Keras Lambda layers. This EXECUTES code stored in the file while loading it, before any "
                        "check of its contents, so use it only for files from a source you trust (or convert "
                        "checkpoints once with python -m extract convert)")
    r.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"],
                   help="autocast for torch models (changes the features; recorded in the cache)")
    r.add_argument("--channels-last", action="store_true", help="NHWC memory format for torch models (GPU)")
    r.add_argument("--compile", action="store_true",
                   help="torch.compile torch models (about a minute of compiling; ~1.5x faster B0 on a 2-core CPU)")
    r.add_argument("--runtime", default="auto", choices=["auto", "torch", "onnxruntime"],
                   help="how torch models run, for specs that do not say (:runtime=...): onnxruntime (exported in "
                        "memory; ~2x faster B0 on a 2-core CPU; needs the onnx extra) or torch; auto (default): "
                        "onnxruntime for float32 models on a CPU when the onnx extra is installed, else torch. "
                        "Recorded in the cache")
    r.add_argument("--detect", default="auto", choices=["auto", "on", "off"],
                   help="face detection (auto: on for videos and --layout images, off for Aff-Wild2 crops and "
                        "--layout folders); off: whole frames go to the models")
    r.add_argument("--detector", default="auto", choices=["auto", "mtcnn", "haar"],
                   help="auto: MTCNN when its weights are in the weights cache (make setup), else Haar")
    r.add_argument("--faces", default="largest", choices=["largest", "all"],
                   help="all: --layout images: one row per face, frame = face number, largest first; video files: "
                        "every person tracked across frames becomes an item <video>_p1, _p2, ... (by first "
                        "appearance) with a row per frame of the video")
    r.add_argument("--track-gap", type=integer(0, INT32_MAX), default=None, metavar="FRAMES",
                   help="--faces all on videos: a person missed up to this many frames in a row keeps their item "
                        "(default 30)")
    r.add_argument("--track-min", type=integer(1, INT32_MAX), default=None, metavar="FRAMES",
                   help="--faces all on videos: persons found in fewer frames are dropped as spurious (default 10)")
    r.add_argument("--track-move", type=number(0.0, MAX_TRACK_MOVE, low_open=True), default=None, metavar="SIDES",
                   help="--faces all on videos: a face joins a person whose last box centre is at most this many "
                        f"face sides away (default 1; at most {MAX_TRACK_MOVE:g})")
    r.add_argument("--margin", type=number(0.0, MAX_MARGIN), default=0.2,
                   help=f"detection: crop side = (1 + margin) x face box (margin 0 to {MAX_MARGIN:g})")
    r.add_argument("--smooth", type=number(0.0, 1.0, high_open=True), default=0.0,
                   help="detection: box smoothing factor in [0, 1)")
    r.add_argument("--detect-size", type=integer(32, MAX_DETECT_SIZE), default=256,
                   help=f"detection: long side seen by the face detector (32 to {MAX_DETECT_SIZE})")
    r.add_argument("--resize-on", default="auto", choices=["auto", "workers", "device"],
                   help="resize crops in the decode workers (PIL) or a batch at a time on the device (same "
                        "pixels; auto: device on CUDA)")
    r.add_argument("--decode", default="auto", choices=["auto", "workers", "device"],
                   help="where JPEG crops are decoded: in the decode workers (PIL) or a batch at a time on the "
                        "model's device (torchvision decode_jpeg: nvJPEG on CUDA, recorded in the cache; the "
                        "workers only read the files; other files stay with PIL; auto: device on CUDA)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="local: this machine; ray: a pool of Ray workers, one per GPU, each writing "
                        "<out>.shard-i-of-n.h5 (needs the ray extra)")
    r.add_argument("--ray-address", default=None,
                   help="--engine ray: auto (the cluster this node joined) or HOST:PORT; default: start Ray here")
    r.add_argument("--gpus-per-worker", type=number(0.0, 64.0, low_open=True), default=1.0,
                   help="--engine ray with CUDA: GPUs per worker (a fraction shares one GPU)")
    r.add_argument("--ray-workers", type=int, default=None,
                   help="--engine ray: number of workers (default: one per GPU on CUDA, one per CPU otherwise)")
    add_verbose(r)
    r.set_defaults(func=cmd_run)
    ls = sub.add_parser("list", help="list registered extractors")
    add_verbose(ls)
    ls.set_defaults(func=cmd_list)
    sub.add_parser("convert", help="convert a checkpoint (see python -m extract convert -h)", add_help=False)
    sub.add_parser("openface", help="read OpenFace CSVs into the cache (python -m extract openface -h)",
                   add_help=False)
    add_merge_parser(sub)
    add_finetune_parser(sub)
    return ap


def _main(argv: list[str]) -> int:
    if argv and argv[0] == "convert":
        return _delegate("extract.convert", "main", argv[1:])
    if argv and argv[0] == "openface":
        return _delegate("extract.openface", "main", argv[1:])
    a = build_parser().parse_args(argv)
    setup_console(a.verbose)        # before any model (TensorFlow, onnxruntime) is imported
    return a.func(a)


def main(argv: Sequence[str] | None = None) -> int:
    from features.cli import run_main
    args = list(sys.argv[1:] if argv is None else argv)
    done = "finished epochs are kept" if args[:1] == ["finetune"] else "committed videos are kept"
    return run_main(_main, args, interrupted=f"interrupted; {done}, rerun to resume")
