"""Saved heads: no code runs from a head folder without opt-in, pickles are checked against their recorded
sha256, and a head loads in a fresh process."""
import builtins
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from classify.base import load_head, sha256
from classify.rules import LogitsRule, VAOnly
from features.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


class WritesAFile:
    """Unpickling this creates `path` (what a crafted pickle could do with any code)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return builtins.open, (self.path, "w")


def crafted_head(folder: Path, kind: str, task: str, pkl_name: str, marker: Path, params=None,
                 fitted: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / pkl_name).write_bytes(pickle.dumps(WritesAFile(marker)))
    names = [pkl_name]
    if fitted is not None:
        (folder / "fitted.json").write_text(json.dumps(fitted))
        names.append("fitted.json")
    meta = {"kind": kind, "task": task, "params": params or {}, "feature_set": "x/logits",
            "sha256": {n: sha256(folder / n) for n in names}}
    (folder / "head.json").write_text(json.dumps(meta))
    return folder


def expr_logits_data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 8, n)
    X = rng.normal(0, 1, (n, 8)).astype(np.float32)
    X[np.arange(n), y] += 2.0
    return X, y


def test_crafted_lama_pickle_never_runs_without_the_flag(tmp_path):
    marker = tmp_path / "pwned"
    head = crafted_head(tmp_path / "lama", "lama", "expr", "lama.pkl", marker)
    with pytest.raises(InputError, match=r"lama.pkl: .*pickle.*allow_pickle=True"):
        load_head(head)
    with pytest.raises(InputError, match="allow_pickle"):
        load_head(head, task="expr")
    assert not marker.exists()


def test_tampered_lama_pickle_refused_even_with_the_flag(tmp_path):
    marker = tmp_path / "pwned"
    head = crafted_head(tmp_path / "lama", "lama", "expr", "lama.pkl", marker)
    (head / "lama.pkl").write_bytes((head / "lama.pkl").read_bytes() + b".")     # changed after saving
    with pytest.raises(InputError, match=r"lama.pkl: sha256 differs"):
        load_head(head, allow_pickle=True)
    # no sha256 recorded at all: refused as well
    meta = json.loads((head / "head.json").read_text())
    meta.pop("sha256")
    (head / "head.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="no sha256 recorded"):
        load_head(head, allow_pickle=True)
    assert not marker.exists()


def test_lama_pickle_with_matching_sha_loads_with_the_flag_only(tmp_path):
    """The model bytes are kept as they are (unpickled only in the worker when predicting)."""
    marker = tmp_path / "pwned"
    head = crafted_head(tmp_path / "lama", "lama", "expr", "lama.pkl", marker,
                        params={"timeout": 5, "cpu_limit": 1, "cv": 2, "seed": 0, "log_file": None,
                                "max_rows": 100}, fitted={"n_features_in_": 8, "rows_used_": 100})
    h = load_head(head, allow_pickle=True)
    assert h.kind == "lama" and h.model_ == (head / "lama.pkl").read_bytes()
    assert not marker.exists()


def test_old_pickled_logits_head_is_not_unpickled(tmp_path):
    """Heads of the logits rule saved the Other gate as other.pkl; that file is never opened now."""
    marker = tmp_path / "pwned"
    head = crafted_head(tmp_path / "logits", "logits", "expr", "other.pkl", marker)
    for allow in (False, True):
        with pytest.raises(InputError, match="other.pkl"):
            load_head(head, allow_pickle=allow)
    assert not marker.exists()


def test_logits_rule_saves_its_mlp_as_json_and_npz(tmp_path):
    X, y = expr_logits_data()
    y[::5] = 7                                            # enough Other rows for the gate
    h = LogitsRule("expr", hidden=8, max_iter=30).fit(X, y)
    assert h.other_ is not None
    h.save(tmp_path / "h")
    files = sorted(p.name for p in (tmp_path / "h").iterdir())
    assert files == ["fitted.json", "head.json", "other.json", "other.npz"]
    meta = json.loads((tmp_path / "h" / "head.json").read_text())
    assert meta["sha256"]["other.npz"] == sha256(tmp_path / "h" / "other.npz")
    assert meta["sha256"]["fitted.json"] == sha256(tmp_path / "h" / "fitted.json")
    back = load_head(tmp_path / "h", task="expr")          # no flag needed: nothing is unpickled
    np.testing.assert_array_equal(back.predict_proba(X), h.predict_proba(X))
    np.testing.assert_array_equal(back.other_.predict(X), h.other_.predict(X))
    assert back.other_.get_params() == h.other_.get_params()


def test_changed_npz_is_refused(tmp_path):
    X, y = expr_logits_data()
    y[::5] = 7
    LogitsRule("expr", hidden=4, max_iter=5).fit(X, y).save(tmp_path / "h")
    with open(tmp_path / "h" / "other.npz", "ab") as f:
        f.write(b"\0")
    with pytest.raises(InputError, match="other.npz: sha256 differs"):
        load_head(tmp_path / "h")


def test_bad_head_json(tmp_path):
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "head.json").write_text("{not json")
    with pytest.raises(InputError, match="head.json: head.json is not a saved head"):
        load_head(tmp_path / "h")
    (tmp_path / "h" / "head.json").write_text(json.dumps({"kind": "svm", "task": "expr", "params": {}}))
    with pytest.raises(InputError, match="unknown head kind 'svm'"):
        load_head(tmp_path / "h")


@pytest.mark.parametrize("kind", ["logits", "va_only"])
def test_head_loads_in_a_fresh_process(tmp_path, kind):
    """`load_head` imports the module of the saved kind itself (it said "unknown head kind" unless the
    caller had imported it)."""
    if kind == "logits":
        X, y = expr_logits_data()
        y[::5] = 7
        h = LogitsRule("expr", hidden=4, max_iter=20).fit(X, y)
    else:
        X = np.random.default_rng(0).uniform(-1.5, 1.5, (50, 2)).astype(np.float32)
        h = VAOnly("va").fit(X)
    h.save(tmp_path / "h")
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "p.npy", h.predict_proba(X))
    code = ("import sys, numpy as np; from classify.base import load_head; "
            "h = load_head(sys.argv[1]); X = np.load(sys.argv[2]); "
            "assert np.array_equal(h.predict_proba(X), np.load(sys.argv[3])); print(h.kind)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "h"), str(tmp_path / "X.npy"),
                        str(tmp_path / "p.npy")], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == kind
