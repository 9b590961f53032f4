"""The bad-input catalogue as one table (cases in tests/catalogue/<group>.py); totals printed at the end."""
from __future__ import annotations

import importlib
import pkgutil
from collections import Counter

import pytest

import catalogue
from catalogue import assert_answer


def _all_cases():
    cases = []
    for m in sorted(pkgutil.iter_modules(catalogue.__path__), key=lambda m: m.name):
        if m.name.startswith("_"):
            continue
        mod = importlib.import_module(f"catalogue.{m.name}")
        cases.extend(getattr(mod, "CASES", []))
    return cases


CASES = _all_cases()


def test_catalogue_ids_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), [i for i, n in Counter(ids).items() if n > 1]


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("catalogue_shared")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case, tmp_path, shared_dir):
    res = case.run(tmp_path, shared_dir)
    assert_answer(case, res, tmp_path, shared_dir)


def test_catalogue_totals(capsys):
    """The totals the catalogue stands for (printed with -s or in the -ra summary of a failure)."""
    by_cmd = Counter(c.command.split()[0] for c in CASES)
    defects = Counter(c.defect or "answered well before" for c in CASES)
    errors = sum(c.expect is not None for c in CASES)
    with capsys.disabled():
        print(f"\ncatalogue: {len(CASES)} cases ({errors} must be one-line errors, {len(CASES) - errors} valid "
              f"inputs that must work); by command {dict(by_cmd)}; defects guarded {dict(defects)}")
    assert len(CASES) >= 1
