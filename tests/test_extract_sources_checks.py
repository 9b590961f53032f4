"""Inputs that used to pass in silence or be misnamed: truncated video files, sub-folders without an image, and a
device or FIFO given where a file or folder is expected."""
from __future__ import annotations

import logging
import os
import socket

import pytest

from extract.sources import VideoFile, container_frames, discover, folder_videos, image_files, video_files
from features.errors import InputError
from features.paths import check_file_or_folder, path_kind

from helpers import noise_video


def _encode(path, n=24, options=None):
    return noise_video(path, n, options)


@pytest.mark.parametrize("ext, basis", [(".mp4", "frame count"), (".avi", "frame count"),
                                        (".mkv", "duration 2.00 s at 12 frames/s")])
def test_container_frames_reads_the_header(tmp_path, ext, basis):
    assert container_frames(_encode(tmp_path / f"v{ext}")) == (24, basis)


def test_container_frames_of_an_unreadable_file_is_unknown(tmp_path):
    (tmp_path / "x.mp4").write_bytes(b"not a video")
    assert container_frames(tmp_path / "x.mp4") == (0, "")
    assert video_files(tmp_path).videos[0].est_frames == 0


def test_short_decode_allows_header_rounding_only():
    counted = VideoFile("v", "v.mp4", 200, "frame count")
    assert counted.short_decode(200) is None and counted.short_decode(198) is None       # 1% = 2 frames
    msg = counted.short_decode(197)
    assert msg.startswith("decoded 197 of the 200 frames its container announces (frame count)")
    timed = VideoFile("v", "v.mkv", 40, "duration 3.33 s at 12 frames/s")
    assert timed.short_decode(38) is None and "decoded 37 of the 40" in timed.short_decode(37)
    assert VideoFile("v", "v.webm", 0, "").short_decode(5) is None                      # nothing announced
    assert counted.short_decode(0) is None                   # "no frames decoded" is the runner's own warning


def test_folders_without_an_image_are_counted_and_named(tmp_path, caplog):
    from PIL import Image
    for v in ("v1", "v3"):
        (tmp_path / v).mkdir()
        Image.new("RGB", (16, 16)).save(tmp_path / v / "1.png")
    for i in range(7):
        (tmp_path / f"e{i}").mkdir()
    (tmp_path / "e0" / "notes.txt").write_text("x")
    with caplog.at_level(logging.WARNING, logger="extract"):
        src = folder_videos(tmp_path)
    assert [v.name for v in src.videos] == ["v1", "v3"] and src.no_image == [f"e{i}" for i in range(7)]
    msg = [r.getMessage() for r in caplog.records]
    assert msg == [f"{tmp_path}: 7 sub-folders hold no image (jpg, png, ...) and are skipped: e0 (1 other entry), "
                   f"e1 (empty), e2 (empty), e3 (empty), e4 (empty), and 2 more"]
    assert "no_image" not in src.description           # not provenance: adding a folder later changes nothing


def test_path_kinds(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "f").write_text("x")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tmp_path / "sock"))
        kinds = {n: path_kind(tmp_path / n) for n in ("fifo", "f", "dangling", "sock", "missing")}
    finally:
        sock.close()
    assert kinds == {"fifo": "a named pipe (FIFO)", "f": "a regular file", "dangling": "a broken symbolic link",
                     "sock": "a socket", "missing": "missing"}
    assert path_kind(tmp_path) == "a folder" and path_kind("/dev/null") == "a character device"
    assert path_kind(tmp_path / "f" / "below") == "missing"
    with pytest.raises(InputError, match=r"fifo: --x is a named pipe \(FIFO\), not a regular file or folder"):
        check_file_or_folder(tmp_path / "fifo", "--x", "gone")
    with pytest.raises(InputError, match="missing: gone"):
        check_file_or_folder(tmp_path / "missing", "--x", "gone")


@pytest.mark.parametrize("layout", ["auto", "affwild", "folders", "images", "videos"])
def test_every_layout_names_a_special_file(tmp_path, layout):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(InputError, match=r"the data path is a named pipe \(FIFO\), not a regular file or folder"):
        discover(tmp_path / "fifo", layout)
    with pytest.raises(InputError, match="the data path is a character device"):
        discover("/dev/zero", layout)


def test_folder_layouts_name_a_regular_file(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    for fn in (folder_videos, image_files):
        with pytest.raises(InputError, match="a file, not a folder"):
            fn(tmp_path / "a.jpg")
