"""JPEG decode on the model's device: workers read file bytes, the main process decodes whole batches.

``--decode device`` (the default on CUDA): the decode workers only read each file and check from its header that
it is a plain baseline JPEG (:func:`baseline_jpeg`); the main process decodes the batch with
``torchvision.io.decode_jpeg(list, device=...)`` (nvJPEG on CUDA, libjpeg-turbo on a CPU: the same code on
``device="cpu"``, its CPU twin) and resizes it there (extract.resize, Pillow's bilinear bit for bit). Anything
else (progressive, CMYK/Adobe, 12-bit, grey, PNG behind ``.jpg``, truncated, tiny) is decoded by PIL in the worker
as with ``--decode workers``; a file that the device decoder refuses is masked (face=False) and reported like
any unreadable file.

Pixels. torchvision's CPU decode and PIL's are the same libjpeg-turbo (ISLOW IDCT, fancy upsampling): measured
bit-identical on baseline JPEGs of every chroma subsampling and odd sizes (tests compare whole caches). nvJPEG
has its own IDCT and upsampling, so on CUDA the decoder is part of the source provenance (:func:`provenance`) and
its features never join a group made from PIL-decoded frames.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .resize import on_device_exact, resize_bilinear
from .sources import MIN_SIDE, resize_square

_SOF_BASELINE = (0xC0, 0xC1)        # baseline / extended sequential Huffman: what nvJPEG's batched decoder takes
_SOF_OTHER = {0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_NO_LENGTH = {0x01, *range(0xD0, 0xD8)}     # markers without a length field (TEM, RSTn)


def baseline_jpeg(data: bytes) -> tuple[int, int] | None:
    """(height, width) of an 8-bit, 3-component, baseline JPEG with its end marker and sides >= MIN_SIDE, else
    None (the file then goes through PIL). Reads the marker segments up to the frame header only (~2 us)."""
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != 0xD8 or data[n - 2] != 0xFF or data[n - 1] != 0xD9:
        return None                                   # not a JPEG, or truncated (PIL refuses those)
    i = 2
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        m = data[i + 1]
        if m == 0xFF:                                 # fill byte
            i += 1
            continue
        if m in _NO_LENGTH:
            i += 2
            continue
        seg = (data[i + 2] << 8) | data[i + 3]
        if m == 0xEE:                                 # Adobe APP14: CMYK/YCCK or untransformed RGB
            return None
        if m in _SOF_BASELINE:
            if i + 10 > n:
                return None
            prec, h, w, comps = data[i + 4], (data[i + 5] << 8) | data[i + 6], (data[i + 7] << 8) | data[i + 8], data[i + 9]
            if prec != 8 or comps != 3 or min(h, w) < MIN_SIDE:
                return None
            return h, w
        if m in _SOF_OTHER or m == 0xDA:              # progressive/lossless/arithmetic, or scan before a frame
            return None
        i += 2 + seg
    return None


def read_files(paths: Sequence[str]) -> list[bytes | None]:
    """File contents (None where a file cannot be read: PIL then reports why)."""
    out: list[bytes | None] = []
    for p in paths:
        try:
            with open(p, "rb") as f:
                out.append(f.read())
        except OSError:
            out.append(None)
    return out


def pack(blobs: Sequence[bytes]):
    """Byte strings -> one uint8 tensor and the offsets (n + 1): one shared-memory handle for a whole batch
    instead of one per file."""
    import torch
    off = np.zeros(len(blobs) + 1, np.int64)
    np.cumsum([len(b) for b in blobs], out=off[1:])
    data = torch.empty(int(off[-1]), dtype=torch.uint8)
    view = data.numpy()
    for b, lo, hi in zip(blobs, off[:-1], off[1:]):
        view[lo:hi] = np.frombuffer(b, np.uint8)
    return data, off


def decode(data, off: np.ndarray, device) -> tuple[list, list[str]]:
    """Decode the packed JPEGs on `device`: ([(H, W, 3) uint8 tensor or None], [why, "" when decoded]).

    One batched call (nvJPEG decodes the whole list at once); if it fails, each file alone, so that a corrupt
    file masks only its own frame."""
    import warnings
    with warnings.catch_warnings():     # torchvision 0.29 flags its image codecs as moving to torchcodec
        warnings.simplefilter("ignore", DeprecationWarning)
        return _decode(data, off, device)


def _decode(data, off: np.ndarray, device) -> tuple[list, list[str]]:
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg
    blobs = [data[int(lo):int(hi)] for lo, hi in zip(off[:-1], off[1:])]
    if not blobs:
        return [], []
    dev = torch.device(device)
    try:
        imgs = decode_jpeg(blobs, mode=ImageReadMode.RGB, device=dev)
        return [im.permute(1, 2, 0) for im in imgs], [""] * len(blobs)
    except RuntimeError:
        pass
    out, why = [], []
    for b in blobs:
        try:
            out.append(decode_jpeg(b, mode=ImageReadMode.RGB, device=dev).permute(1, 2, 0))
            why.append("")
        except RuntimeError as e:
            out.append(None)
            why.append(f"cannot decode JPEG ({str(e).strip().splitlines()[-1][:200]})")
    return out, why


def decoded_pixels(chunk: dict, sizes: Sequence[int], device) -> dict:
    """Model input per size for a chunk whose worker shipped JPEG bytes (``jpeg``, ``jpeg_off``, ``jpeg_rows``,
    ``jpeg_paths``): decoded and resized on `device`, merged with the rows the worker decoded itself (``pix``).
    Rows whose file fails to decode become ``ok=False`` and are added to ``chunk["bad"]``."""
    import torch
    n = len(chunk["ok"])
    rows = chunk["jpeg_rows"]
    imgs, why = decode(chunk["jpeg"], chunk["jpeg_off"], device)
    for r, p, w in zip(rows, chunk["jpeg_paths"], why):
        if w:
            chunk["ok"][r] = False
            chunk["bad"].append((p, w))
    groups: dict[tuple, list[int]] = {}
    for i, im in enumerate(imgs):
        if im is not None:
            groups.setdefault(tuple(im.shape), []).append(i)
    pix = {}
    for s in sizes:
        base = chunk["pix"].get(s)
        out = base.to(device, non_blocking=True) if base is not None else \
            torch.zeros((n, s, s, 3), dtype=torch.uint8, device=device)
        for shape, idx in groups.items():
            stack = torch.stack([imgs[i] for i in idx])
            if on_device_exact(shape[:2], s):
                res = resize_bilinear(stack, s)
            else:       # downscale: Pillow itself (see extract.resize.on_device_exact), on the host
                host = stack.cpu().numpy()
                res = torch.from_numpy(np.stack([resize_square(im, s) for im in host])).to(device)
            at = torch.from_numpy(np.asarray(rows)[idx]).to(device)
            out.index_copy_(0, at, res)
        pix[s] = out
    return pix


def provenance(device) -> dict:
    """What goes into the source provenance (compared): nothing on a CPU (torchvision's CPU decode gives PIL's
    pixels), the decoder on CUDA (nvJPEG's pixels differ)."""
    return {"jpeg_decoder": "nvjpeg (torchvision.io.decode_jpeg on cuda)"} if str(device).startswith("cuda") else {}


def description(device) -> str:
    """What is recorded beside it (``extra["decoder"]``, not compared)."""
    import torchvision
    where = "nvjpeg on cuda" if str(device).startswith("cuda") else "libjpeg-turbo on cpu"
    return (f"baseline JPEGs: torchvision {torchvision.__version__} decode_jpeg ({where}) in the main process; "
            f"other files: PIL in the decode workers")
