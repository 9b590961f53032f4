"""Which files make up a cache on disk: the main file, its committed segments in ``<cache>.parts/``, the shard
files ``<stem>.shard-i-of-n<suffix>`` that stand in for an absent main file, and a cache named on a command
line (a file, its shards, or a comma list of files and glob patterns)."""
from __future__ import annotations

import glob as _glob
import os
import re
from pathlib import Path

from ..errors import InputError

SEG_RE = re.compile(r"^seg-(\d{9})-[0-9a-f]{8}\.h5$")


def parts_dir(path: str | os.PathLike) -> Path:
    """``cache/features.h5`` -> ``cache/features.h5.parts``, the folder of its committed segments."""
    path = Path(path)
    return path.with_name(path.name + ".parts")


def segments(path: Path) -> list[Path]:
    """The committed segment files of `path`, in commit order ([] when there are none)."""
    d = parts_dir(path)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if SEG_RE.match(p.name))


# the most shards `--shard i/n` accepts; a larger n in a file name is not one of ours
MAX_SHARDS = 65536


def main_or_shards(path: Path) -> list[Path]:
    """`path` when it exists (or has committed segments), else its complete set of shard files, else `path`."""
    if path.exists() or segments(path):
        return [path]
    return shard_files(path) or [path]


def shard_path(path: str | os.PathLike, i: int, n: int) -> Path:
    """``cache/features.h5`` -> ``cache/features.shard-2-of-4.h5``: the one place shard files are named (written
    by ``extract run --shard i/n`` and the Ray engine, found by :func:`shard_files`)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.shard-{i}-of-{n}{path.suffix or '.h5'}")


def shard_sets(path: str | os.PathLike) -> dict[int, set[int]]:
    """n -> the shard numbers i found beside `path` (as files or as committed segments of a killed run)."""
    path = Path(path)
    pat = re.compile(rf"^{re.escape(path.stem)}\.shard-(\d+)-of-(\d+){re.escape(path.suffix or '.h5')}$")
    found: dict[int, set[int]] = {}
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return found
    for p in parent.iterdir():
        name = p.name[:-len(".parts")] if p.name.endswith(".parts") and p.is_dir() else p.name
        m = pat.match(name)
        if m:
            found.setdefault(int(m.group(2)), set()).add(int(m.group(1)))
    return found


def shard_files(path: str | os.PathLike) -> list[Path]:
    """The shard files ``<stem>.shard-i-of-n<suffix>`` (:func:`shard_path`), i = 1..n; [] when there are none.
    A shard present only as committed segments (its run was killed) counts. Refuses an incomplete set or two
    sets of different n."""
    path = Path(path)
    found = shard_sets(path)
    if not found:
        return []
    if len(found) > 1:
        splits = ", ".join(f"of {n}" for n in sorted(found))
        raise InputError(f"shard files of {len(found)} different splits ({splits}) lie beside the absent cache; "
                         f"move the stale set away or name the files to read", path)
    n, have = next(iter(found.items()))
    if n > MAX_SHARDS:                       # n comes from a file name: bounded before a list of n is built
        raise InputError(f"shard files name a split into {n} shards, more than {MAX_SHARDS}; not a shard set "
                         f"this tool writes", path)
    missing = [i for i in range(1, n + 1) if i not in have]
    if missing:
        raise InputError(f"the cache is absent and shard(s) {', '.join(map(str, missing))} of {n} are missing "
                         f"(e.g. {shard_path(path, missing[0], n).name}); extract them, or name the shard "
                         f"files to read", path)
    return [shard_path(path, i, n) for i in range(1, n + 1)]


def cache_files(spec: str | os.PathLike) -> list[Path]:
    """The files of a cache named on a command line: ``FILE`` (with its committed segments); when FILE is
    absent, its shard files ``<stem>.shard-i-of-n<suffix>`` (all n); or several files or glob patterns
    separated by commas, read as one cache. Raises InputError when nothing is found."""
    out: list[Path] = []
    for piece in [p.strip() for p in str(spec).split(",")] if isinstance(spec, str) else [str(spec)]:
        if not piece:
            continue
        if any(c in piece for c in "*?["):
            hits = sorted(_glob.glob(piece))
            if not hits:
                raise InputError("no file matches this pattern", piece)
            out.extend(Path(h) for h in hits)
            continue
        p = Path(piece)
        got = main_or_shards(p)
        if got == [p] and not (p.exists() or segments(p)):
            raise InputError(f"feature cache not found, nor its shard files {p.stem}.shard-i-of-n"
                             f"{p.suffix or '.h5'} (run `python -m extract run` first)", p)
        out.extend(got)
    if not out:
        raise InputError("no cache files given")
    return list(dict.fromkeys(out))
