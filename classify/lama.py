"""LightAutoML heads: `TabularAutoML` on small feature sets (logits, + VA), as the reference did.

VA uses `multi:reg`, EXPR `multiclass`, AU `multilabel`. The preset is held to what a few model-output columns
need and a time limit allows: one level of a linear model (`linear_l2`) and LightGBM with a bounded number of
trees for EXPR, the linear model and a random forest for VA and AU (LightGBM supports neither multi-target kind);
no tuned models, no second level, no feature selection (its LightGBM took minutes on 100 k rows of 8 columns).
Each library runs on one thread when there are few columns: on 8 columns LightGBM's and torch's per-iteration
thread hand-offs cost far more than a second core gains, and on a busy 2-core machine two threads ran 30-40 times
slower than one. Its console output is dropped; its own log goes to `log_file`, with a line per fitting stage.

LightAutoML (through torch) crashes or hangs in a process that has already loaded TensorFlow, as the MLP heads
do, so fitting and predicting run in a worker process (`python -m classify.lama`), fed through a temporary
folder; this process keeps only the pickled model bytes and never imports LightAutoML itself.

The time limit (`timeout`, seconds) covers the whole fit as the caller sees it, from the call (sampling the
rows, starting the worker: its imports take ~8 s on an idle machine, far more on a busy one) to the model coming
back. The training rows go to the worker in `sample_order` (any first m of them are a class-stratified sample
spread over the videos, every class in it), at most `max_rows` of them, and it fits in two stages:
1. a pilot on the first `PILOT_ROWS` rows; its model and validation scores are kept at once;
2. the pilot's wall time, measured on this machine under its present load, sizes the second fit: as many rows as
   fill `FILL` of the time left (the rest is for scoring the validation rows with the larger model, which may
   keep trees the pilot's blend dropped, and for the estimate's error), if that is at least twice the pilot's.
LightAutoML runs in its hard timing mode (it stops itself between folds). The worker is stopped at
`hard_limit(timeout)` = timeout + max(10 s, 25 %); the fit then keeps the last stage that finished, and raises
`LamaTimeout` (one line; `classify.run` leaves the head out of the run and says so) only when not even the pilot
finished.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pickle
import re
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from features.errors import InputError
from features.outputs import write_output

from .base import ROWS, SEED, Head, fit_context, integers
from .registry import register_head

_LAMA_TASK = {"regression": "multi:reg", "multiclass": "multiclass", "multilabel": "multilabel"}
_PKG_ROOT = str(Path(__file__).resolve().parent.parent)
LAMA_MAX_ROWS = 100_000     # training rows LightAutoML may see by default (see LamaHead.fit)
PILOT_ROWS = 5_000          # rows of the first, timed fit
FILL = 0.5                  # share of the time left the second fit is sized to take (the rest: scoring, error)
FEW_COLUMNS = 64            # up to this many feature columns, LightAutoML's libraries run on one thread
# LightGBM for EXPR, bounded: LightAutoML's own defaults grow with the rows (up to 3000 rounds of 8 trees per
# fold, early stopping after 200): minutes per fold, and as long again to score the validation rows. On 100 k
# rows of 8 logit columns, 300 rounds at 0.1 took 3.7x the fit time and 8x the scoring time of these for a
# P_EXPR 0.002 higher
LGB_PARAMS = {"learning_rate": 0.2, "num_leaves": 31, "num_trees": 100, "early_stopping_rounds": 10}
# its random forest for VA and AU, bounded too: LightAutoML's own takes 500 trees on up to 10 k rows and 4 jobs
# whatever its cpu_limit (one 5 k-row AU fit took 41 s of a 60 s limit on a busy 2-core machine, and its
# scoring 18 s more)
RF_PARAMS = {"n_estimators": 100, "min_samples_leaf": 32}


class LamaTimeout(InputError):
    """LightAutoML did not finish within its time limit (plus the stated margin); its worker was stopped."""


def hard_limit(timeout: float) -> float:
    """Seconds after which a fit's worker is stopped: the limit plus a margin of max(10 s, 25 %)."""
    return timeout + max(10.0, 0.25 * timeout)


def _budget(timeout: float, deadline: float | None) -> float:
    """LightAutoML's own time limit: the time left until `deadline` (spawn + timeout), less a reserve for
    scoring the validation rows and pickling (10 %, at least 2 s); at least 1 s."""
    if deadline is None:
        return timeout
    return max(1.0, deadline - time.time() - max(2.0, 0.1 * timeout))


def second_fit_rows(n_pilot: int, pilot_s: float, time_left: float, n_max: int) -> int:
    """Rows for the second fit: LightAutoML's time on these few columns grows about linearly with the rows, and
    the pilot's time also holds its fixed costs, so `n_pilot * time_left / pilot_s` over-reaches by less than
    it seems; `FILL` of it leaves room for the rest. 0 when that is not at least twice the pilot."""
    n = min(n_max, int(n_pilot * FILL * max(time_left, 0.0) / max(pilot_s, 1e-3)))
    return n if n >= 2 * n_pilot else 0


@contextlib.contextmanager
def _quiet():
    """LightAutoML prints and warns a lot (imports, per-fold progress): its console output is dropped (its log
    file, when given, keeps the detail), console handlers it binds to the redirected stream are removed
    afterwards, and the global logging level it changes is put back."""
    level = logging.root.level
    with open(os.devnull, "w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            logging.root.setLevel(level)
            lg = logging.getLogger("lightautoml")
            for h in list(lg.handlers):
                if type(h) is logging.StreamHandler and h.stream is f:
                    lg.removeHandler(h)


def _rf_features(n_columns: int):
    """The share of columns each random-forest split looks at, as LightAutoML picks it when not frozen."""
    return 1.0 if n_columns <= 10 else 0.75 if n_columns <= 50 else "sqrt"


def _import_lama():
    """LightAutoML's preset and task classes (imported quietly; seconds the first time)."""
    with _quiet():
        from lightautoml.automl.presets.tabular_presets import TabularAutoML
        from lightautoml.tasks import Task
    return TabularAutoML, Task


@register_head("lama", title="LightAutoML head")
class LamaHead(Head):
    pickled = ("lama.pkl",)      # LightAutoML models exist only as pickles: loaded with allow_pickle only
    files = ("lama.pkl", "fitted.json")
    _parameter_constraints = {**Head._parameter_constraints, "timeout": [integers(1, 86_400)],
                              "cpu_limit": [integers(1), None], "cv": [integers(2)], "seed": [SEED],
                              "log_file": [str, None], "max_rows": [ROWS, None]}

    def __init__(self, task, timeout: int = 60, cpu_limit: int | None = None, cv: int = 3, seed: int = 0,
                 log_file: str | None = None, max_rows: int | None = LAMA_MAX_ROWS, feature_set: str | None = None):
        super().__init__(task, feature_set)
        self.timeout = timeout
        self.cpu_limit = cpu_limit        # None: all cores (one thread on few columns), resolved in the worker
        self.cv = cv
        self.seed = seed
        self.log_file = log_file
        self.max_rows = max_rows
        # fitted: model_ (pickle of (TabularAutoML, classes seen in training)), rows_used_, stages_ (one line per
        # stage), worker_peak_gb_ (the fitting worker's peak resident memory, None where /proc is missing)

    rows_used = property(lambda self: getattr(self, "rows_used_", None))

    @fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, X_val=None, y_val=None, groups=None, **rows):
        """Fit on a class-stratified sample of (X, y) sized from the time limit (see the module's docstring):
        TabularAutoML's time limit only acts between folds, and on hundreds of thousands of rows one fold
        takes many minutes on 2 cores, while a few logit columns need far fewer rows. `groups` (video ids)
        spread the sample over the videos and make LightAutoML's folds whole videos. TabularAutoML
        cross-validates on these rows itself, so the validation rows stay unseen (they are only scored)."""
        start = time.time()              # the limit covers sampling and copying too
        self._check_fit(X, y, X_val, y_val)
        y = np.asarray(y)
        if groups is not None and len(groups) != len(y):
            raise InputError(f"groups: {len(groups)} video ids for {len(y)} training rows")
        codes = None if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1].ravel()
        order = sample_order(y, self.seed, self.task.kind, codes)[:self.max_rows or None]
        arrays = {"X": np.asarray(X[order], np.float32), "y": y[order]}
        if codes is not None:
            arrays["groups"] = codes[order]
        if X_val is not None:
            # the worker also scores the validation rows, saving a second start-up (~8 s of imports)
            arrays["X_val"] = np.asarray(X_val, np.float32)
        self.model_ = None
        self.model_, val_scores, info = _call_worker("fit", self, arrays, start)
        self.rows_used_, self.stages_ = int(info["rows"]), list(info["stages"])
        self.worker_peak_gb_ = info.get("peak_gb")
        self._cache = (_fingerprint(arrays["X_val"]), val_scores) if X_val is not None else None
        return self

    def predict_proba(self, X, **rows):
        self._check_predict(X)
        X = np.asarray(X, np.float32)
        cache = getattr(self, "_cache", None)
        if cache is not None and cache[0] == _fingerprint(X):
            return cache[1].copy()
        return _call_worker("predict", self, {"X": X})

    # -- in the worker process ----------------------------------------------------------------------------
    @staticmethod
    def _frame(X) -> pd.DataFrame:
        return pd.DataFrame(np.asarray(X, np.float32), columns=[f"f{i}" for i in range(X.shape[1])])

    def _threads(self, n_columns: int) -> int:
        cores = self.cpu_limit or os.cpu_count() or 1
        return 1 if n_columns <= FEW_COLUMNS else cores

    def algorithms(self) -> list[str]:
        """LightAutoML's models for this task (one level, no tuning)."""
        return ["linear_l2", "lgb"] if self.task.kind == "multiclass" else ["linear_l2", "rf"]

    def _fit_local(self, X, y, timeout: float, groups=None) -> bytes:
        """One TabularAutoML fit on all of (X, y) within `timeout` seconds (its hard timing mode); the pickled
        (model, classes, constant columns)."""
        p = self.params
        df = self._frame(X)
        if self.task.kind == "multiclass":
            df["target"] = y
            roles = {"target": "target"}
        else:
            # LightAutoML refuses a constant target column (e.g. an AU that never occurs in a small training
            # set): such columns are predicted as their constant and the others are fitted
            const = {j: float(y[0, j]) for j in range(self.task.n_outputs) if np.all(y[:, j] == y[0, j])}
            names = [f"y{j}" for j in range(self.task.n_outputs) if j not in const]
            if not names:
                return pickle.dumps((None, None, const))
            for n in names:
                df[n] = y[:, int(n[1:])]
            roles = {"target": names}
        if groups is not None and _groups_fold(self.task.kind, y, groups, p["cv"]):
            df["video"] = groups              # folds of whole videos (GroupKFold): no frame's neighbour in its fold
            roles["group"] = "video"
        threads = self._threads(X.shape[1])
        TabularAutoML, LTask = _import_lama()
        with _quiet():
            # timing mode 2 (hard) stops its tasks to finish in time; its default (1) lets every model run past
            # the timeout (on 585 k rows, a 180 s budget became more than 12 minutes)
            # advanced_roles off: it guesses whether numeric columns are really categories, which ours (continuous
            # model outputs) never are, and it is not timed: on 448 rows it took 34 s of a 20 s budget
            automl = TabularAutoML(
                task=LTask(_LAMA_TASK[self.task.kind]), timeout=max(1.0, timeout), cpu_limit=threads,
                timing_params={"mode": 2}, general_params={"use_algos": [self.algorithms()]},
                selection_params={"mode": 0},
                lgb_params={"default_params": {**LGB_PARAMS, "num_threads": threads}, "freeze_defaults": True},
                rf_params={"default_params": {**RF_PARAMS, "n_jobs": threads, "max_features": _rf_features(X.shape[1])},
                           "freeze_defaults": True},
                reader_params={"n_jobs": threads, "cv": p["cv"], "random_state": p["seed"], "advanced_roles": False})
            automl.fit_predict(df, roles=roles, verbose=2)
        classes = np.unique(y) if self.task.kind == "multiclass" else None
        # LightAutoML models are pickled by design (as its own docs do); only load heads you trained yourself
        return pickle.dumps((automl, classes, {} if self.task.kind == "multiclass" else const))

    def _fit_stages(self, t: Path, X, y, deadline: float | None, groups=None, X_val=None) -> None:
        """The pilot, then the second fit sized from the pilot's time (module docstring); each finished stage
        is written to `t/stage<i>` whole (model, validation scores, info.json) before the next one starts."""
        log = logging.getLogger("classify.lama")

        def stage(i: int, n: int, lama_timeout: float) -> tuple[float, float]:
            start = time.time()
            log.info(f"stage {i + 1}: {n} of {len(X)} rows, {'+'.join(self.algorithms())}, "
                     f"{self.cv} folds, LightAutoML limit {lama_timeout:.0f} s")
            self.model_ = self._fit_local(X[:n], y[:n], lama_timeout, None if groups is None else groups[:n])
            fit_s = time.time() - start
            scores = self._predict_local(X_val) if X_val is not None else None
            score_s = time.time() - start - fit_s
            info = {"rows": n, "stages": stages + [f"{n} rows: fit {fit_s:.1f} s, scoring {score_s:.1f} s"],
                    "peak_gb": _peak_gb()}
            _write_stage(t / f"stage{i}", self.model_, scores, info)
            stages[:] = info["stages"]
            log.info(f"stage {i + 1} done: fit {fit_s:.1f} s, validation scored in {score_s:.1f} s")
            return fit_s, score_s

        stages: list[str] = []
        timeout = self.params["timeout"]
        _import_lama()             # before the pilot's clock starts: its time sizes the second fit
        if deadline is None:
            stage(0, len(X), timeout)
            return
        n0 = min(len(X), PILOT_ROWS)
        fit_s, score_s = stage(0, n0, _budget(timeout, deadline))
        if n0 == len(X):
            return
        # the reserve after the second fit: scoring with a model of more rows (more trees) and pickling it
        left = deadline - time.time() - max(2.0, 2 * score_s)
        n1 = second_fit_rows(n0, fit_s, left, len(X))
        if not n1:
            log.info(f"no second fit: {left:.0f} s left after the pilot's {fit_s:.1f} s")
            return
        stage(1, n1, left)

    def _predict_local(self, X) -> np.ndarray:
        with _quiet():
            automl, classes, const = pickle.loads(self.model_)
            p = np.asarray(automl.predict(self._frame(X)).data, np.float32) if automl is not None else \
                np.empty((len(X), 0), np.float32)
        if const:
            full = np.empty((len(X), self.task.n_outputs), np.float32)
            fitted = [j for j in range(self.task.n_outputs) if j not in const]
            full[:, fitted] = p
            for j, v in const.items():
                full[:, j] = v
            p = full
        if self.task.kind == "multiclass":
            # columns follow the classes seen in training; absent classes get probability 0
            mapping = getattr(automl.reader, "class_mapping", None)
            out = np.zeros((len(X), self.task.n_outputs), np.float32)
            if mapping:
                for cls, col in mapping.items():
                    out[:, int(cls)] = p[:, col]
            else:
                out[:, classes] = p[:, :len(classes)]
            return out
        if self.task.kind == "regression":
            return np.clip(p, -1, 1)
        return p

    # -- persistence ----------------------------------------------------------------------------------------
    def _save(self, path: Path):
        write_output(path / "lama.pkl", self.model_)
        self._save_fitted(path)

    def _load(self, path: Path):
        self.model_ = (path / "lama.pkl").read_bytes()
        self._load_fitted(path)


def _groups_fold(kind: str, y: np.ndarray, groups: np.ndarray, cv: int) -> bool:
    """Whether folds of whole videos can work: at least `cv` videos, and for classes every class (every label's
    positives) in at least `cv` of them. Otherwise a fold misses a class, and LightAutoML's models fail on it
    ("different number of classes"): then its own stratified row folds are used."""
    if len(np.unique(groups)) < cv:
        return False
    if kind == "regression":
        return True
    if kind == "multiclass":
        return all(len(np.unique(groups[y == c])) >= cv for c in np.unique(y))
    cols = [j for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
    return all(len(np.unique(groups[y[:, j] > 0])) >= cv and len(np.unique(groups[y[:, j] == 0])) >= cv
               for j in cols)


def sample_order(y: np.ndarray, seed: int, kind: str, groups: np.ndarray | None = None) -> np.ndarray:
    """All row indices, in an order whose every prefix is a sample of the rows stratified by class (multiclass:
    within one row of each class's share, and every class among the first rows) and spread over the videos
    (`groups`: within a class, each video in proportion to its rows). Deterministic by seed.

    Each stratum is ordered by a random rank r in it and put at key (r + u) / stratum size (u uniform in [0, 1)),
    so the first q share of the keys takes about q of every stratum: first videos within a class, then classes."""
    n = len(y)
    rng = np.random.default_rng(seed)
    cls = np.asarray(y) if kind == "multiclass" else np.zeros(n, np.int64)

    def keys(strata: np.ndarray) -> np.ndarray:
        _, s = np.unique(strata, return_inverse=True)
        s = s.ravel()
        perm = rng.permutation(n)
        perm = perm[np.argsort(s[perm], kind="stable")]            # strata in turn, random order within each
        size = np.bincount(s)
        rank = np.empty(n)
        rank[perm] = np.arange(n) - (np.cumsum(size) - size)[s[perm]]
        return (rank + rng.random(n)) / size[s]

    within = keys(cls * (int(groups.max()) + 1) + groups) if groups is not None else rng.random(n)
    by_class = np.lexsort((within, cls))                          # each class, its rows in `within` order
    _, c = np.unique(cls, return_inverse=True)
    c = c.ravel()
    size = np.bincount(c)
    rank = np.empty(n)
    rank[by_class] = np.arange(n) - (np.cumsum(size) - size)[c[by_class]]
    key = (rank + rng.random(n)) / size[c]
    key[rank == 0] = -1.0                                         # one row of every class first
    return np.argsort(key, kind="stable")


def sample_rows(y: np.ndarray, max_rows: int | None, seed: int, kind: str,
                groups: np.ndarray | None = None) -> np.ndarray | None:
    """Sorted row indices of the first `max_rows` rows of `sample_order`, or None when all rows are to be used."""
    if not max_rows or len(y) <= max_rows:
        return None
    return np.sort(sample_order(y, seed, kind, groups)[:max_rows])


def _peak_gb() -> float | None:
    """This process's peak resident memory (VmHWM: since its exec, unlike ru_maxrss, which keeps the peak of the
    process it was forked from), in GiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2 ** 20
    except OSError:
        pass
    return None


def _write_stage(folder: Path, model: bytes, scores: np.ndarray | None, info: dict) -> None:
    """A stage's files in a temporary folder, renamed into place whole (the worker may be stopped any time)."""
    tmp = folder.with_name(folder.name + ".part")
    tmp.mkdir()
    (tmp / "model.pkl").write_bytes(model)
    if scores is not None:
        np.save(tmp / "scores.npy", scores)
    (tmp / "info.json").write_text(json.dumps(info))
    os.replace(tmp, folder)


def _last_stage(t: Path) -> Path | None:
    done = sorted((p for p in t.glob("stage*") if p.is_dir() and p.name[5:].isdigit()), key=lambda p: int(p.name[5:]))
    return done[-1] if done else None


class _FileLog(logging.Handler):
    """LightAutoML's log to a file. Not a StreamHandler on purpose: LightAutoML removes every StreamHandler
    (FileHandler included) of its logger when it sets its console level, so its own log file stops after the
    first lines."""

    def __init__(self, path: str):
        super().__init__(logging.DEBUG)
        self.f = open(path, "a", encoding="utf-8")
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record):
        self.f.write(re.sub(r"\x1b\[[0-9;]*m", "", self.format(record)).rstrip() + "\n")   # no colour codes
        self.f.flush()

    def close(self):
        self.f.close()
        super().close()


def _call_worker(op: str, head: LamaHead, arrays: dict[str, np.ndarray], start: float | None = None):
    """Run `op` in a fresh interpreter: "fit" -> (model bytes, validation scores or None, info), from the last
    stage that finished, with the time limit counted from `start` (default: now); "predict" -> scores."""
    with tempfile.TemporaryDirectory(prefix="lama-") as tmp:
        t = Path(tmp)
        for k, a in arrays.items():
            np.save(t / f"{k}.npy", a)
        start = time.time() if start is None else start
        limit = hard_limit(head.params["timeout"]) if op == "fit" else None
        (t / "head.json").write_text(json.dumps({"task": head.task.name, "params": head.params,
                                                 "deadline": start + head.params["timeout"] if limit else None}))
        if getattr(head, "model_", None) is not None:
            (t / "model.pkl").write_bytes(head.model_)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([_PKG_ROOT, os.environ.get("PYTHONPATH", "")])}
        # its own session, so that stopping it also stops the processes LightAutoML started
        proc = subprocess.Popen([sys.executable, "-m", "classify.lama", op, tmp], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        stopped = False
        try:
            _, err = proc.communicate(timeout=None if limit is None else max(0.0, start + limit - time.time()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            stopped, err = True, ""
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise
        last = _last_stage(t) if op == "fit" else None
        # LightAutoML's own clock can run out before any model of a stage is fitted (a short limit on a busy
        # machine): it then fails with "finished with 0 models", which is the same as being stopped there
        ran_out = not stopped and proc.returncode != 0 and "finished with 0 models" in err
        stopped = stopped or ran_out
        if ran_out and last is None:
            raise LamaTimeout(f"LightAutoML fitted no model within its {head.params['timeout']} s limit (its first "
                              f"{PILOT_ROWS}-row fit ran out of time after {time.time() - start:.0f} s): raise "
                              f"--lama-timeout")
        if stopped and last is None:
            raise LamaTimeout(f"LightAutoML did not finish within its {head.params['timeout']} s limit; stopped "
                              f"after {time.time() - start:.0f} s (margin included), before its first "
                              f"{PILOT_ROWS}-row fit ended, no model kept: raise --lama-timeout")
        if not stopped and proc.returncode != 0:
            tail = "\n".join(err.strip().splitlines()[-15:])
            if proc.returncode == 2 and tail.startswith("error: "):
                raise InputError(tail.removeprefix("error: "))
            raise RuntimeError(f"LightAutoML {op} failed in its worker process (exit {proc.returncode}):\n{tail}")
        if op == "predict":
            return np.load(t / "scores.npy")
        if last is None:
            raise RuntimeError(f"LightAutoML's worker ended without a model:\n{err.strip()[-2000:]}")
        info = json.loads((last / "info.json").read_text())
        if stopped:
            info["stages"].append(
                f"the next stage fitted no model within the limit ({head.params['timeout']} s): this stage's model kept"
                if ran_out else f"stopped at {time.time() - start:.0f} s (limit {head.params['timeout']} s "
                                f"+ margin) during the next stage: this stage's model kept")
        scores = np.load(last / "scores.npy") if (last / "scores.npy").exists() else None
        return (last / "model.pkl").read_bytes(), scores, info


def _fingerprint(X: np.ndarray) -> tuple:
    return X.shape, hashlib.blake2b(np.ascontiguousarray(X).data, digest_size=16).hexdigest()


def _worker(op: str, folder: str) -> int:
    t = Path(folder)
    meta = json.loads((t / "head.json").read_text())
    head = LamaHead(meta["task"], **meta["params"])
    X = np.load(t / "X.npy")
    log = _FileLog(head.log_file) if head.log_file else None
    loggers = [logging.getLogger("lightautoml"), logging.getLogger("classify.lama")]
    loggers[1].setLevel(logging.INFO)
    if log:
        for lg in loggers:
            lg.addHandler(log)
    try:
        if op == "fit":
            opt = {k: np.load(t / f"{k}.npy") for k in ("groups", "X_val") if (t / f"{k}.npy").exists()}
            head._fit_stages(t, X, np.load(t / "y.npy"), meta.get("deadline"), **opt)
        else:
            head.model_ = (t / "model.pkl").read_bytes()
            np.save(t / "scores.npy", head._predict_local(X))
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if log:
            for lg in loggers:
                lg.removeHandler(log)
            log.close()
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1], sys.argv[2]))
