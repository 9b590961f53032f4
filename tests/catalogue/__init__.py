"""The bad-input catalogue: every bad input or fault a user can hit, as one parametrised table.

Each command group lives in its own module here (``extract.py``, ``classify.py``, ``postprocess.py``,
``store.py``, ``labels.py``) and exports ``CASES``: a list of :class:`Case`. ``tests/test_catalogue.py`` runs
them all as one table and prints the totals.

A case says what a user did (``run``), what a good tool answers (``expect``: text the one error line must
contain, or ``None`` when the input is valid and must be accepted) and, for inputs whose danger is a silently
wrong result or lost data, a ``check`` of the files afterwards. ``defect`` records what the tool did before it
was fixed ("traceback", "silent", "data-loss", "misleading", or "" when it already answered well), so the
totals say what the catalogue guards against.
"""
from __future__ import annotations

import contextlib
import io
import logging
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from features.errors import InputError

DEFECTS = ("", "traceback", "silent", "data-loss", "misleading")


@dataclass
class Result:
    code: int
    out: str
    err: str
    traceback: str = ""       # set when an exception escaped the command (never acceptable)
    log: str = ""             # the command's log lines (stderr in a terminal; pytest's logging takes them here)

    @property
    def error_lines(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if ln.strip()]


@dataclass
class Case:
    command: str                                   # "extract run", "classify", "postprocess validate", ...
    name: str
    run: Callable[[Path, Path], Result]            # (fresh tmp dir, session-wide shared dir) -> Result
    expect: str | None                             # text the error line must contain; None: must succeed
    check: Callable[[Path, Path, Result], None] | None = None   # asserts on the outcome (silent / data loss)
    defect: str = ""

    def __post_init__(self) -> None:
        assert self.defect in DEFECTS, self.defect

    @property
    def id(self) -> str:
        return f"{self.command}: {self.name}"


def cli(main: Callable[[list[str]], int], argv: list[str]) -> Result:
    """Run a command's ``main(argv)`` in this process, capturing what it prints and logs. argparse's own errors
    (``SystemExit``) count as answers; any other exception escaping ``main`` is a traceback."""
    out, err, log = io.StringIO(), io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(log)
    logging.getLogger().addHandler(handler)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in argv])
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
            except BaseException:                      # noqa: BLE001 - recorded and failed by the table
                return Result(1, out.getvalue(), err.getvalue(), traceback.format_exc(), log.getvalue())
    finally:
        logging.getLogger().removeHandler(handler)
    return Result(int(code or 0), out.getvalue(), err.getvalue(), log=log.getvalue())


def api(fn: Callable[[], object]) -> Result:
    """Call a Python API the way a notebook would: an InputError is the one-line answer (exit code 2 here),
    success is code 0, anything else is a traceback."""
    try:
        fn()
    except InputError as e:
        return Result(2, "", f"error: {e}\n")
    except BaseException:                          # noqa: BLE001
        return Result(1, "", "", traceback.format_exc())
    return Result(0, "", "")


def assert_answer(case: Case, res: Result, tmp: Path, shared: Path) -> None:
    """What the table requires of every case."""
    assert not res.traceback, f"traceback escaped:\n{res.traceback}"
    assert "Traceback (most recent call last)" not in res.err, res.err
    if case.expect is None:
        assert res.code == 0, f"valid input refused (exit {res.code}): {res.err.strip()}"
    else:
        assert res.code != 0, f"bad input accepted (exit 0); output: {res.out[-500:]}"
        lines = res.error_lines
        # one line "error: ...", or argparse's usage line followed by its one "prog: error: ..." line
        if lines and lines[0].startswith("usage:"):
            lines = [ln for ln in lines if ": error:" in ln]
        assert len(lines) == 1, f"expected one error line, got {len(lines)}:\n{res.err}"
        assert "error:" in lines[0], lines[0]
        assert case.expect in lines[0], f"{case.expect!r} not in {lines[0]!r}"
    if case.check is not None:
        case.check(tmp, shared, res)
