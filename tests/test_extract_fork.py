"""Decode workers forked from a process that has already used OpenCV (face detection, then crops in one
process, as a notebook or one pytest session does) must not deadlock: OpenCV's thread pool does not survive
fork(), so a forked worker may not call cv2 at all."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_forked_image_workers_after_opencv_use(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT / 'tests')!r})
        import cv2, numpy as np
        cv2.setNumThreads(2)
        for _ in range(3):                       # start OpenCV's worker threads in this (parent) process
            cv2.GaussianBlur(np.zeros((1500, 1500, 3), np.uint8), (31, 31), 0)
        from extract.runner import run
        from extract.sources import discover
        from helpers import TinyExtractor, make_set
        make_set({str(tmp_path / 'data')!r}, n_frames=12)
        s = run(discover({str(tmp_path / 'data')!r}), [TinyExtractor()], {str(tmp_path / 'c.h5')!r}, batch=5,
                workers=2, progress=False)
        print("frames", s.frames)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "frames" in r.stdout
