"""Crash safety: SIGKILL the CLI at random moments, rerun, and get exactly the cache of an uninterrupted run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from extract.runner import run
from extract.sources import discover

from helpers import TinyExtractor, assert_same, make_set, read_all

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent

# The CLI with the test's tiny extractor in place of the registry (slowed down so kills land mid-run).
SCRIPT = f"""
import sys
sys.path[:0] = [{str(REPO)!r}, {str(HERE)!r}]
from extract import cli
from helpers import TinyExtractor
cli.create_extractor = lambda spec, *a, **k: TinyExtractor(delay=0.15)
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_sigkill_at_random_moments_then_rerun_equals_uninterrupted(tmp_path):
    root = tmp_path / "data"
    make_set(root, n_train=5, n_val=2, n_frames=20, size=32)
    ref = tmp_path / "ref.h5"
    run(discover(root), [TinyExtractor()], ref, batch=8, workers=0, progress=False)
    script = tmp_path / "cli.py"
    script.write_text(SCRIPT)
    out = tmp_path / "c.h5"
    cmd = [sys.executable, str(script), "run", "--data", str(root), "--out", str(out), "--batch", "8",
           "--workers", "1", "--quiet"]
    rng = np.random.default_rng(0)
    kills = 0
    progress: list[int] = []
    parts = tmp_path / "c.h5.parts"
    for attempt in range(6):
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        if attempt % 2 == 0:        # anywhere, start-up included
            time.sleep(float(rng.uniform(0.2, 4.0)))
        else:                       # while videos are being committed
            t0 = time.monotonic()
            before = len(list(parts.glob("seg-*.h5"))) if parts.exists() else 0
            while p.poll() is None and time.monotonic() - t0 < 120 and \
                    (len(list(parts.glob("seg-*.h5"))) if parts.exists() else 0) <= before:
                time.sleep(0.02)
            time.sleep(float(rng.uniform(0.0, 1.0)))
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)       # the runner and its decode workers, with no warning
            kills += 1
        p.wait()
        if out.exists() or parts.exists():
            progress.append(len(read_all(out)[0]))     # readable after every kill
    n_videos = len(discover(root).videos)
    assert kills >= 1
    # the kills landed mid-run: some videos were committed before a kill, not all of them
    assert any(0 < k < n_videos for k in progress), progress
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert_same(read_all(ref), read_all(out))
    assert not list(tmp_path.glob("c.h5.tmp")) and not list((tmp_path / "c.h5.parts").glob("*.h5"))
