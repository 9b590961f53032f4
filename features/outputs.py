"""The one writer for every file a command writes (tables, plots, JSON, submissions, reports).

Rules, for every output:
- planned and checked before anything is written: a command lists all its outputs (`Outputs.plan`) and is
  refused with one line if any is a symbolic link, a folder, a name the file system cannot hold, or an existing
  file without `force`;
- written to a temporary file in the same folder (created with O_EXCL | O_NOFOLLOW, so nothing planted under
  its name is followed), flushed to disk (fsync), then renamed into place: a reader sees the old file or the
  whole new one, never half of it;
- never over an existing file without `force` (without it the rename is a hard link, which fails if the name
  was taken meanwhile) and never through a link (a link at the name is refused, even with `force`);
- a failed write (disk full, an exception in the code that writes) removes its temporary file and raises
  `OutputError`: "could not write <path>: <reason>".

Names that come from data (video names, file stems) go through `data_name`: characters outside letters, digits
and `-_.` become `_`, so a name never leaves its folder, and a name too long for the file system keeps a
readable prefix plus a short hash.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator, Union

import numpy as np

from .errors import InputError

NAME_MAX = 255                  # bytes in one path component (Linux, macOS; UTF-8 bytes counted)
HASH_CHARS = 10                 # hex digits of sha256 that keep shortened names apart
_TMP_PREFIX_BYTES = 120         # how much of the output's name its temporary file shows
_NO_HARD_LINKS = {errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOSYS, errno.EACCES,
                  getattr(errno, "ENOTSUP", errno.EPERM), getattr(errno, "EOPNOTSUPP", errno.EPERM)}

PathLike = Union[str, os.PathLike]
Content = Union[str, bytes, Callable[[IO], object]]


class OutputError(OSError):
    """A write that failed: names the file and keeps the reason (disk full, permission, ...)."""

    names_its_file = True                   # features.errors.os_error_text prints str(e) as it is

    def __init__(self, path: PathLike, cause: BaseException):
        reason = getattr(cause, "strerror", None) or str(cause) or type(cause).__name__
        super().__init__(getattr(cause, "errno", None), reason, os.fspath(path))
        self.reason = reason

    @property
    def path(self) -> str:
        return os.fsdecode(self.filename)

    def __str__(self) -> str:                # filename may be re-pointed (a failed run's folder is renamed)
        return f"could not write {self.path}: {self.reason}"


# -- names --------------------------------------------------------------------------------------------------
def _fit_bytes(s: str, n: int) -> str:
    """The longest prefix of `s` whose UTF-8 encoding fits in n bytes (never half a character)."""
    return s.encode("utf-8")[:max(n, 0)].decode("utf-8", "ignore")


def sanitize(name: object) -> str:
    """Letters, digits and `-_.` kept, anything else (separators, spaces, control characters) `_`; a name that
    would be empty, hidden or `.`/`..` gets a leading `_`."""
    s = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name))
    return "_" + s if not s or s.startswith(".") else s


def data_name(name: object, suffix: str = "", prefix: str = "", max_bytes: int = NAME_MAX) -> str:
    """A file name for a name that comes from data: `prefix + sanitize(name) + suffix`, or, when that is longer
    than `max_bytes` (UTF-8), a readable prefix of it, `~` and a hash of the whole name. `prefix` and `suffix`
    are the caller's (e.g. the output's stem and `.png`) and must hold no path separator."""
    for part in (prefix, suffix):
        if os.sep in part or (os.altsep and os.altsep in part):
            raise ValueError(f"prefix/suffix {part!r} holds a path separator")
    full = prefix + sanitize(name) + suffix
    if len(full.encode("utf-8")) <= max_bytes:
        return full
    h = "~" + hashlib.sha256((prefix + "\0" + str(name)).encode("utf-8", "surrogatepass")).hexdigest()[:HASH_CHARS]
    tail = h + suffix
    room = max_bytes - len(tail.encode("utf-8"))
    if room < 1:
        raise InputError(f"suffix {suffix!r} leaves no room for a file name under {max_bytes} bytes")
    return _fit_bytes(prefix + sanitize(name), room) + tail


def data_names(names: Iterable[object], suffix: str = "", prefix: str = "") -> list[str]:
    """`data_name` for each name, made distinct: names that map to the same file name (`a b` and `a_b`) get a
    hash of their own name, so no output replaces another."""
    names = list(names)
    out = [data_name(n, suffix, prefix) for n in names]
    seen: dict[str, int] = {}
    for f in out:
        key = f.casefold()              # a case-insensitive file system holds one of `A.png`, `a.png`
        seen[key] = seen.get(key, 0) + 1
    for i, (n, f) in enumerate(zip(names, out)):
        if seen[f.casefold()] > 1:
            stem = f[:len(f) - len(suffix)] if suffix and f.endswith(suffix) else f
            h = "~" + hashlib.sha256(str(n).encode("utf-8", "surrogatepass")).hexdigest()[:HASH_CHARS]
            room = NAME_MAX - len((h + suffix).encode("utf-8"))
            out[i] = _fit_bytes(stem, room) + h + suffix
    return out


def check_folder(folder: PathLike) -> Path:
    """A folder outputs go into: refused if it is a link (its files would land elsewhere) or a file."""
    folder = Path(folder)
    if folder.is_symlink():
        raise InputError("output folder is a symbolic link; outputs are never written through links (remove it "
                         "or choose another place)", folder)
    if folder.exists() and not folder.is_dir():
        raise InputError("expected a folder for the outputs, found a file", folder)
    return folder


def check_output(path: PathLike, force: bool = False) -> Path:
    """One output, before anything is written: one line naming it if it cannot or may not be written."""
    path = Path(path)
    n = len(path.name.encode("utf-8", "surrogateescape"))
    if not path.name or path.name in (".", ".."):
        raise InputError("not a file name", path)
    if n > NAME_MAX:
        raise InputError(f"file name is {n} bytes, more than the {NAME_MAX} a file system allows; choose a "
                         f"shorter name", path)
    if path.is_symlink():
        raise InputError("is a symbolic link; outputs are never written through links (remove it or choose "
                         "another name)", path)
    if path.is_dir():
        raise InputError("is a folder; give a file name", path)
    if path.exists() and not force:
        raise InputError("output exists; choose another name or pass --force", path)
    for parent in path.parents:
        if parent.is_symlink() or parent.is_dir():
            break
        if parent.exists():
            raise InputError("the folder of this output is a file", path)
    return path


# -- writing ------------------------------------------------------------------------------------------------
def _temp_file(path: Path, binary: bool = True) -> tuple[Path, int]:
    """A new, empty file beside `path` that no one else had: O_EXCL and O_NOFOLLOW, so a planted file or link
    under a guessed temporary name is refused rather than written through."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) \
        | getattr(os, "O_BINARY", 0)
    stem = _fit_bytes(path.name, _TMP_PREFIX_BYTES)
    for _ in range(100):
        tmp = path.with_name(f".{stem}.{secrets.token_hex(4)}.part")
        try:
            return tmp, os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", os.fspath(path))


def _stream(fd: int, path: Path) -> IO[bytes]:
    """The temporary file of `path` as a binary stream: the one place the writer's bytes meet the disk (the tests
    put a full disk here)."""
    return os.fdopen(fd, "wb")


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (best effort: not every platform opens folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _place(tmp: Path, path: Path, force: bool) -> None:
    """Rename the finished temporary file to `path`. Without force a hard link: it fails if the name was taken
    since the check (falls back to check + rename where the file system has no hard links)."""
    if path.is_symlink():
        raise InputError("became a symbolic link while it was written; left as it is", path)
    if force:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise InputError("output exists (made while this command ran); choose another name or pass --force",
                         path) from None
    except OSError as e:
        if e.errno not in _NO_HARD_LINKS:
            raise
        if os.path.lexists(path):
            raise InputError("output exists; choose another name or pass --force", path) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def _unlink_quietly(p: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(p)


def _write_content(f: IO[bytes], content: Content) -> None:
    if isinstance(content, str):
        f.write(content.encode("utf-8"))
    elif isinstance(content, (bytes, bytearray, memoryview)):
        f.write(content)
    else:
        content(f)


class Outputs:
    """The files of one command: all planned and checked first, each written to a temporary file, all renamed
    into place at `commit` (on leaving the `with` block); if anything fails before that, every temporary file
    is removed and no output appears.

        with Outputs([table, *pngs], force=force) as outs:     # refused here, before anything is written
            outs.write(table, lambda f: df.to_parquet(f))
            outs.write(pngs[0], lambda f: fig.savefig(f, format="png"))
    """

    def __init__(self, paths: Iterable[PathLike] = (), force: bool = False):
        self.force = force
        self.planned: dict[Path, None] = {}
        self._staged: list[tuple[Path, Path]] = []
        for p in paths:
            self.plan(p)

    def plan(self, path: PathLike) -> Path:
        """Check one more output (before anything is written); returns it as a Path."""
        path = check_output(path, self.force)
        key = Path(os.path.abspath(path))
        if key in self.planned:
            raise InputError("two outputs of this command would have this name", path)
        self.planned[key] = None
        return path

    @contextlib.contextmanager
    def open(self, path: PathLike, text: bool = False, encoding: str = "utf-8",
             newline: str | None = "") -> Iterator[IO]:
        """A file object on the temporary file of `path` (planned now if it was not): binary, or text (UTF-8, no
        newline translation) with text=True; flushed and fsynced when the block ends, renamed at commit."""
        path = Path(path)
        if Path(os.path.abspath(path)) not in self.planned:
            self.plan(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp, fd = _temp_file(path)
        except OSError as e:
            raise OutputError(path, e) from e
        f = None
        try:
            f = _stream(fd, path)
            if text:
                t = io.TextIOWrapper(f, encoding=encoding, newline=newline, write_through=True)
                yield t
                t.flush()
                t.detach()                  # the binary file stays open for fsync and close below
            else:
                yield f
            f.flush()
            os.fsync(f.fileno())
            f.close()
        except BaseException as e:
            if f is None:
                os.close(fd)
            elif not f.closed:
                with contextlib.suppress(OSError):
                    f.close()
            _unlink_quietly(tmp)
            if isinstance(e, OSError) and not isinstance(e, OutputError):
                raise OutputError(path, e) from e
            raise
        self._staged.append((tmp, path))

    def write(self, path: PathLike, content: Content, text: bool = False) -> Path:
        """Write `content` (str: UTF-8 text; bytes; or a function given the binary file object, or the text
        one with text=True) as `path`."""
        with self.open(path, text=text) as f:
            if text and not callable(content):
                f.write(content)
            elif text:
                content(f)
            else:
                _write_content(f, content)
        return Path(path)

    @contextlib.contextmanager
    def path(self, path: PathLike) -> Iterator[Path]:
        """For a library that only writes to a path it opens itself (safetensors, Keras): a path of the same
        name inside a private folder (mode 0700) beside `path`; whatever it writes there is renamed at commit."""
        path = Path(path)
        if Path(os.path.abspath(path)) not in self.planned:
            self.plan(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            d = Path(tempfile.mkdtemp(prefix=f".{_fit_bytes(path.name, _TMP_PREFIX_BYTES)}.", suffix=".part",
                                      dir=path.parent))
        except OSError as e:
            raise OutputError(path, e) from e
        inner = d / path.name
        try:
            yield inner
            if inner.is_symlink() or not inner.is_file():
                raise OutputError(path, OSError(errno.ENOENT, "the writer made no regular file"))
            fd = os.open(inner, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            tmp, fd = _temp_file(path)
            os.close(fd)
            os.replace(inner, tmp)
        except BaseException as e:
            shutil.rmtree(d, ignore_errors=True)
            if isinstance(e, OSError) and not isinstance(e, OutputError):
                raise OutputError(path, e) from e
            raise
        shutil.rmtree(d, ignore_errors=True)
        self._staged.append((tmp, path))

    def commit(self) -> list[Path]:
        """Rename every written file into place (in the order written); returns their paths."""
        done, folders = [], set()
        try:
            while self._staged:
                tmp, path = self._staged[0]
                try:
                    _place(tmp, path, self.force)
                except OSError as e:
                    raise OutputError(path, e) from e
                self._staged.pop(0)
                done.append(path)
                folders.add(path.parent)
        finally:
            self.abort()
        for d in folders:
            _fsync_dir(d)
        return done

    def abort(self) -> None:
        """Remove every temporary file not yet renamed."""
        for tmp, _ in self._staged:
            _unlink_quietly(tmp)
        self._staged.clear()

    def __enter__(self) -> "Outputs":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def write_output(path: PathLike, content: Content, *, force: bool = False, text: bool = False) -> Path:
    """One file through the writer (see `Outputs.write`): checked, written beside, fsynced, renamed."""
    with Outputs([path], force=force) as outs:
        outs.write(path, content, text=text)
    return Path(path)


def json_default(o: object) -> object:
    """numpy values as JSON numbers / lists (a numpy int is not written as a string); anything else as text."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def write_json(path: PathLike, data: object, *, force: bool = False, **dump_kw) -> Path:
    """`data` as JSON text (indent 2 unless given) through the writer."""
    import json
    dump_kw.setdefault("indent", 2)
    return write_output(path, json.dumps(data, **dump_kw) + "\n", force=force)


@contextlib.contextmanager
def output_path(path: PathLike, *, force: bool = False) -> Iterator[Path]:
    """One file written by a library that opens the path itself (see `Outputs.path`)."""
    with Outputs([path], force=force) as outs:
        with outs.path(path) as p:
            yield p
