"""LightAutoML heads: `TabularAutoML` on small feature sets (logits, + VA), as the reference did.

VA uses `multi:reg`, EXPR `multiclass`, AU `multilabel` (LightGBM and XGBoost support neither multi-target
kind, so LightAutoML skips them there and runs its linear model and random forest). Its console output is
dropped; its own log goes to `log_file`.

LightAutoML (through torch) crashes or hangs in a process that has already loaded TensorFlow, as the MLP heads
do, so fitting and predicting run in a worker process (`python -m classify.lama`), fed through a temporary
folder; this process keeps only the pickled model bytes and never imports LightAutoML itself.

The time limit (`timeout`, seconds) covers the whole fit as the caller sees it, from starting the worker (its
imports take ~8 s) to the model coming back. LightAutoML is given what is left after the imports, less a reserve
for scoring the validation rows, and runs in its hard timing mode, so it normally stops itself and keeps what it
has fitted. It only checks its clock between folds, though (a first fold, or its reader's role guessing, can
run long), so the worker is stopped at `hard_limit(timeout)` = timeout + max(10 s, 25 %), and the fit raises
`LamaTimeout` (one line; `classify.run` leaves the head out of the run and says so).
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
LAMA_MAX_ROWS = 100_000     # training rows LightAutoML sees by default (see LamaHead.fit)


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
        self.cpu_limit = cpu_limit        # None: all cores, resolved in the worker
        self.cv = cv
        self.seed = seed
        self.log_file = log_file
        self.max_rows = max_rows
        # fitted: model_ (pickle of (TabularAutoML, classes seen in training)), rows_used_

    rows_used = property(lambda self: getattr(self, "rows_used_", None))

    @fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, X_val=None, y_val=None, **rows):
        """Fit on (X, y), or on a class-stratified sample of `max_rows` of them: TabularAutoML's time limit
        only starts once the first fold of its first model is done, and on hundreds of thousands of rows that
        fold alone (LightGBM, 8 logit columns) takes many minutes on 2 cores, so the sample is what keeps it
        capped; a few logit columns need far fewer rows than that. TabularAutoML cross-validates on these
        rows itself, so the validation rows stay unseen (they are only scored)."""
        self._check_fit(X, y, X_val, y_val)
        rows = sample_rows(np.asarray(y), self.max_rows, self.seed, self.task.kind)
        self.rows_used_ = len(rows) if rows is not None else len(X)
        X = np.asarray(X, np.float32) if rows is None else np.asarray(X[rows], np.float32)
        arrays = {"X": X, "y": np.asarray(y) if rows is None else np.asarray(y)[rows]}
        if X_val is not None:
            # the worker also scores the validation rows, saving a second start-up (~8 s of imports)
            arrays["X_val"] = np.asarray(X_val, np.float32)
        self.model_ = None
        self.model_, val_scores = _call_worker("fit", self, arrays)
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

    def _fit_local(self, X, y, deadline: float | None = None) -> bytes:
        p = {**self.params, "cpu_limit": self.cpu_limit or os.cpu_count() or 1}
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
        log = _FileLog(p["log_file"]) if p["log_file"] else None
        with _quiet():
            from lightautoml.automl.presets.tabular_presets import TabularAutoML
            from lightautoml.tasks import Task as LTask
            if log:
                logging.getLogger("lightautoml").addHandler(log)
            # timing mode 2 (hard) stops its tasks to finish in time; its default (1) lets every model run past
            # the timeout (on 585 k rows, a 180 s budget became more than 12 minutes)
            # advanced_roles off: it guesses whether numeric columns are really categories, which ours (continuous
            # model outputs) never are, and it is not timed: on 448 rows it took 34 s of a 20 s budget
            automl = TabularAutoML(task=LTask(_LAMA_TASK[self.task.kind]), timeout=_budget(p["timeout"], deadline),
                                   cpu_limit=p["cpu_limit"], timing_params={"mode": 2},
                                   reader_params={"n_jobs": p["cpu_limit"], "cv": p["cv"], "random_state": p["seed"],
                                                  "advanced_roles": False})
            try:
                automl.fit_predict(df, roles=roles, verbose=2)
            finally:
                if log:
                    logging.getLogger("lightautoml").removeHandler(log)
                    log.close()
        classes = np.unique(y) if self.task.kind == "multiclass" else None
        # LightAutoML models are pickled by design (as its own docs do); only load heads you trained yourself
        return pickle.dumps((automl, classes, {} if self.task.kind == "multiclass" else const))

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


def sample_rows(y: np.ndarray, max_rows: int | None, seed: int, kind: str) -> np.ndarray | None:
    """Sorted row indices of a random sample of `max_rows` rows (per class in proportion for a multiclass
    target, every class kept), or None when all rows are to be used."""
    n = len(y)
    if not max_rows or n <= max_rows:
        return None
    rng = np.random.default_rng(seed)
    if kind != "multiclass":
        return np.sort(rng.choice(n, max_rows, replace=False))
    parts = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        parts.append(rng.choice(idx, max(1, round(len(idx) * max_rows / n)), replace=False))
    return np.sort(np.concatenate(parts))


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


def _call_worker(op: str, head: LamaHead, arrays: dict[str, np.ndarray]):
    """Run `op` ("fit" -> model bytes, "predict" -> scores) in a fresh interpreter."""
    with tempfile.TemporaryDirectory(prefix="lama-") as tmp:
        t = Path(tmp)
        for k, a in arrays.items():
            np.save(t / f"{k}.npy", a)
        limit = hard_limit(head.params["timeout"]) if op == "fit" else None
        start = time.time()
        (t / "head.json").write_text(json.dumps({"task": head.task.name, "params": head.params,
                                                 "deadline": start + head.params["timeout"] if limit else None}))
        if getattr(head, "model_", None) is not None:
            (t / "model.pkl").write_bytes(head.model_)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([_PKG_ROOT, os.environ.get("PYTHONPATH", "")])}
        # its own session, so that stopping it also stops the processes LightAutoML started
        proc = subprocess.Popen([sys.executable, "-m", "classify.lama", op, tmp], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            _, err = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise LamaTimeout(f"LightAutoML did not finish within its {head.params['timeout']} s limit; stopped "
                              f"after {time.time() - start:.0f} s (margin included), no model kept: raise "
                              f"--lama-timeout or lower --lama-max-rows (now {head.params.get('max_rows')})") from None
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise
        r = subprocess.CompletedProcess(proc.args, proc.returncode, "", err)
        if r.returncode != 0:
            tail = "\n".join(r.stderr.strip().splitlines()[-15:])
            if r.returncode == 2 and tail.startswith("error: "):
                raise InputError(tail.removeprefix("error: "))
            raise RuntimeError(f"LightAutoML {op} failed in its worker process (exit {r.returncode}):\n{tail}")
        if op == "predict":
            return np.load(t / "scores.npy")
        return (t / "model.pkl").read_bytes(), (np.load(t / "scores.npy") if "X_val" in arrays else None)


def _fingerprint(X: np.ndarray) -> tuple:
    return X.shape, hashlib.blake2b(np.ascontiguousarray(X).data, digest_size=16).hexdigest()


def _worker(op: str, folder: str) -> int:
    t = Path(folder)
    meta = json.loads((t / "head.json").read_text())
    head = LamaHead(meta["task"], **meta["params"])
    X = np.load(t / "X.npy")
    try:
        if op == "fit":
            head.model_ = head._fit_local(X, np.load(t / "y.npy"), meta.get("deadline"))
            (t / "model.pkl").write_bytes(head.model_)
            if (t / "X_val.npy").exists():
                np.save(t / "scores.npy", head._predict_local(np.load(t / "X_val.npy")))
        else:
            head.model_ = (t / "model.pkl").read_bytes()
            np.save(t / "scores.npy", head._predict_local(X))
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1], sys.argv[2]))
