"""The run folder `runs/<task>/<name>/`: written by `classify train`, read by `postprocess` and `classify predict`.

Both stages read it, so its format lives here, below both: the names of its files, how a new folder is made
(never over an existing run), how a failed one is marked (`<name>.failed`, its error in FAILED.txt), how
`runs/<task>/latest` is moved, and metrics.json. What only one stage reads stays with it: postprocess.json
(`postprocess.config`), the saved heads (`classify.runfolder`).

A run folder is untrusted input (copied, downloaded, edited): its files stay inside it (no `..`, absolute path or
symlink leading out, `run_file`) and metrics.json is checked for the types its readers use (`read_metrics`).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError, os_error_text
from .outputs import json_default, write_json, write_output
from .paths import inside, plain_name
from .tasks import get_task

log = logging.getLogger(__name__)

METRICS = "metrics.json"
POSTPROCESS = "postprocess.json"
SCORES = "scores.h5"
FAILED = "FAILED.txt"
LATEST = "latest"


# -- paths inside a run -----------------------------------------------------------------------------------------
def run_file(run: str | os.PathLike, name: str) -> Path:
    """`run/name`, refused when it leads outside the run (a symlink); it need not exist."""
    return inside(run, Path(run) / name, file=True)


def scores_file(run: str | os.PathLike) -> Path:
    """The run's scores.h5, which must exist."""
    p = run_file(run, SCORES)
    if not p.exists():
        raise InputError(f"no {SCORES} in the run directory (run classify first)", run)
    return p


def check_finished(run: str | os.PathLike) -> Path:
    """The folder of a run that exists and did not fail."""
    run = Path(run)
    if not run.is_dir():
        raise InputError("run folder not found (give runs/<task>/<name> as classify wrote it)", run)
    if run.name.endswith(".failed") or (run / FAILED).exists():
        raise InputError(f"this run failed (see {FAILED}); train it again", run)
    return run


# -- JSON files -------------------------------------------------------------------------------------------------
def read_json(path: Path, bad_json: str = "") -> object:
    """The JSON value in `path`; one line naming it when it is not JSON (`bad_json`: what to do, after the
    parser's message)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:                      # UnicodeDecodeError included
        raise InputError(f"not valid JSON ({e}){'; ' + bad_json if bad_json else ''}", path) from None


def read_json_object(path: Path, bad_json: str = "", not_object: str = "expected a JSON object") -> dict:
    """A JSON object from `path`; one line naming it otherwise (`not_object`: the line for valid JSON of
    another type)."""
    d = read_json(path, bad_json)
    if not isinstance(d, dict):
        raise InputError(not_object, path)
    return d


def read_metrics(run: str | os.PathLike) -> dict:
    """metrics.json of a finished run, with the fields its readers use checked for their types."""
    mp = run_file(run, METRICS)
    if not mp.is_file():
        raise InputError(f"no {METRICS}: not a finished classify run", run)
    m = read_json_object(mp)
    for key in ("task", "final"):
        if key not in m:
            raise InputError(f"no {key!r} in it; not a classify run's metrics", mp)
    task_name(m["task"], mp)
    plain_name(m["final"], "the final head", mp)
    for key in ("summary", "members", "provenance"):
        if m.get(key) is not None and not isinstance(m[key], dict):
            raise InputError(f"{key!r} must be a JSON object, got {type(m[key]).__name__}", mp)
    for key in ("members", "provenance"):
        bad = [k for k, v in (m.get(key) or {}).items() if not isinstance(v, dict)]
        if bad:
            raise InputError(f"{key}[{bad[0]!r}] must be a JSON object", mp)
    return m


def write_metrics(run_dir: Path, metrics: dict) -> Path:
    """metrics.json through the one writer; numpy values as plain JSON numbers and lists."""
    return write_json(run_dir / METRICS, metrics, default=json_default)


def task_name(name: object, where: Path) -> str:
    """A task name read from `where`, checked."""
    if not isinstance(name, str):
        raise InputError(f"task must be a task name, got {name!r}", where)
    try:
        return get_task(name).name
    except InputError as e:
        raise InputError(str(e), where) from None



# -- a run's life: made, failed or finished ---------------------------------------------------------------------
def new_run_dir(runs_dir: str | os.PathLike, task: str, name: str | None) -> Path:
    """`<runs_dir>/<task>/<name>` (default name: a time stamp), checked and not yet made: runs are never
    overwritten."""
    runs_dir = Path(runs_dir)
    for d in (runs_dir, runs_dir / task):
        if d.exists() and not d.is_dir():
            raise InputError("--runs-dir: this is a file, not a folder", d)
    if name is not None:
        if not name.strip() or name != Path(name).name or name in (".", "..", LATEST) \
                or name.endswith(".failed") or name.startswith("."):
            raise InputError(f"--name {name!r}: give a plain folder name (no '/', not 'latest', not starting "
                             f"with '.' or ending in '.failed')")
        d = runs_dir / task / name
        if d.exists():
            raise InputError("run folder exists; choose another --name (runs are never overwritten)", d)
        return d
    base = time.strftime("%Y%m%d-%H%M%S")
    d, i = runs_dir / task / base, 2
    while d.exists():
        d, i = runs_dir / task / f"{base}-{i}", i + 1
    return d


@contextmanager
def creating(run_dir: Path) -> Iterator[Path]:
    """Make the run folder; if anything fails inside the block, mark it failed (`mark_failed`) and re-raise."""
    run_dir.mkdir(parents=True)
    try:
        yield run_dir
    except BaseException as e:
        if run_dir.exists():
            mark_failed(run_dir, e)
        raise


def mark_failed(run_dir: Path, e: BaseException) -> None:
    """Rename the folder of a failed run `<name>.failed` and say why in its FAILED.txt. Each step that fails is
    logged as what it is, and never hides the run's own error (re-raised by the caller); an OSError of the run
    that names a file in the folder is pointed at the file's new place."""
    failed = run_dir.with_name(run_dir.name + ".failed")
    latest = run_dir.parent / LATEST
    try:
        if failed.exists():                  # an earlier failed attempt of the same name: nothing valid
            shutil.rmtree(failed)
        run_dir.rename(failed)
    except OSError as oe:
        log.warning("run failed; its folder %s could not be renamed %s (%s); %s unchanged", run_dir, failed.name,
                  os_error_text(oe), latest)
        return
    if isinstance(e, OSError) and isinstance(e.filename, str) and Path(e.filename).is_relative_to(run_dir):
        e.filename = str(failed / Path(e.filename).relative_to(run_dir))
    note = failed / FAILED
    why = os_error_text(e) if isinstance(e, OSError) and not isinstance(e, InputError) else str(e)
    try:
        write_output(note, f"{type(e).__name__}: {why}\n")
    except OSError as oe:                    # a full disk: no empty or half note is left to mislead
        note.unlink(missing_ok=True)
        log.warning("run failed; its folder is now %s (%s unchanged); %s could not be written (%s)", failed, latest,
                  FAILED, os_error_text(oe))
        return
    log.info("run failed; its folder is now %s (%s unchanged)", failed, latest)


def point_latest(run_dir: Path) -> None:
    """`<runs>/<task>/latest` -> the newest run (a symlink, so `make sweep` finds it); a real folder of that
    name is left alone."""
    latest = run_dir.parent / LATEST
    if latest.exists() and not latest.is_symlink():
        log.info("note: %s is a run folder, not a link; it is left as it is", latest)
        return
    tmp = run_dir.parent / f".latest-{run_dir.name}"
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(run_dir.name)
    tmp.replace(latest)
