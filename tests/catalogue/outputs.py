"""Nothing beside an output is overwritten or followed: links at an output's name (or at the temporary name the
old writers used), existing files without --force, names from data too long for the file system, a failed
write, scores of another task than the run's. Every command that writes files: `classify predict` (table and
timeline PNGs), `postprocess sweep` (PNG, timelines, postprocess.json), `postprocess submit`, `classify` (the
run's results)."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from features.store import FeatureStore
from helpers import build_small_world
from postprocess.cli import main as pp_main

from . import Case, Result, cli
from .classify import classify
from .postprocess import _run_copy, _shared
from .predict import predict

REPO = Path(__file__).resolve().parents[2]
VIDEO = "vid0004"                      # a validation video of the classify world
LONG = "v" * 250                       # a video name as long as a file name may be, before any suffix
PRECIOUS = "precious\n"


def _victim(tmp: Path) -> Path:
    p = tmp / "victim.txt"
    p.write_text(PRECIOUS)
    return p


def _victim_kept(tmp: Path, shared: Path, res: Result) -> None:
    assert (tmp / "victim.txt").read_text() == PRECIOUS, "a file outside the outputs was overwritten"


def _nothing_partial(folder: Path) -> None:
    left = [p.name for p in folder.rglob("*") if p.name.endswith((".part", ".tmp")) or
            (p.is_file() and not p.is_symlink() and p.stat().st_size == 0)]
    assert not left, f"partial files left: {left}"


# -- classify predict -----------------------------------------------------------------------------------------
def _predict_png_link(force: bool):
    def go(tmp: Path, shared: Path) -> Result:
        (tmp / f"p.{VIDEO}.png").symlink_to(_victim(tmp))
        return predict(tmp, shared, "--videos", VIDEO, "--timelines", "all", *(["--force"] if force else []))
    return go


def _no_table(tmp: Path, shared: Path, res: Result) -> None:
    _victim_kept(tmp, shared, res)
    assert not (tmp / "p.csv").exists(), "the table was written before the refusal"
    _nothing_partial(tmp)


def _predict_png_exists(tmp: Path, shared: Path) -> Result:
    (tmp / f"p.{VIDEO}.png").write_text("mine\n")
    return predict(tmp, shared, "--videos", VIDEO, "--timelines", "all")


def _png_kept(tmp: Path, shared: Path, res: Result) -> None:
    assert (tmp / f"p.{VIDEO}.png").read_text() == "mine\n"
    assert not (tmp / "p.csv").exists(), "the table was written before the refusal"


def _predict_part_link(tmp: Path, shared: Path) -> Result:
    """A link planted at the temporary name the table used to be written under (`.p.csv.part`)."""
    (tmp / ".p.csv.part").symlink_to(_victim(tmp))
    return predict(tmp, shared, "--videos", VIDEO)


def _table_and_victim(tmp: Path, shared: Path, res: Result) -> None:
    _victim_kept(tmp, shared, res)
    assert (tmp / "p.csv").read_text().startswith("video,frame")


def _long_cache(tmp: Path, shared: Path) -> Path:
    """One video of the classify world's cache (same extractor, same checkpoint) under a 250-character name."""
    src = FeatureStore(build_small_world(shared) / "features.h5")
    info = src.info("enet")
    blk = src.read([VIDEO], "enet", tuple(info.outputs))
    with FeatureStore(tmp / "long.h5", "a") as s:
        s.writer(info).write_video(LONG, blk.index["frame"].to_numpy(), blk.index["face"].to_numpy(),
                                   *(blk.arrays[f"enet/{o}"] for o in info.outputs))
    return tmp / "long.h5"


def _predict_long_name(tmp: Path, shared: Path) -> Result:
    return predict(tmp, shared, "--timelines", "all", cache=_long_cache(tmp, shared))


def _long_png_beside(tmp: Path, shared: Path, res: Result) -> None:
    pngs = [p for p in tmp.iterdir() if p.suffix == ".png"]
    assert len(pngs) == 1 and pngs[0].name.startswith("p.vvvv") and len(pngs[0].name.encode()) <= 255, pngs
    assert pngs[0].read_bytes()[:4] == b"\x89PNG" and (tmp / "p.csv").exists()
    _nothing_partial(tmp)


# -- postprocess sweep ----------------------------------------------------------------------------------------
def _sweep(tmp: Path, run: Path, *args) -> Result:
    return cli(pp_main, ["sweep", "--run", run, "--k", "0:3", "--cv", "0", *args])


def _json_as_shared(tmp: Path, shared: Path) -> None:
    want = (_shared(shared) / "run" / "postprocess.json").read_text()
    assert (tmp / "run" / "postprocess.json").read_text() == want, "the run's postprocess.json was replaced"


def _sweep_png_link(tmp: Path, shared: Path) -> Result:
    run = _run_copy(tmp, shared)
    (run / "sweep_expr.png").unlink(missing_ok=True)          # the link replaces the last sweep's plot
    (run / "sweep_expr.png").symlink_to(_victim(tmp))
    return _sweep(tmp, run, "--timelines", "0")


def _sweep_refused(tmp: Path, shared: Path, res: Result) -> None:
    _victim_kept(tmp, shared, res)
    _json_as_shared(tmp, shared)
    _nothing_partial(tmp)


def _sweep_folder_link(tmp: Path, shared: Path) -> Result:
    """`timelines_expr` is a link to a folder outside the run that holds a file of a timeline's name."""
    run = _run_copy(tmp, shared)
    (tmp / "elsewhere").mkdir()
    (tmp / "elsewhere" / "v0.png").write_text(PRECIOUS)
    (run / "timelines_expr").symlink_to(tmp / "elsewhere")
    return _sweep(tmp, run, "--timelines", "all")


def _elsewhere_kept(tmp: Path, shared: Path, res: Result) -> None:
    assert sorted(p.name for p in (tmp / "elsewhere").iterdir()) == ["v0.png"], "files written outside the run"
    assert (tmp / "elsewhere" / "v0.png").read_text() == PRECIOUS
    _json_as_shared(tmp, shared)


def _sweep_part_link(tmp: Path, shared: Path) -> Result:
    """A link planted at the temporary name postprocess.json used to be written under."""
    run = _run_copy(tmp, shared)
    (run / "postprocess.json.part").symlink_to(_victim(tmp))
    return _sweep(tmp, run, "--timelines", "0")


def _sweep_wrote(tmp: Path, shared: Path, res: Result) -> None:
    _victim_kept(tmp, shared, res)
    assert json.loads((tmp / "run" / "postprocess.json").read_text())["task"] == "expr"


def _other_task_scores(tmp: Path, shared: Path, metrics: bool) -> Result:
    """The run's scores.h5 swapped for VA scores; the run is EXPR by its postprocess.json (or its metrics.json,
    with no postprocess.json yet)."""
    from postprocess.scores import save_scores
    run = _run_copy(tmp, shared)
    (run / "scores.h5").unlink()
    if metrics:
        (run / "postprocess.json").unlink()
        (run / "metrics.json").write_text(json.dumps({"task": "expr", "final": "logits"}))
    rng = np.random.default_rng(0)
    video, frame = np.repeat(["v0", "v1"], [30, 20]), np.r_[np.arange(1, 31), np.arange(1, 21)]
    y = rng.uniform(-1, 1, (len(video), 2)).astype(np.float32)
    save_scores(run / "scores.h5", "val", video, frame, np.clip(y + rng.normal(0, .2, y.shape), -1, 1), y=y,
                attrs={"task": "va"})
    return _sweep(tmp, run)


def _nothing_for_va(tmp: Path, shared: Path, res: Result) -> None:
    run = tmp / "run"
    assert not (run / "sweep_va.png").exists() and not (run / "timelines_va").exists()
    if (run / "metrics.json").exists():
        assert not (run / "postprocess.json").exists()
    else:
        _json_as_shared(tmp, shared)


def _sweep_long_name(tmp: Path, shared: Path) -> Result:
    from postprocess.scores import save_scores
    run = tmp / "run"
    run.mkdir()
    rng = np.random.default_rng(1)
    video = np.repeat(["v0", LONG + "vv"], 25)
    frame = np.tile(np.arange(1, 26), 2)
    s = rng.dirichlet(np.ones(8), len(video)).astype(np.float32)
    save_scores(run / "scores.h5", "val", video, frame, s, y=s.argmax(1), attrs={"task": "expr"})
    return _sweep(tmp, run, "--timelines", "all")


def _long_timeline(tmp: Path, shared: Path, res: Result) -> None:
    names = sorted(p.name for p in (tmp / "run" / "timelines_expr").iterdir())
    assert len(names) == 2 and names[0] == "v0.png" and names[1].startswith("vvvv"), names
    assert all(len(n.encode()) <= 255 for n in names) and (tmp / "run" / "postprocess.json").exists()
    _nothing_partial(tmp)


# -- postprocess submit ---------------------------------------------------------------------------------------
def _submit_part_link(tmp: Path, shared: Path) -> Result:
    """A link planted at the temporary name the submission used to be written under (`<out>.part`)."""
    (tmp / "out.txt.part").symlink_to(_victim(tmp))
    return cli(pp_main, ["submit", "--run", _shared(shared) / "run", "--samples", _shared(shared) / "samples.txt",
                         "--out", tmp / "out.txt"])


def _submitted(tmp: Path, shared: Path, res: Result) -> None:
    _victim_kept(tmp, shared, res)
    assert (tmp / "out.txt").read_text() == (_shared(shared) / "ok.txt").read_text()


_LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit fails (EFBIG) instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
from postprocess.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _submit_disk_full(tmp: Path, shared: Path) -> Result:
    """The file system refuses the submission halfway (a file size limit of 200 bytes, failing the write as a
    full disk does)."""
    d = _shared(shared)
    r = subprocess.run([sys.executable, "-c", _LIMITED, "200", "submit", "--run", str(d / "run"), "--samples",
                        str(d / "samples.txt"), "--out", str(tmp / "out.txt")], capture_output=True, text=True,
                       cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    return Result(r.returncode, r.stdout, r.stderr)


def _no_submission(tmp: Path, shared: Path, res: Result) -> None:
    left = sorted(p.name for p in tmp.iterdir())
    assert left == [], f"left behind: {left}"


# -- classify (train): the run's results --------------------------------------------------------------------
def _train_disk_full(tmp: Path, shared: Path) -> Result:
    """The disk fills while results.csv is written: pandas writes part of it, then the write fails."""
    import pandas as pd
    to_csv = pd.DataFrame.to_csv

    def half(self, path_or_buf=None, *a, **k):
        if isinstance(path_or_buf, (str, os.PathLike)):
            Path(path_or_buf).write_text("method,feat")
        else:
            path_or_buf.write("method,feat")
        raise OSError(errno.ENOSPC, "No space left on device")

    pd.DataFrame.to_csv = half
    try:
        return classify(tmp, shared, "--name", "full")
    finally:
        pd.DataFrame.to_csv = to_csv


def _failed_run_says_why(tmp: Path, shared: Path, res: Result) -> None:
    d = tmp / "runs" / "expr"
    assert not (d / "full").exists() and (d / "full.failed").is_dir()
    failed = d / "full.failed"
    assert not (failed / "results.csv").exists(), "half a results.csv left"
    _nothing_partial(failed)
    why = (failed / "FAILED.txt").read_text()
    assert "results.csv" in why and "No space left on device" in why, why


CASES = [
    # classify predict: the timeline PNGs beside the table are checked with it, before anything is written
    Case("classify predict", "a link at a timeline PNG's name", _predict_png_link(False),
         expect="is a symbolic link", check=_no_table, defect="data-loss"),
    Case("classify predict", "a link at a timeline PNG's name, --force", _predict_png_link(True),
         expect="is a symbolic link", check=_no_table, defect="data-loss"),
    Case("classify predict", "a timeline PNG exists", _predict_png_exists, expect="output exists",
         check=_png_kept, defect="data-loss"),
    Case("classify predict", "a link at the table's old temporary name", _predict_part_link, expect=None,
         check=_table_and_victim, defect="data-loss"),
    Case("classify predict", "a 250-character video name", _predict_long_name, expect=None,
         check=_long_png_beside, defect="misleading"),
    # postprocess sweep
    Case("postprocess sweep", "a link at sweep_<task>.png", _sweep_png_link, expect="is a symbolic link",
         check=_sweep_refused, defect="data-loss"),
    Case("postprocess sweep", "timelines folder is a link out of the run", _sweep_folder_link,
         expect="output folder is a symbolic link", check=_elsewhere_kept, defect="data-loss"),
    Case("postprocess sweep", "a link at postprocess.json's old temporary name", _sweep_part_link, expect=None,
         check=_sweep_wrote, defect="data-loss"),
    Case("postprocess sweep", "scores.h5 of another task than the run's postprocess.json",
         lambda tmp, shared: _other_task_scores(tmp, shared, metrics=False),
         expect="the run is for task 'expr' (postprocess.json)", check=_nothing_for_va, defect="data-loss"),
    Case("postprocess sweep", "scores.h5 of another task than the run's metrics.json",
         lambda tmp, shared: _other_task_scores(tmp, shared, metrics=True),
         expect="the run is for task 'expr' (metrics.json)", check=_nothing_for_va, defect="silent"),
    Case("postprocess sweep", "a 252-character video name", _sweep_long_name, expect=None, check=_long_timeline,
         defect="misleading"),
    # postprocess submit
    Case("postprocess submit", "a link at the submission's old temporary name", _submit_part_link, expect=None,
         check=_submitted, defect="data-loss"),
    Case("postprocess submit", "the file system fails the write halfway", _submit_disk_full,
         expect="could not write", check=_no_submission, defect="misleading"),
    # classify: the run's results
    Case("classify", "the disk fills while results.csv is written", _train_disk_full,
         expect="results.csv: No space left on device", check=_failed_run_says_why, defect="misleading"),
]
