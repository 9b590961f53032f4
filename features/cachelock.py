"""One writer per cache: an advisory lock file ``<cache>.lock`` held with a POSIX record lock (``lockf``).

The kernel drops the lock when its process dies however it dies (SIGKILL included), so a lock file left by a
dead writer is stale by construction and the next writer simply takes it over. A POSIX lock belongs to the
process, not to the descriptor: forked children (decode workers) do not hold it, so they cannot keep a dead
writer's lock alive. Because a process does not conflict with itself, locks taken inside this process are
also kept in a set, so two writers in one process are refused too.

The file holds ``pid``, ``host`` and ``since`` of the holder, for the message a refused writer prints. The
holder deletes it when it releases the lock; a writer that opened the file just before that deletion notices
(the path then names another file or none) and tries again on the live file.
"""
from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import os
import socket
import threading
from pathlib import Path

from .errors import InputError

_HELD: set[str] = set()              # lock files held by this process
_HELD_GUARD = threading.Lock()


def lock_path(target: Path) -> Path:
    return target.with_name(target.name + ".lock")


def _describe_holder(text: str) -> str:
    fields = dict(kv.split("=", 1) for kv in text.split() if "=" in kv)
    pid, host = fields.get("pid"), fields.get("host")
    if not pid:
        return "a writer that is just starting"
    where = "this host" if host == socket.gethostname() else f"host {host}"
    alive = ""
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            alive = ", no longer running: a process it forked still holds the lock"
        except PermissionError:
            pass
    since = f", since {fields['since']}" if "since" in fields else ""
    return f"pid {pid} on {where}{since}{alive}"


class CacheLock:
    """The writer lock of one cache file; :meth:`acquire` fails at once with one line naming the holder."""

    def __init__(self, target: str | os.PathLike):
        self.target = Path(target)
        self.path = lock_path(self.target)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "CacheLock":
        key = os.path.abspath(self.path)
        with _HELD_GUARD:
            if key in _HELD:
                raise InputError("this process already writes to this cache; close that FeatureStore first",
                                 self.target)
            while True:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as e:
                    holder = os.pread(fd, 4096, 0).decode(errors="replace")
                    os.close(fd)
                    if e.errno in (errno.EACCES, errno.EAGAIN):
                        raise InputError(f"another writer holds this cache ({_describe_holder(holder)}; lock file "
                                         f"{self.path}); wait for it to finish, or give each run its own file "
                                         f"(extract run --shard i/n, then extract merge)", self.target) from None
                    raise InputError(f"cannot lock {self.path} ({e.strerror or e}); the cache needs a file "
                                     f"system with POSIX locks", self.target) from None
                try:
                    same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    break
                os.close(fd)        # the previous holder deleted this file while we opened it: retry
            now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            text = f"pid={os.getpid()} host={socket.gethostname()} since={now}\n".encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, text, 0)
            self._fd = fd
            _HELD.add(key)
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        with _HELD_GUARD:
            try:
                self.path.unlink(missing_ok=True)     # while still held: no one can take a file being deleted
            finally:
                os.close(self._fd)                    # drops the lock
                self._fd = None
                _HELD.discard(os.path.abspath(self.path))

    def __enter__(self) -> "CacheLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
