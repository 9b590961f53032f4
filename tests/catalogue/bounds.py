"""Numbers a user gives (bounded before anything is allocated) and messages that point the right way.

Bounds: each case runs under a memory guard: Python and numpy allocations are traced (tracemalloc) and the
process's data segment may grow by at most GUARD_MB while the command runs (RLIMIT_DATA, where the platform has
it), so a command that sizes an allocation by a bad number fails fast here with a MemoryError instead of
exhausting the machine; the check then requires the traced peak to stay under PEAK_MB.

Messages: a full disk (the write calls into a folder raise ENOSPC, as a real one does: no file name), a sample
list with a repeated or out-of-range row, and paths with spaces or quotes through the Makefile.
"""
from __future__ import annotations

import builtins
import contextlib
import errno
import io
import os
import shlex
import shutil
import subprocess
import tracemalloc
from pathlib import Path

import features.outputs as outputs
from classify.__main__ import main as classify_main
from extract.cli import main as extract_main
from postprocess.cli import main as post_main

from . import Case, Result, cli
from .classify import classify, no_run_folder
from helpers import build_small_world as world
from .extract import _data
from .postprocess import _run_copy, _shared

PEAK_MB = 300          # the most one command may allocate for a single bad number
GUARD_MB = 2048        # beyond this the process gets a MemoryError (never the machine's OOM killer)
ROOT = Path(__file__).resolve().parents[2]


# -- the memory guard -------------------------------------------------------------------------------------------
def _vm_data() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@contextlib.contextmanager
def _data_limit(extra_bytes: int):
    """Cap the data segment at its current size plus `extra_bytes` (restored afterwards); no-op without
    RLIMIT_DATA or /proc."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    except (ImportError, AttributeError, OSError):
        yield
        return
    now = _vm_data()
    want = None if now is None else now + extra_bytes
    if want is None or (hard != resource.RLIM_INFINITY and want > hard):
        yield
        return
    resource.setrlimit(resource.RLIMIT_DATA, (want, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def guarded(run, prepare=None):
    """`run` under the memory guard; the result carries the traced peak (MB) for `small_peak`. `prepare(shared)`
    builds the shared world first, outside the measurement."""
    def go(tmp: Path, shared: Path) -> Result:
        if prepare is not None:
            prepare(shared)
        tracemalloc.start()
        try:
            with _data_limit(GUARD_MB << 20):
                res = run(tmp, shared)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        res.peak_mb = peak / 2**20
        return res
    return go


def small_peak(then=None):
    def check(tmp: Path, shared: Path, res: Result) -> None:
        assert res.peak_mb < PEAK_MB, f"the command allocated {res.peak_mb:.0f} MB for one number"
        if then is not None:
            then(tmp, shared, res)
    return check


# -- commands -----------------------------------------------------------------------------------------------------
def sweep(*args):
    return lambda tmp, shared: cli(post_main, ["sweep", "--run", _run_copy(tmp, shared), "--cv", "0",
                                               "--timelines", "0", *args])


def _samples(tmp: Path, shared: Path, edit) -> Path:
    """The shared sample list with its lines edited by `edit(lines) -> lines`."""
    lines = (_shared(shared) / "samples.txt").read_text().splitlines()
    p = tmp / "samples.txt"
    p.write_text("\n".join(edit(lines)) + "\n")
    return p


def submit(edit):
    def go(tmp: Path, shared: Path) -> Result:
        return cli(post_main, ["submit", "--run", _run_copy(tmp, shared), "--samples", _samples(tmp, shared, edit),
                               "--out", tmp / "out.txt"])
    return go


def validate(edit):
    def go(tmp: Path, shared: Path) -> Result:
        return cli(post_main, ["validate", _shared(shared) / "ok.txt", "--samples", _samples(tmp, shared, edit),
                               "--task", "expr"])
    return go


def no_submission(tmp: Path, shared: Path, res: Result) -> None:
    assert not (tmp / "out.txt").exists() and not list(tmp.glob("out.txt*")), sorted(p.name for p in tmp.iterdir())


def swept_to_longest(tmp: Path, shared: Path, res: Result) -> None:
    """The sweep ran, stopped just past the longest video (30 frames) and said so."""
    assert "longest video (30 frames) smooths alike, so the sweep stops at k = 31 (32 of the 1000000001" \
        in res.log, res.log[:800]
    assert (tmp / "run" / "postprocess.json").exists()


def train(*args, heads: str = "logits"):
    return lambda tmp, shared: classify(tmp, shared, *args, heads=heads)


def trained(tmp: Path, shared: Path, res: Result) -> None:
    assert (tmp / "runs" / "expr" / "latest" / "metrics.json").exists(), res.out[-800:]


def extract(*args):
    return lambda tmp, shared: cli(extract_main, ["run", "--data", _data(shared), "--out", tmp / "c.h5", "--workers",
                                                  "0", "--quiet", *args])


def no_cache(tmp: Path, shared: Path, res: Result) -> None:
    assert not list(tmp.glob("c*.h5")), sorted(p.name for p in tmp.iterdir())


# -- a full disk ----------------------------------------------------------------------------------------------------
class _FullFile:
    """A file opened for writing on a full disk: it exists (empty), and every write fails without a file name."""

    def __init__(self, f):
        self._f = f

    def write(self, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def __iter__(self):
        return iter(self._f)


@contextlib.contextmanager
def disk_full(folder: Path, names: tuple[str, ...] | None = None):
    """Files opened for writing under `folder` (only those named `names`, when given) fail as on a full disk."""
    real = io.open
    folder = folder.resolve()

    def fake(file, mode="r", *a, **k):
        f = real(file, mode, *a, **k)
        if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+"):
            p = Path(os.fspath(file)).resolve()
            if p.is_relative_to(folder) and (names is None or p.name in names):
                return _FullFile(f)
        return f
    real_stream = outputs._stream

    def fake_stream(fd, path):             # the one writer's temporary files, judged by the name they will take
        f = real_stream(fd, path)
        p = Path(path).parent.resolve() / Path(path).name
        return _FullFile(f) if p.is_relative_to(folder) and (names is None or p.name in names) else f
    saved = builtins.open, io.open
    builtins.open = io.open = fake
    outputs._stream = fake_stream
    try:
        yield
    finally:
        builtins.open, io.open = saved
        outputs._stream = real_stream


def train_on_full_disk(names: tuple[str, ...] | None = None):
    def go(tmp: Path, shared: Path) -> Result:
        world(shared)
        (tmp / "runs").mkdir()
        with disk_full(tmp / "runs", names):
            return classify(tmp, shared, "--name", "r")
    return go


def failed_run_told(note: str | None):
    """The run folder is `r.failed`; FAILED.txt holds `note` (None: no FAILED.txt at all, never an empty one);
    the log never says the folder could not be renamed."""
    def check(tmp: Path, shared: Path, res: Result) -> None:
        d = tmp / "runs" / "expr"
        assert (d / "r.failed").is_dir() and not (d / "r").exists(), sorted(p.name for p in d.iterdir())
        assert "could not rename" not in res.log and "could not be renamed" not in res.log, res.log[-800:]
        f = d / "r.failed" / "FAILED.txt"
        if note is None:
            assert not f.exists(), f"left {f} ({f.stat().st_size} bytes)"
            assert "FAILED.txt could not be written (" in res.log and "No space left on device" in res.log
        else:
            assert note in f.read_text(), f.read_text()
        assert not (d / "latest").exists()
    return check


# -- make with paths that hold spaces and quotes ----------------------------------------------------------------------
def make_n(target: str, **variables: str):
    """`make -n TARGET VAR=value ...` in the repository: the commands make would run (nothing is run)."""
    def go(tmp: Path, shared: Path) -> Result:
        if shutil.which("make") is None:
            return Result(0, "", "")
        r = subprocess.run(["make", "-n", "-C", str(ROOT), target, *(f"{k}={v}" for k, v in variables.items())],
                           capture_output=True, text=True, timeout=60)
        return Result(r.returncode, r.stdout, r.stderr)
    return go


def _args_of(out: str, module: str) -> list[list[str]]:
    """The argument lists of every `-m <module>` command in make's output, split as the shell splits them."""
    found = []
    for line in out.replace("\\\n", " ").splitlines():
        for part in line.split(" && "):
            try:
                words = shlex.split(part)
            except ValueError as e:
                raise AssertionError(f"the shell cannot split {part!r}: {e}") from None
            for i in range(len(words) - 1):
                if words[i] == "-m" and words[i + 1] == module:
                    found.append(words[i + 2:])
    return found


def passes(module: str, **flags: str):
    """Each `-m <module>` command make prints gets each flag's value as one whole argument."""
    def check(tmp: Path, shared: Path, res: Result) -> None:
        if shutil.which("make") is None:
            return
        cmds = _args_of(res.out, module)
        assert cmds, res.out
        for flag, value in flags.items():
            got = [c[c.index(flag) + 1] for c in cmds if flag in c]
            assert got and all(g == value for g in got), f"{flag}: {got} (wanted {value!r})\n{res.out}"
    return check


# -- cases ---------------------------------------------------------------------------------------------------------
FAR = "99999999"          # a frame number far past any video
HUGE = "99999999999999999999"       # above int64

CASES = [
    # a huge k range: swept up to the longest video, in bounded memory
    Case("postprocess sweep", "--k 0:1000000000 (swept up to the longest video)",
         guarded(sweep("--k", "0:1000000000"), _shared), expect=None, check=small_peak(swept_to_longest),
         defect="traceback"),
    Case("postprocess sweep", "--k 5:2000000000:2 (swept up to the longest video)",
         guarded(sweep("--k", "5:2000000000:2"), _shared), expect=None, check=small_peak(), defect="traceback"),
    Case("postprocess sweep", "--k end above any frame number",
         guarded(sweep("--k", "0:99999999999"), _shared), expect="--k: 99999999999 is above 2147483647",
         check=small_peak(), defect="traceback"),
    Case("postprocess sweep", "--cv -1", sweep("--cv", "-1"), expect="argument --cv: must be >= 0", defect="silent"),
    Case("classify", "--k 0:1000000000 (swept up to the longest video)",
         guarded(train("--k", "0:1000000000"), world), expect=None,
         check=small_peak(trained), defect="traceback"),
    Case("classify", "--k 0:5000000000", guarded(train("--k", "0:5000000000"), world),
         expect="--k: 5000000000 is above 2147483647", check=small_peak(no_run_folder()), defect="traceback"),
    Case("classify", "--seed above 32 bits",
         guarded(train("--seed", str(2**32), heads="mlp"), world),
         expect="--seed must be an integer <= 4294967295", check=small_peak(no_run_folder()), defect="traceback"),
    Case("classify", "--seed far above 32 bits",
         guarded(train("--seed", HUGE, heads="fusion_mlp"), world),
         expect="--seed must be an integer <= 4294967295", check=small_peak(no_run_folder()), defect="traceback"),
    Case("classify", "--hidden 1000000000",
         guarded(train("--hidden", "1000000000", heads="fusion_mlp"), world),
         expect="--hidden must be an integer <= 8192", check=small_peak(no_run_folder()), defect="traceback"),
    Case("classify", "--cpus more than the machine has", train("--cpus", "100000"),
         expect="--cpus must be an integer <= ",
         check=no_run_folder(), defect="silent"),
    Case("extract run", "--shard 1/1000000000",
         guarded(extract("--shard", "1/1000000000"), _data), expect="--shard: n must be <= 65536",
         check=small_peak(no_cache), defect="traceback"),
    Case("extract run", "--margin 1e9", extract("--margin", "1e9", "--detect", "on"),
         expect="argument --margin: must be >= 0.0 and <= 4.0", check=no_cache, defect="traceback"),
    # sample-list frame numbers: bounded by the video's known frames plus a margin, and by their type
    Case("postprocess submit", "a sample row far past its video",
         guarded(submit(lambda ls: ls[:6] + [f"v0/{FAR}.jpg"] + ls[6:]), _shared),
         expect=f"samples.txt:7: frame {FAR} of video 'v0' is far past the video",
         check=small_peak(no_submission), defect="traceback"),
    Case("postprocess submit", "a sample row far past the last video, at the end of the list",
         guarded(submit(lambda ls: ls + [f"v1/{FAR}0.png"]), _shared),
         expect=f"samples.txt:52: frame {FAR}0 of video 'v1' is far past the video",
         check=small_peak(no_submission), defect="traceback"),
    Case("postprocess submit", "a sample frame number above int64",
         guarded(submit(lambda ls: ls[:3] + [f"v1/{HUGE}.jpg"] + ls[3:]), _shared),
         expect=f"samples.txt:4: frame number {HUGE} is above 2147483647", check=small_peak(no_submission),
         defect="traceback"),
    Case("postprocess validate", "a sample frame number above int64",
         validate(lambda ls: ls[:2] + [f"v0/{HUGE}.jpg"] + ls[2:]),
         expect=f"samples.txt:3: frame number {HUGE} is above 2147483647", defect="traceback"),
    # a sample list with a repeated line: named before anything is written
    Case("postprocess submit", "a repeated sample-list line",
         submit(lambda ls: ls[:5] + [ls[3]] + ls[5:]),
         expect="samples.txt:6: 'v0/00003.jpg' again (first at line 4); each sample once", check=no_submission,
         defect="misleading"),
    Case("postprocess submit", "the whole sample list twice",
         submit(lambda ls: ls + ls[1:]),
         expect="samples.txt:52: 'v0/00001.jpg' again (first at line 2)", check=no_submission, defect="misleading"),
    Case("postprocess validate", "a repeated sample-list line",
         validate(lambda ls: ls[:10] + [ls[9]] + ls[10:]),
         expect="samples.txt:11: 'v0/00009.jpg' again (first at line 10)", defect="misleading"),
    # a full disk: the error names the file; the failed run is renamed and says so, without an empty note
    Case("classify", "disk full while saving the run (FAILED.txt cannot be written either)",
         train_on_full_disk(), expect="r.failed/heads/logits", check=failed_run_told(None), defect="misleading"),
    Case("classify", "disk full while writing metrics.json",
         train_on_full_disk(("metrics.json",)), expect="r.failed/metrics.json: No space left on device",
         check=failed_run_told("metrics.json: No space left on device"), defect="misleading"),
    Case("classify", "disk full while writing results.csv",
         train_on_full_disk(("results.csv",)), expect="r.failed/results.csv: No space left on device",
         check=failed_run_told("results.csv: No space left on device"), defect="misleading"),
    # paths with spaces and quotes through the Makefile
    Case("make predict", "VIDEO with a space",
         make_n("predict", VIDEO="my clip.mp4", RUN="runs/expr/my run"), expect=None,
         check=passes("extract", **{"--data": "my clip.mp4", "--cache": "cache/predict/my clip.h5"}),
         defect="misleading"),
    Case("make predict", "VIDEO in a folder with a space, and a quote in its name",
         make_n("predict", VIDEO="my videos/it's.mp4", RUN="runs/expr/r"), expect=None,
         check=passes("classify", **{"--source": "my videos/it's.mp4", "--out": "predictions/it's.csv",
                                     "--cache": "cache/predict/it's.h5"}), defect="misleading"),
    Case("make submit", "SAMPLES and SUB with spaces",
         make_n("submit", SAMPLES="test lists/expr samples.txt", SUB="my submissions/expr.txt"), expect=None,
         check=passes("postprocess", **{"--samples": "test lists/expr samples.txt",
                                        "--out": "my submissions/expr.txt"}), defect="misleading"),
    Case("make extract", "DATA and OUT with spaces",
         make_n("extract", DATA="my data", OUT="my cache/f.h5"), expect=None,
         check=passes("extract", **{"--data": "my data", "--cache": "my cache/f.h5"}), defect="misleading"),
]
