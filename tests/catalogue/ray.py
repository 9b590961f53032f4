"""Bad input to `python -m extract run --engine ray` (none of these starts Ray)."""
from __future__ import annotations

import socket
import sys
from pathlib import Path

from extract.cli import main

from . import Case, cli

CMD = "extract run --engine ray"


def _data(shared: Path) -> Path:
    root = shared / "ray_aff"
    if not (root / "cropped").exists():
        from features.synthetic import make_affwild
        make_affwild(root, n_train=1, n_val=1, n_frames=10, size=32, seed=1)
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(tmp: Path, shared: Path, *extra) -> object:
    return cli(main, ["run", "--data", _data(shared), "--out", tmp / "c.h5", "--quiet", "--engine", "ray", *extra])


def _nothing_written(tmp: Path, shared: Path, res) -> None:
    assert not [p.name for p in tmp.iterdir()], list(tmp.iterdir())


def _without_ray(tmp: Path, shared: Path):
    saved = {m: sys.modules[m] for m in list(sys.modules) if m == "ray" or m.startswith("ray.")}
    for m in saved:
        del sys.modules[m]
    sys.modules["ray"] = None           # `import ray` raises ImportError, as where it is not installed
    try:
        return _run(tmp, shared)
    finally:
        del sys.modules["ray"]
        sys.modules.update(saved)


CASES = [
    Case(CMD, "unreachable --ray-address",
         lambda tmp, shared: _run(tmp, shared, "--ray-address", f"127.0.0.1:{_free_port()}"),
         expect="no Ray cluster answers there", check=_nothing_written),
    Case(CMD, "--ray-address that is not HOST:PORT",
         lambda tmp, shared: _run(tmp, shared, "--ray-address", "head-node"),
         expect="--ray-address must be auto or HOST:PORT", check=_nothing_written),
    Case(CMD, "Ray not installed", _without_ray, expect="--engine ray needs Ray: pip install",
         check=_nothing_written),
    Case(CMD, "--ray-workers 0",
         lambda tmp, shared: _run(tmp, shared, "--ray-workers", "0"),
         expect="--ray-workers must be >= 1", check=_nothing_written),
    Case(CMD, "--shard together with --engine ray",
         lambda tmp, shared: _run(tmp, shared, "--shard", "1/2"),
         expect="--shard and --engine ray exclude each other", check=_nothing_written),
]
