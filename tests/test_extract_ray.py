"""The Ray engine on a local Ray cluster (127.0.0.1, 2 CPUs, no dashboard): equal to the local runner, a worker
SIGKILLed mid-run, the driver killed and rerun. One module-scoped cluster; all tests here are slow (~1 min)."""
from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from extract.runner import Settings, run as run_local
from extract.sources import discover, shard_paths

from helpers import TinyExtractor, assert_same, make_set, read_all, tiny_create

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
N = 2


def tiny(delay: float = 0.0) -> list:
    """The workers' extractors (pickled by reference: this module is on the workers' PYTHONPATH)."""
    return [TinyExtractor(delay=delay)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    pytest.importorskip("ray", reason="the ray extra is not installed")
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"        # Ray on the loopback interface only
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), str(HERE)])
    import ray
    ctx = ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 1024 ** 2,
                   configure_logging=False, log_to_driver=False)
    root = tmp_path_factory.mktemp("raydata")
    make_set(root, n_train=5, n_val=2, n_frames=20, size=32)
    ref = root.parent / "ref.h5"
    run_local(discover(root), [TinyExtractor()], ref, batch=8, workers=0, progress=False)
    yield {"address": ctx.address_info["gcs_address"], "root": root, "ref": read_all(ref)}
    ray.shutdown()
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


def _settings() -> Settings:
    return Settings(batch=8, workers=0, progress=False)


@pytest.mark.slow
def test_two_workers_equal_the_local_runner(cluster, tmp_path):
    from extract import ray_engine
    out = tmp_path / "c.h5"
    s = ray_engine.run(discover(cluster["root"]), functools.partial(tiny), out, settings=_settings(), n_workers=N,
                       lease_frames=30)
    n_videos = len(discover(cluster["root"]).videos)
    assert s.videos == n_videos and s.frames == sum(v.n_frames for v in discover(cluster["root"]).videos)
    assert all(v > 0 for v, _ in s.per_worker.values()), s.per_worker         # both workers took videos
    assert "Ray workers" in s.line() and all(p.exists() for p in shard_paths(out, N))
    assert_same(cluster["ref"], read_all(shard_paths(out, N)))


@pytest.mark.slow
def test_a_worker_sigkilled_at_a_random_moment_is_redone_elsewhere(cluster, tmp_path):
    import ray

    from extract import ray_engine
    seed = int(time.time()) % 10_000
    wait = float(np.random.default_rng(seed).uniform(0.3, 1.5))
    killed: list = []

    def kill_later(actors):
        def go():
            time.sleep(wait)
            pid = ray.get(actors[1].pid.remote())
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        threading.Thread(target=go, daemon=True).start()

    out = tmp_path / "c.h5"
    s = ray_engine.run(discover(cluster["root"]), functools.partial(tiny, 0.15), out, settings=_settings(),
                       n_workers=N, lease_frames=40, on_start=kill_later)
    assert killed and s.restarts >= 1, (seed, wait, s.line())
    assert_same(cluster["ref"], read_all(shard_paths(out, N)))


DRIVER = f"""
import functools, json, sys
sys.path[:0] = [{str(REPO)!r}, {str(HERE)!r}]
from extract import cli, ray_engine
from helpers import tiny_create
cli.create_extractor = tiny_create
def pids(actors):
    import ray
    json.dump([ray.get(a.pid.remote()) for a in actors.values()], open(sys.argv[1], "w"))
ray_engine.run = functools.partial(ray_engine.run, on_start=pids)
sys.exit(cli.main(sys.argv[2:]))
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_driver_killed_then_the_same_command_skips_committed_videos(cluster, tmp_path, monkeypatch, capsys):
    import json

    from extract import cli
    script, pid_file, out = tmp_path / "driver.py", tmp_path / "pids.json", tmp_path / "c.h5"
    script.write_text(DRIVER)
    cmd = [sys.executable, str(script), str(pid_file), "run", "--data", str(cluster["root"]), "--out", str(out),
           "--batch", "8", "--workers", "0", "--quiet", "--engine", "ray", "--ray-address", cluster["address"],
           "--ray-workers", str(N)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)])}
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    parts = [p_.with_name(p_.name + ".parts") for p_ in shard_paths(out, N)]
    t0 = time.monotonic()
    while p.poll() is None and time.monotonic() - t0 < 60 and \
            sum(len(list(d.glob("seg-*.h5"))) for d in parts if d.exists()) < 2:
        time.sleep(0.05)
    assert p.poll() is None, p.stderr.read().decode()[-2000:]
    p.send_signal(signal.SIGKILL)
    p.wait()
    for pid in json.loads(pid_file.read_text()):      # Ray ends the dead driver's workers
        t0 = time.monotonic()
        while _alive(pid) and time.monotonic() - t0 < 30:
            time.sleep(0.1)
        assert not _alive(pid)
    n_videos = len(discover(cluster["root"]).videos)
    # the same command again, here (this process is already connected to the cluster)
    monkeypatch.setattr(cli, "create_extractor", tiny_create)
    assert cli.main(cmd[3:]) == 0
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("extract:")][-1]   # the summary: stdout
    skipped = int(line.split("(")[1].split()[0])
    assert 1 <= skipped < n_videos, line
    assert_same(cluster["ref"], read_all(shard_paths(out, N)))


def test_a_local_run_imports_nothing_of_ray(tmp_path):
    root = tmp_path / "data"
    make_set(root, n_train=1, n_val=1, n_frames=10)
    code = (f"import sys; sys.path[:0] = [{str(REPO)!r}, {str(HERE)!r}]\n"
            "from extract import cli\nfrom helpers import TinyExtractor\n"
            "cli.create_extractor = lambda *a, **k: TinyExtractor()\n"
            f"assert cli.main(['run', '--data', {str(root)!r}, '--out', {str(tmp_path / 'c.h5')!r}, '--quiet',"
            " '--workers', '0']) == 0\n"
            "bad = sorted(m for m in sys.modules if m == 'ray' or m.startswith(('ray.', 'extract.ray')))\n"
            "assert not bad, bad\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.slow
def test_cuda_workers_on_a_cluster_without_gpus_is_one_line(cluster, tmp_path):
    from extract import ray_engine
    from features.errors import InputError
    with pytest.raises(InputError, match="the Ray cluster has 0 GPUs"):
        ray_engine.run(discover(cluster["root"]), functools.partial(tiny), tmp_path / "c.h5",
                       settings=Settings(batch=8, workers=0, progress=False, device="cuda"))
    assert not list(tmp_path.iterdir())
