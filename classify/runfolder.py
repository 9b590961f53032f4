"""A run folder (`runs/<task>/<name>/`, written by `classify train`) as `classify predict` loads it (`load_run`),
and the saved heads in it. Both are untrusted input (copied, downloaded, edited): everything in them is checked,
once, before any of it is used.

Run folder: the folder itself, its files and metrics.json are features.runs (the format both stages read);
postprocess.json is postprocess.config. Here: the head names metrics.json and a blend's weights.json give are
plain folder names under `heads/`, folders that stay inside the run.

Saved head (`head.json` beside the head's files):
- head.json: a known kind and task, params that the kind's constructor takes, with the types it declares (a
  member head of a composite, `{"kind", "params"}`, checked the same way);
- files: exactly those the kind saves (`Head.files`, `Head.optional_files`, member folders `<prefix><i>/` of a
  composite), each with the sha256 recorded at save time (a composite records its members' head.json too), and
  matching it; a file without a recorded hash is refused;
- loading: what the head's files still hold that a library refuses (a Keras file safe mode rejects, a damaged
  archive) is one line naming the folder, not a library's traceback.
"""
from __future__ import annotations

import inspect
import json
import math
import os
import re
import types
import typing
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from features.errors import InputError
from features.paths import inside, plain_name
from features.runs import METRICS, check_finished, read_metrics, run_file, task_name
from features.tasks import Task, get_task
from postprocess.config import Post, per_output_thresholds, read_post
from postprocess.smoothing import check_k

from .base import Head, load_head

__all__ = ["HEAD_JSON", "LoadedRun", "Post", "check_head_files", "check_params", "head_entries", "head_folder",
           "load_files", "load_run", "read_head_json", "read_metrics", "run_extractors", "run_file", "run_post"]

HEAD_JSON = "head.json"
_HEX64 = re.compile(r"[0-9a-f]{64}")


# -- run folders ------------------------------------------------------------------------------------------------
def head_folder(run: str | os.PathLike, name: object, where: str | os.PathLike, what: str = "head") -> Path:
    """`run/heads/<name>` for a head name read from `where` (metrics.json, a blend's weights.json): a plain
    name, and a folder that stays inside the run."""
    plain_name(name, what, where)
    return inside(run, Path(run) / "heads" / name)


@dataclass
class LoadedRun:
    """A finished run as `classify predict` applies it."""
    dir: Path
    task: Task
    final: str
    heads: dict[str, Head]                   # the final head and, for a blend, its members
    members: dict[str, str]                  # member name -> feature set (the heads that read features)
    post: Post
    provenance: dict = field(default_factory=dict)

    @property
    def feature_sets(self) -> list[str]:
        return list(dict.fromkeys(self.members.values()))


def run_post(run: Path, task: Task, metrics: dict) -> Post:
    """k (or per-output ks) and thresholds: postprocess.json when `postprocess sweep` wrote one (its per-output
    choice when it was made with --per-output, as `submit` reads it), else what `classify` chose."""
    post = read_post(run, task)
    if post is not None:
        return post
    s = metrics.get("summary") or {}
    if "k" not in s:
        raise InputError("metrics.json has no summary k; the run did not finish", run / METRICS)
    k = check_k(s["k"], "k")
    return Post(int(k), per_output_thresholds(s.get("thresholds"), task), "mean", METRICS)


def load_run(run: str | os.PathLike, allow_pickle: bool = False) -> LoadedRun:
    """The run's final head (and a blend's members), its post-processing and the recorded provenance, each
    checked before it is used."""
    run = check_finished(run)
    metrics = read_metrics(run)
    task, final = get_task(metrics["task"]), metrics["final"]
    heads = _load_heads(run, task, final, allow_pickle)
    heads_dir = run / "heads"
    members = {}
    for m in (list(heads[final].members_) if heads[final].kind == "blend" else [final]):
        fs = heads[m].feature_set or (metrics.get("members") or {}).get(m, {}).get("feature_set")
        if not fs:
            raise InputError(f"head {m!r} records no feature set", heads_dir / m / HEAD_JSON)
        members[m] = fs
    return LoadedRun(run, task, final, heads, members, run_post(run, task, metrics),
                     metrics.get("provenance") or {})


def _load_heads(run: Path, task: Task, final: str, allow_pickle: bool) -> dict[str, Head]:
    """The final head and, for a blend, its members (heads that read features, each saved in the run)."""
    heads_dir = run / "heads"
    if not head_folder(run, final, run / METRICS, "the final head").is_dir():
        raise InputError(f"the final head {final!r} was not saved (no heads/{final}/); train the run again", run)
    heads = {final: load_head(heads_dir / final, task, allow_pickle=allow_pickle)}
    names = list(heads[final].members_) if heads[final].kind == "blend" else [final]
    for m in names:
        if m not in heads:
            if not head_folder(run, m, heads_dir / final / "weights.json", "blend member").is_dir():
                raise InputError(f"blend member {m!r} was not saved (no heads/{m}/)", run)
            heads[m] = load_head(heads_dir / m, task, allow_pickle=allow_pickle)
            if heads[m].kind == "blend":
                raise InputError(f"blend member {m!r} is itself a blend; members are heads that read features",
                                 heads_dir / final / "weights.json")
    return heads


def run_extractors(run: str | os.PathLike) -> list[str]:
    """The extractor names a run used (from its recorded provenance), for `make predict` to extract with."""
    prov = read_metrics(run).get("provenance") or {}
    if not prov:
        raise InputError("the run records no extractors (made before provenance was recorded); pass "
                         "EXTRACTORS=<specs> to make predict", Path(run) / METRICS)
    return list(prov)


# -- saved heads: head.json -------------------------------------------------------------------------------------
def read_head_json(folder: Path) -> dict:
    """head.json of a saved head: kind, task, params, feature_set and the recorded sha256, each of its type."""
    meta_p = folder / HEAD_JSON
    if not meta_p.exists():
        raise InputError("not a saved head (no head.json)", folder)
    inside(folder, meta_p, file=True)
    try:
        meta = json.loads(meta_p.read_text(encoding="utf-8"))
        kind, saved_task = meta["kind"], meta["task"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise InputError(f"head.json is not a saved head's metadata ({type(e).__name__}: {e})", meta_p) from None
    if not isinstance(kind, str):
        raise InputError(f"kind must be a head kind's name, got {kind!r}", meta_p)
    params = meta.get("params") or {}
    if not isinstance(params, dict):
        raise InputError(f"params must be a JSON object, got {type(params).__name__}", meta_p)
    fs = meta.get("feature_set")
    if fs is not None and not isinstance(fs, str):
        raise InputError(f"feature_set must be a string, got {fs!r}", meta_p)
    recorded = meta.get("sha256") or {}
    if not isinstance(recorded, dict) or not all(isinstance(v, str) and _HEX64.fullmatch(v)
                                                 for v in recorded.values()):
        raise InputError("sha256 must map file names to 64 hex digits", meta_p)
    return {"kind": kind, "task": task_name(saved_task, meta_p), "params": params, "feature_set": fs,
            "sha256": recorded}


def check_params(cls: type, params: dict, where: Path) -> None:
    """`params` as the constructor of `cls` takes them: known names, values of the declared types (a nested
    head given as {"kind", "params"} checked against its own kind), before anything is constructed."""
    sig = inspect.signature(cls.__init__)
    # task and feature_set are head.json fields of their own, never params
    names = [n for n, p in sig.parameters.items() if n not in ("self", "task", "feature_set")
             and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = [k for k in params if k not in names]
    if unknown:
        raise InputError(f"{cls.kind} heads take no parameter {unknown[0]!r} (they take {', '.join(names)})",
                         where)
    try:
        hints = typing.get_type_hints(cls.__init__)
    except (NameError, TypeError):          # an annotation that does not resolve: checked by name only
        hints = {}
    for k, v in params.items():
        t = hints.get(k)
        if t is not None and not _fits(v, t, where):
            raise InputError(f"{cls.kind} parameter {k!r} must be {_describe(t)}, got {v!r}", where)


def _fits(v, t, where: Path) -> bool:
    """Whether the JSON value `v` is of type `t` (the constructor's annotation)."""
    from .base import Head
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin in (typing.Union, types.UnionType):
        if isinstance(v, dict) and any(isinstance(a, type) and issubclass(a, Head) for a in args):
            return _member_spec(v, where)
        return any(_fits(v, a, where) for a in args)
    if t is typing.Any or t is object:
        return True
    if t is type(None):
        return v is None
    if t is bool:
        return isinstance(v, bool)
    if t is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if t is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if t is str:
        return isinstance(v, str)
    if t is dict or origin is dict:
        return isinstance(v, dict)
    if origin in (list, tuple, Sequence) or t in (list, tuple, Sequence):
        return isinstance(v, list) and (not args or all(_fits(x, args[0], where) for x in v))
    if isinstance(t, type) and issubclass(t, Head):
        return isinstance(v, dict) and _member_spec(v, where)
    return False                            # an annotation this check does not know: refuse, never guess


def _member_spec(spec: dict, where: Path) -> bool:
    """A composite's member head as head.json records it: {"kind": <known kind>, "params": {...}}."""
    from .factory import head_class
    if set(spec) - {"kind", "params"} or not isinstance(spec.get("kind"), str) or \
            not isinstance(spec.get("params", {}), dict):
        raise InputError(f"a member head must be given as {{\"kind\", \"params\"}}, got {spec!r}", where)
    check_params(head_class(spec["kind"], where), spec.get("params", {}), where)
    return True


def _describe(t) -> str:
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if t is type(None):
        return "null"
    if origin in (list, tuple, Sequence):
        return f"a list of {_describe(args[0])}" if args else "a list"
    return getattr(t, "__name__", str(t))


# -- saved heads: files -----------------------------------------------------------------------------------------
def head_entries(folder: Path, cls: type) -> list[str]:
    """The names a head of kind `cls` writes in its folder (files, members' head.json), as save() hashes them."""
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != HEAD_JSON)
    if cls.member_prefix:
        names += sorted((f"{p.name}/{HEAD_JSON}" for p in folder.iterdir()
                         if p.is_dir() and (p / HEAD_JSON).is_file()), key=_natural)
    return names


def check_head_files(folder: Path, cls: type, recorded: dict[str, str]) -> None:
    """The folder holds what a head of kind `cls` saves, each file with its recorded sha256, matching."""
    from .base import sha256
    known = set(cls.files) | set(cls.optional_files)
    member = re.compile(rf"{re.escape(cls.member_prefix)}\d+") if cls.member_prefix else None
    for p in sorted(folder.iterdir()):
        inside(folder, p)                       # a symlink out of the head folder: refused
        if p.is_dir():
            if member is None or not member.fullmatch(p.name):
                raise InputError(f"a {cls.kind} head saves no folder here (a kind that does not match its files?)",
                                 p)
        elif not p.is_file():
            raise InputError("not a regular file; a saved head holds plain files", p)
        elif p.name != HEAD_JSON and p.name not in known:
            raise InputError(f"a {cls.kind} head saves no file of this name (saved: "
                             f"{', '.join(sorted(cls.files + cls.optional_files))}); the kind in head.json does "
                             f"not match the files", p)
    for name in recorded:
        ok = (name in known) or (member is not None and name.endswith(f"/{HEAD_JSON}")
                                 and member.fullmatch(name.split("/")[0]) and name.count("/") == 1)
        if not ok:
            raise InputError(f"sha256 recorded for {name!r}, which a {cls.kind} head does not save",
                             folder / HEAD_JSON)
    for name in head_entries(folder, cls):
        f = folder / name
        if name not in recorded:
            raise InputError("no sha256 recorded for this file in head.json; refusing to load it (save the head "
                             "again)", f)
        if sha256(f) != recorded[name]:
            raise InputError("sha256 differs from the one recorded when the head was saved (changed since); "
                             "refusing to load it", f)
    for name in list(cls.files) + [n for n in recorded if n not in cls.files]:
        if not (folder / name).is_file():
            what = "is missing" if name in cls.files else "is recorded in head.json but missing"
            raise InputError(f"{what}; a {cls.kind} head saves it", folder / name)


def load_files(head, folder: Path) -> None:
    """`head._load(folder)`, with what a library refuses in files that passed the checks above (a Keras file
    that safe mode rejects, a damaged archive, arrays of other shapes) as one line naming the folder."""
    try:
        head._load(folder)
    except InputError:
        raise
    except (OSError, EOFError, zipfile.BadZipFile, ValueError, KeyError, TypeError, IndexError, AttributeError,
            RuntimeError) as e:
        msg = " ".join(str(e).split())
        if "safe_mode" in msg:              # Keras' own advice (turn safe mode off) is not one to follow here
            raise InputError(f"Keras' safe mode refuses this {head.kind} head's model: it would run code from the "
                             f"file ({msg.split('. ')[0]}); not loaded", folder) from None
        if len(msg) > 300:
            msg = msg[:300] + "..."
        raise InputError(f"cannot load this {head.kind} head ({type(e).__name__}: {msg})", folder) from None


def _natural(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]
