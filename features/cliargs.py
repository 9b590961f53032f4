"""Bounds on the numbers a user gives on a command line, checked before anything is allocated.

Every numeric option of `python -m extract|classify|postprocess` takes its type from here, so a value out of
range is one argparse line naming the flag (``argument --seed: must be an integer in [0, 4294967295], got
...``) instead of a library traceback or an allocation sized by the number. Upper bounds come from what the
value feeds: a type (a numpy seed is 32 bits, frame numbers are int32 in every file we write), the machine
(cores), or, where a larger value would only allocate more without changing a result, what the data allows
(those are clipped where the data is known, e.g. `postprocess.sweep.clip_ks`).

`int_values` parses the range syntax of ``--k`` (``a:b``, ``a:b:step``, ``a,b,c``) into a lazy ``range`` (no
list is built for ``0:1000000000``) or a short sorted list.
"""
from __future__ import annotations

import argparse
import math
import numbers
import os
from typing import Callable

from .errors import InputError

INT32_MAX = 2**31 - 1       # frame numbers and frame counts are int32 in the cache and the scores file
SEED_MAX = 2**32 - 1        # numpy's legacy seeding (Keras, scikit-learn's random_state) takes 32 bits


def cpu_count() -> int:
    """Cores this process may use (its affinity where the platform tells it)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _range_text(low, high) -> str:
    return f">= {low}" if high is None else f">= {low} and <= {high}"


def _int_problem(v: int, low: int, high: int | None, what: str = "", kind: str = "") -> str | None:
    """'must be [kind ]>= low (what), got v' (or '<= high'): the side `v` is on; None when in range."""
    why = f" ({what})" if what else ""
    if v < low:
        return f"must be {kind}>= {low}{why}, got {v}"
    if high is not None and v > high:
        return f"must be {kind}<= {high}{why}, got {v}"
    return None


def check_int(value, flag: str, low: int, high: int | None = None, what: str = "") -> int:
    """`value` as an int in [low, high], or InputError naming `flag` (for values that do not come through
    argparse: Python API options, spec strings)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{flag} must be an integer {_range_text(low, high)}{f' ({what})' if what else ''}, "
                         f"got {value!r}")
    problem = _int_problem(int(value), low, high, what, "an integer ")
    if problem:
        raise InputError(f"{flag} {problem}")
    return int(value)


def integer(low: int, high: int | None = INT32_MAX, what: str = "") -> Callable[[str], int]:
    """argparse type: an integer in [low, high]."""
    def parse(text: str) -> int:
        try:
            v = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        problem = _int_problem(v, low, high, what)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return v
    parse.__name__ = "int"      # argparse names the type in some messages
    return parse


def number(low: float, high: float | None = None, high_open: bool = False,
           low_open: bool = False) -> Callable[[str], float]:
    """argparse type: a finite number in [low, high] (`low_open`: above low; `high_open`: below high)."""
    lo_text = f"> {low}" if low_open else None

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        bad = (not math.isfinite(v) or (v <= low if low_open else v < low)
               or (high is not None and (v >= high if high_open else v > high)))
        if bad:
            rng = (lo_text or f">= {low}") + ("" if high is None else f" and <{'' if high_open else '='} {high}")
            raise argparse.ArgumentTypeError(f"must be {rng}, got {text.strip()}")
        return v
    parse.__name__ = "float"
    return parse


def cores(low: int = 1) -> Callable[[str], int]:
    """argparse type: a number of cores or threads, at most this machine's (more only compete for them)."""
    return integer(low, cpu_count(), f"this machine has {cpu_count()} cores")


def count_or_all(text: str, flag: str) -> int | None:
    """``all`` -> None; otherwise a non-negative int (at most INT32_MAX), or InputError naming `flag`."""
    text = text.strip()
    if text == "all":
        return None
    try:
        v = int(text)
    except ValueError:
        raise InputError(f"{flag}: {text!r} is not an integer (a number of videos or 'all')") from None
    return check_int(v, flag, 0, INT32_MAX, "a number of videos or 'all'")


def int_values(spec: str, flag: str, high: int = INT32_MAX, hint: str = "") -> range | list[int]:
    """``'a:b'`` (inclusive) or ``'a:b:step'`` -> a ``range`` (built lazily: its length costs nothing);
    ``'a,b,c'`` or ``'a'`` -> the sorted distinct values. Each value in [0, high]; InputError naming `flag`."""
    hint = hint or "use e.g. 0:200, 0:200:5 or 0,5,10,50"

    def num(x: str) -> int:
        x = x.strip()
        try:
            v = int(x)
        except ValueError:
            raise InputError(f"{flag}: {x!r} is not an integer ({hint})") from None
        if v < 0:
            raise InputError(f"{flag}: must be non-negative, got {v} ({hint})")
        if v > high:
            raise InputError(f"{flag}: {v} is above {high}, the largest value it takes ({hint})")
        return v

    spec = spec.strip()
    if not spec:
        raise InputError(f"{flag}: empty")
    if ":" in spec:
        parts = spec.split(":")
        if len(parts) not in (2, 3):
            raise InputError(f"{flag}: expected a:b or a:b:step, got {spec!r}")
        a, b = num(parts[0]), num(parts[1])
        step = num(parts[2]) if len(parts) == 3 else 1
        if step == 0:
            raise InputError(f"{flag}: step must be at least 1")
        if b < a:
            raise InputError(f"{flag}: end {b} is below start {a}")
        return range(a, b + 1, step)
    return sorted({num(x) for x in spec.split(",")})
