"""Feature caches given as things that are not cache files: a FIFO (h5py's open blocked forever before: no
answer at all, recorded as "silent") and a set of shard files whose name claims an absurd split (the reader
listed every shard number 1..n)."""
from __future__ import annotations

import os
from pathlib import Path

from classify.__main__ import main as classify_main
from features.store import FeatureStore

from . import Case, api, cli


def _fifo(tmp: Path) -> Path:
    p = tmp / "features.h5"
    os.mkfifo(p)
    return p


def _huge_shard(tmp: Path) -> Path:
    (tmp / "features.shard-1-of-999999999999.h5").write_bytes(b"")
    return tmp / "features.h5"


CASES = [
    Case("classify predict", "--cache is a FIFO",
         lambda tmp, shared: cli(classify_main, ["predict", "--pretrained", "fer", "--cache", _fifo(tmp),
                                                 "--out", tmp / "p.csv"]),
         "named pipe", defect="silent"),
    Case("features API", "FeatureStore on a FIFO",
         lambda tmp, shared: api(lambda: FeatureStore(_fifo(tmp), "r")), "named pipe", defect="silent"),
    Case("features API", "shard files naming 999999999999 shards",
         lambda tmp, shared: api(lambda: FeatureStore(_huge_shard(tmp), "r")), "more than 65536",
         defect="traceback"),
]
