"""Video files: PyAV decode, Haar face detection, square crops with a margin, box smoothing, the no-face path."""
from __future__ import annotations

import numpy as np
import pytest

from extract.faces import BoxSmoother, DetectorConfig, HaarFaceDetector, decode_video, square_crop
from extract.runner import run
from extract.sources import cached_demo_clip, discover, video_files
from features.errors import InputError
from features.store import FeatureStore

from helpers import TinyExtractor, encode, face_frames


def test_square_crop_geometry_and_padding():
    img = np.zeros((100, 200, 3), np.uint8)
    img[40:60, 90:110] = 255                                   # a white square centred at (100, 50)
    crop = square_crop(img, np.array([90.0, 40.0, 20.0, 20.0]), margin=1.0, size=40)
    # margin 1.0 doubles the side: the white square fills the middle half of the crop
    assert crop.shape == (40, 40, 3)
    assert crop[12:28, 12:28].min() > 200 and crop[:8].max() < 30 and crop[:, -8:].max() < 30
    edge = square_crop(img, np.array([-10.0, -10.0, 40.0, 40.0]), margin=0.0, size=20)
    assert edge[:5, :5].max() == 0                             # outside the frame is black
    big = np.random.default_rng(0).integers(0, 255, (1000, 1000, 3), np.uint8)
    assert square_crop(big, np.array([100.0, 100.0, 800.0, 800.0]), 0.2, 32).shape == (32, 32, 3)


def test_box_smoother_averages_and_resets_after_gap():
    sm = BoxSmoother(alpha=0.5, max_gap=1)
    a = sm(np.array([0.0, 0.0, 10.0, 10.0]))
    b = sm(np.array([10.0, 0.0, 10.0, 10.0]))
    np.testing.assert_allclose(a, [0, 0, 10, 10])
    np.testing.assert_allclose(b, [5, 0, 10, 10])             # centre moved half-way
    assert sm(None) is None and sm(None) is None               # a gap longer than max_gap ...
    np.testing.assert_allclose(sm(np.array([50.0, 0.0, 10.0, 10.0])), [50, 0, 10, 10])   # ... restarts


def test_haar_finds_the_drawn_face_and_nothing_on_blank():
    det = HaarFaceDetector()
    frames = face_frames(4, 1)
    boxes = [det.detect(f) for f in frames]
    assert boxes[-1] is None
    found = [b for b in boxes[:-1] if b is not None]
    assert len(found) >= 3
    for x, y, w, h in found:      # the box lies on the drawn face (x 80..240, y 40..200)
        assert 80 <= x + w / 2 <= 240 and 40 <= y + h / 2 <= 200


def test_video_file_run_marks_frames_without_a_face(tmp_path):
    n_face, n_blank = 10, 6
    encode(tmp_path / "clip.mp4", face_frames(n_face, n_blank))
    encode(tmp_path / "blank.mp4", [np.full((120, 160, 3), 200, np.uint8)] * 5)
    src = discover(tmp_path)
    assert src.layout == "videos" and [v.name for v in src.videos] == ["blank", "clip"]
    # two worker processes (forkserver: safe after this process used OpenCV above)
    s = run(src, [TinyExtractor(16)], tmp_path / "c.h5", batch=4, workers=2, progress=False)
    assert s.videos == 2 and s.frames == n_face + n_blank + 5
    with FeatureStore(tmp_path / "c.h5") as st:
        blk = st.read(["clip", "blank"], ["tiny"], outputs=("embedding",))
        info = st.info("tiny")
    idx = blk.index
    clip = idx["video"] == "clip"
    assert idx.loc[clip, "frame"].tolist() == list(range(1, n_face + n_blank + 1))
    face = idx.loc[clip, "face"].to_numpy()
    assert face[:n_face].mean() >= 0.8 and not face[n_face:].any()
    assert not idx.loc[~clip, "face"].any()                    # a video with no face at all: all rows masked
    emb = blk.arrays["tiny/embedding"]
    assert not emb[~idx["face"].to_numpy()].any() and emb[idx["face"].to_numpy()].any()
    assert info.extra["source"]["detector"]["cascade"].startswith("haarcascade")


def test_unreadable_video_raises_naming_the_file(tmp_path):
    bad = tmp_path / "x.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(InputError, match="x.mp4"):
        next(decode_video(bad))
    with pytest.raises(InputError, match="x.mp4"):
        run(video_files(tmp_path), [TinyExtractor()], tmp_path / "c.h5", workers=0, progress=False)


@pytest.mark.skipif(cached_demo_clip() is None, reason="demo clip not cached (`make demo`, or "
                    "extract.sources.fetch_demo_clip(), fetches it once into extract.sources.demo_clip_path(); tests "
                    "never download)")
def test_real_clip_first_seconds(tmp_path):
    frames = []
    for f in decode_video(cached_demo_clip()):
        frames.append(f)
        if len(frames) == 36:
            break
    encode(tmp_path / "demo.mp4", frames, fps=24)
    s = run(video_files(tmp_path), [TinyExtractor(16)], tmp_path / "c.h5", batch=16, workers=0,
            progress=False, detector=DetectorConfig(smooth=0.5))
    assert s.frames == 36
    assert 1 - s.no_face / s.frames >= 0.8          # one frontal face throughout: Haar finds it in most frames
