"""Photos: --layout images, face detection on photos and crop folders (--detect), every face (--faces all),
MTCNN and its Haar fallback."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from extract.faces import DetectorConfig, HaarFaceDetector, MtcnnFaceDetector, make_detector, resolve
from extract.runner import run
from extract.sources import discover
from features.errors import InputError
from features.store import FeatureStore
from features.synthetic_faces import random_identity, render_face

from helpers import TinyExtractor

BG = (90, 90, 90)


def _mtcnn_available() -> bool:
    from extract.mtcnn import weight_files
    try:
        weight_files()
        return True
    except InputError:
        return False


needs_mtcnn = pytest.mark.skipif(not _mtcnn_available(), reason="MTCNN weights not in the weights cache "
                                 "(make setup downloads the facenet-pytorch wheel)")


def face(seed: int, size: int = 112) -> Image.Image:
    """A rendered synthetic face (seeds used here are ones both detectors find: the cartoon faces of some
    seeds, e.g. 2 at 112 px, are missed by MTCNN)."""
    rng = np.random.default_rng(seed)
    return render_face(np.zeros(12), random_identity(rng), size, rng)


def group_photo() -> Image.Image:
    """Two rendered faces side by side: the left one larger."""
    g = Image.new("RGB", (250, 140), BG)
    g.paste(face(1, 120), (5, 10))
    g.paste(face(2, 90), (150, 30))
    return g


def on_background(img: Image.Image, size=(200, 160)) -> Image.Image:
    bg = Image.new("RGB", size, BG)
    bg.paste(img, ((size[0] - img.width) // 2, (size[1] - img.height) // 2))
    return bg


def make_photos(root: Path) -> Path:
    """group.jpg, noface.png (flat colour), palette.gif, alpha.png (RGBA), grey16.png (16-bit grey)."""
    root.mkdir(parents=True, exist_ok=True)
    group_photo().save(root / "group.jpg", quality=95)
    Image.new("RGB", (120, 100), (120, 130, 140)).save(root / "noface.png")
    on_background(face(6)).convert("P", palette=Image.ADAPTIVE).save(root / "palette.gif")
    rgba = on_background(face(4)).convert("RGBA")
    a = np.asarray(rgba).copy()
    a[..., 3] = 255
    a[:10, :, 3] = 0                                   # a transparent band at the top
    Image.fromarray(a, "RGBA").save(root / "alpha.png")
    grey = np.asarray(on_background(face(5)).convert("L")).astype(np.uint16) * 257
    Image.fromarray(grey).save(root / "grey16.png")    # mode I;16: a 16-bit greyscale PNG
    return root


def rows(path: Path) -> dict[str, list[tuple[int, bool]]]:
    idx = FeatureStore(path).read().index
    return {v: list(zip(g["frame"].tolist(), g["face"].tolist())) for v, g in idx.groupby("video", observed=True)}


# -- layout ----------------------------------------------------------------------------------------------------

def test_auto_layout_picks_images_for_a_flat_photo_folder(tmp_path):
    make_photos(tmp_path / "p")
    src = discover(tmp_path / "p")
    assert src.layout == "images"
    assert [v.name for v in src.videos] == ["alpha", "grey16", "group", "noface", "palette"]
    assert all(v.n_frames == 1 for v in src.videos)
    (tmp_path / "p" / "sub").mkdir()                   # a sub-folder: one video per sub-folder, as before
    (tmp_path / "p" / "sub" / "a.png").write_bytes((tmp_path / "p" / "noface.png").read_bytes())
    assert discover(tmp_path / "p").layout == "folders"


def test_folders_layout_on_flat_photos_points_to_images(tmp_path):
    make_photos(tmp_path / "p")
    with pytest.raises(InputError, match="use --layout images"):
        discover(tmp_path / "p", "folders")


def test_two_photos_with_one_stem_are_refused(tmp_path):
    make_photos(tmp_path / "p")
    Image.new("RGB", (40, 40)).save(tmp_path / "p" / "group.png")
    with pytest.raises(InputError, match="two photos share the name 'group'"):
        discover(tmp_path / "p", "images")


# -- --detect per layout -------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout,mode,want", [
    ("videos", "auto", "on"), ("images", "auto", "on"), ("affwild", "auto", "off"), ("folders", "auto", "off"),
    ("folders", "on", "on"), ("affwild", "on", "on"), ("videos", "off", "off"), ("images", "off", "off")])
def test_detect_auto_on_off_by_layout(layout, mode, want):
    assert resolve(DetectorConfig(detect=mode, detector="haar"), layout).detect == want


def test_faces_all_only_for_photos_and_videos_with_detection():
    assert resolve(DetectorConfig(faces="all", detector="haar"), "videos").faces == "all"     # tracked persons
    with pytest.raises(InputError, match="--faces all needs --layout images"):
        resolve(DetectorConfig(faces="all", detector="haar"), "folders")
    with pytest.raises(InputError, match="needs face detection"):
        resolve(DetectorConfig(faces="all", detect="off", detector="haar"), "images")


def test_auto_detector_falls_back_to_haar_without_weights(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("AFFECT_FEATURES_HOME", str(tmp_path))
    cfg = resolve(DetectorConfig(), "images")
    assert cfg.detector == "haar" and "Haar" in caplog.text
    assert isinstance(make_detector(cfg), HaarFaceDetector)
    with pytest.raises(InputError, match="MTCNN weights not found"):
        MtcnnFaceDetector(DetectorConfig(detector="mtcnn"))


# -- MTCNN -------------------------------------------------------------------------------------------------------

@needs_mtcnn
def test_mtcnn_boxes_the_faces_largest_first_and_nothing_on_blank():
    det = MtcnnFaceDetector(DetectorConfig(detector="mtcnn"))
    boxes = det.detect_all(np.asarray(group_photo()))
    assert len(boxes) == 2
    centres = boxes[:, :2] + boxes[:, 2:] / 2
    assert 20 < centres[0, 0] < 110 and 160 < centres[1, 0] < 230       # the larger (left) face first
    assert boxes[0, 2] * boxes[0, 3] > boxes[1, 2] * boxes[1, 3]
    assert len(det.detect_all(np.full((140, 250, 3), 90, np.uint8))) == 0


# -- the runner on photos ----------------------------------------------------------------------------------------

@needs_mtcnn
def test_photo_folder_largest_face_one_row_per_photo(tmp_path):
    src = discover(make_photos(tmp_path / "p"))
    run(src, [TinyExtractor()], tmp_path / "c.h5", batch=3, workers=0, progress=False)
    got = rows(tmp_path / "c.h5")
    assert got["noface"] == [(1, False)]
    for name in ("group", "palette", "alpha", "grey16"):
        assert got[name] == [(1, True)], name
    prov = FeatureStore(tmp_path / "c.h5").info("tiny").extra["source"]
    assert prov["layout"] == "images" and prov["detector"]["detector"] == "mtcnn"
    assert prov["detector"]["detect"] == "on" and prov["detector"]["faces"] == "largest"


@needs_mtcnn
def test_faces_all_gives_one_row_per_face(tmp_path):
    src = discover(make_photos(tmp_path / "p"))
    cfg = DetectorConfig(faces="all")
    run(src, [TinyExtractor()], tmp_path / "all.h5", batch=2, workers=0, progress=False, detector=cfg)
    run(src, [TinyExtractor()], tmp_path / "one.h5", batch=2, workers=0, progress=False)
    got = rows(tmp_path / "all.h5")
    assert got["group"] == [(1, True), (2, True)]
    assert got["noface"] == [(1, False)] and got["palette"] == [(1, True)]
    # face 1 is the largest face, the one --faces largest keeps
    a = FeatureStore(tmp_path / "all.h5").read(["group"]).arrays["tiny/embedding"]
    b = FeatureStore(tmp_path / "one.h5").read(["group"]).arrays["tiny/embedding"]
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], a[1])


def test_detect_off_feeds_whole_photos(tmp_path):
    src = discover(make_photos(tmp_path / "p"))
    run(src, [TinyExtractor()], tmp_path / "c.h5", batch=4, workers=0, progress=False,
        detector=DetectorConfig(detect="off", detector="haar"))
    got = rows(tmp_path / "c.h5")
    assert got["noface"] == [(1, True)]                 # no detection: every decodable photo is a row with pixels
    assert FeatureStore(tmp_path / "c.h5").info("tiny").extra["source"]["detector"]["detect"] == "off"


@needs_mtcnn
def test_detect_on_crops_faces_in_a_folders_layout(tmp_path):
    """--layout folders holds crops, so detection is off by default; --detect on finds the face in each frame
    (frames keep their numbers, a frame without a face is face=False)."""
    v = tmp_path / "f" / "clip"
    v.mkdir(parents=True)
    on_background(face(7), (260, 200)).save(v / "a.png")
    Image.new("RGB", (260, 200), BG).save(v / "b.png")
    on_background(face(1), (260, 200)).save(v / "c.png")
    src = discover(tmp_path / "f")
    assert src.layout == "folders"
    run(src, [TinyExtractor()], tmp_path / "off.h5", workers=0, progress=False)
    run(src, [TinyExtractor()], tmp_path / "on.h5", workers=0, progress=False, detector=DetectorConfig(detect="on"))
    assert rows(tmp_path / "off.h5")["clip"] == [(1, True), (2, True), (3, True)]
    assert rows(tmp_path / "on.h5")["clip"] == [(1, True), (2, False), (3, True)]
    assert "detector" not in FeatureStore(tmp_path / "off.h5").info("tiny").extra["source"]
