"""Whether a model program file can be loaded without running code from it, decided before torch reads it.

``torch.export.load`` trusts its file: it unpickles pickled weights, constants and sample inputs with
``weights_only=False`` (and falls back to that when the safe loader refuses), loads compiled AOTInductor
libraries, evaluates every symbolic shape expression with sympy (``eval``), resolves node targets to any
``torch.*`` callable, and writes node, argument and attribute names into the Python source of the module it
builds. So a ``.pt2`` is loaded without ``--allow-pickle`` only when, member by member:

- every member is one ``torch.export.save`` writes: JSON, raw tensor bytes, or pickles (sample inputs, tensor
  subclasses) that name only globals torch's ``weights_only`` unpickler accepts; no compiled code, no custom
  (torchbind) or opaque objects, no TorchScript archive inside;
- every string of the program's JSON that torch turns into code is plain: names are identifiers or dotted
  paths, symbolic expressions are sympy arithmetic (no attribute access, no other callables), tree specs name
  no class to import, node targets are aten/prims operators (none that opens a file), torch.export's
  control-flow operators, or symbolic integer arithmetic.

The program's guards (Python source in the JSON) are never compiled: exported.py builds the module with
``check_guards=False``. TorchScript archives are programs that torch compiles and partly runs while loading
them (``__setstate__``), with operators that read and write files: they always need the opt-in.
"""
from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

from features.errors import InputError
from features.serialized_code import file_globals, order_globals, pickle_globals, refusal, zip_pickle_members

HINT = "pass --allow-pickle (spec option allow_pickle=1)"

# -- the members torch.export.save writes (torch/export/pt2_archive; the pre-2.7 layout at the top level)
_TEXT = {"archive_format", "archive_version", "version", "byteorder", ".data/version", ".data/serialization_id",
         ".format_version", ".storage_alignment"}
_PAYLOAD_DIRS = ("data/weights/", "data/constants/")
_OLD_PICKLES = {"serialized_state_dict.pt", "serialized_constants.pt", "serialized_example_inputs.pt",
                "serialized_state_dict.json", "serialized_constants.json"}
_OLD_PROGRAM = "serialized_exported_program.json"
_CODE_OBJECT_PREFIXES = ("custom_obj_", "opaque_obj_")     # torchbind pickles / plain pickle.loads

# -- the program JSON
_NAME = re.compile(r"[A-Za-z0-9_.]*\Z")                      # identifiers, dotted paths, device types, dialects
_FREE_TEXT = {"as_string", "as_strings", "torch_version", "guards_code"}   # repr'd into code, or never compiled
_SPECIAL_FLOATS = {"Infinity", "-Infinity", "NaN"}           # how the schema writes non-finite float arguments
_SKIPPED = {"metadata"}        # node / module metadata: stack traces, module paths; stored, never compiled
_SYM_OPS = {"_operator.add", "_operator.and_", "_operator.eq", "_operator.floordiv", "_operator.ge", "_operator.gt",
            "_operator.le", "_operator.lshift", "_operator.lt", "_operator.mod", "_operator.mul", "_operator.ne",
            "_operator.neg", "_operator.or_", "_operator.pos", "_operator.pow", "_operator.rshift",
            "_operator.sub", "_operator.truediv", "math.trunc", "torch._sym_sqrt", "torch.sym_float",
            "torch.sym_int", "torch.sym_ite", "torch.sym_max", "torch.sym_min", "torch.sym_not"}
_HIGHER_ORDER = {"cond", "while_loop", "map_impl", "scan", "associative_scan", "wrap_with_set_grad_enabled",
                 "wrap_with_autocast", "invoke_subgraph", "auto_functionalized", "auto_functionalized_v2"}
_FILE_OPS = {"from_file", "save", "load"}        # aten operators with a file name argument
_EXPR_TOKEN = re.compile(r"\s*(?:(\d{1,19}(?:\.\d+)?)|([A-Za-z_][A-Za-z0-9_]*)|'([A-Za-z0-9_.+\-]*)'"
                         r"|(\*\*|//|<=|>=|==|!=|[-+*/%()<>,=&|~]))")
_SYMBOL = re.compile(r"[a-z][a-z0-9_]*[0-9]\Z|(?:OpaqueUnaryFn|BitwiseFn)_[a-z_]+\Z")
_SYMPY = {"Symbol", "Dummy", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Mod", "Max", "Min", "Abs",
          "floor", "ceiling", "sqrt", "Piecewise", "ExprCondPair", "Tuple", "And", "Or", "Not", "Xor", "ITE",
          "Equality", "Unequality", "StrictLessThan", "StrictGreaterThan", "LessThan", "GreaterThan", "Eq", "Ne",
          "Lt", "Le", "Gt", "Ge", "true", "false", "True", "False", "oo", "zoo", "nan", "Infinity",
          "NegativeInfinity", "ComplexInfinity", "NaN", "Half", "One", "Zero", "NegativeOne", "BooleanTrue",
          "BooleanFalse",
          # assumptions and options that srepr writes as keywords
          "positive", "negative", "nonnegative", "nonpositive", "integer", "real", "finite", "infinite", "zero",
          "nonzero", "even", "odd", "rational", "commutative", "precision", "extended_real", "extended_positive",
          "extended_negative", "extended_nonnegative", "extended_nonpositive", "extended_nonzero",
          # torch.utils._sympy.functions (what torch's deserializer passes to sympify)
          "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv",
          "IntTrueDiv", "FloatTrueDiv", "LShift", "RShift", "IsNonOverlappingAndDenseIndicator", "TruncToFloat",
          "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat", "FloatPow", "PowByNatural", "Identity"}
_MAX_PROBLEMS = 6


def _expr_ok(s: str) -> bool:
    """A symbolic shape expression made of numbers, symbol names, sympy's arithmetic and comparison classes and
    operators only: with no attribute access and no other name, sympify's eval can do nothing else."""
    s = s.strip()
    if len(s) > 4000:
        return False
    pos = 0
    while pos < len(s):
        m = _EXPR_TOKEN.match(s, pos)
        if not m or m.end() == pos:
            return False
        name = m.group(2)
        if name and name not in _SYMPY and not _SYMBOL.match(name):
            return False
        pos = m.end()
    return True


def _target_ok(t: str) -> bool:
    if t in _SYM_OPS:
        return True
    parts = t.split(".")
    if len(parts) == 5 and parts[:2] == ["torch", "ops"] and parts[2] in ("aten", "prims"):
        return all(p.isidentifier() for p in parts[3:]) and parts[3] not in _FILE_OPS
    return len(parts) == 4 and parts[:3] == ["torch", "ops", "higher_order"] and parts[3] in _HIGHER_ORDER


def _spec_imports(s: str) -> bool:
    """Whether a pytree spec (JSON, contexts JSON inside it) asks to import an enum class (pytree's
    enum_object_hook imports any module a spec names)."""
    def walk(o) -> bool:
        if isinstance(o, dict):
            if "__enum__" in o:
                return True
            for k, v in o.items():
                if k == "context" and isinstance(v, str):
                    try:
                        if walk(json.loads(v)):
                            return True
                    except ValueError:
                        continue
                elif walk(v):
                    return True
        elif isinstance(o, list):
            return any(walk(v) for v in o)
        return False
    try:
        return walk(json.loads(s))
    except ValueError:
        return True


def program_problems(doc, where: str) -> list[str]:
    """What in a program's JSON torch would turn into code beyond tensor operators (see the module docstring)."""
    problems: list[str] = []

    def add(text: str) -> None:
        if len(problems) < _MAX_PROBLEMS and text not in problems:
            problems.append(text)

    def walk(o, key: str) -> None:
        if isinstance(o, dict):
            is_node = "target" in o and "inputs" in o and "outputs" in o
            for k, v in o.items():
                if not isinstance(k, str) or not _NAME.match(k):
                    add(f"name {str(k)[:40]!r} in {where}")
                    continue
                if k in _SKIPPED:
                    continue
                if is_node and k == "target" or k in ("as_operator", "as_operators"):
                    for t in (v if isinstance(v, list) else [v]):
                        if not isinstance(t, str) or not _target_ok(t):
                            add(f"operator {str(t)[:60]}")
                    continue
                walk(v, k)
        elif isinstance(o, list):
            for v in o:
                walk(v, key)
        elif isinstance(o, str):
            if key in _FREE_TEXT:
                return
            if key == "expr_str":
                if not _expr_ok(o):
                    add(f"symbolic expression {o[:50]!r} (sympy evaluates it as Python)")
            elif key in ("in_spec", "out_spec"):
                if _spec_imports(o):
                    add(f"{key} that imports a class")
            elif not _NAME.match(o) and o not in _SPECIAL_FLOATS:
                add(f"{key} {o[:40]!r} in {where} (becomes Python source)")

    walk(doc, "")
    return problems


def _pickle_problems(data: bytes, member: str, safe: set[str]) -> list[str]:
    """The globals outside `safe` that a pickled member would import (nested torch.save archives included)."""
    if data[:2] == b"PK":
        import io
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                names = z.namelist()
                if len(set(names)) != len(names):
                    return [f"{member}: an archive with repeated member names"]
                if _torchscript_members(names):
                    return [f"{member}: a TorchScript program"]
                found = [g for n in zip_pickle_members(z) for g in pickle_globals(z.read(n))]
        except (zipfile.BadZipFile, OSError, EOFError, ValueError):
            return [f"{member}: a damaged archive"]
    elif _is_tar(data):
        # torch.load tries the pre-1.6 tar layout first, and fully unpickles three of its members
        return [f"{member}: a legacy torch tar archive"]
    else:
        found = pickle_globals(data, 5)     # the legacy stream: magic, protocol, sys info, object, storage keys
    return [g for g in order_globals(found) if g not in safe]


def _is_tar(data: bytes) -> bool:
    import io
    import tarfile
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:"):
            return True
    except (tarfile.TarError, EOFError, OSError, ValueError):
        return False


def pt2_problems(path: Path) -> list[str]:
    """What in a torch.export archive would run code from the file when torch.export.load reads it or when the
    program runs; empty when it holds only tensors, plain names, formulas and tensor operators."""
    from .checkpoints import torch_safe_globals
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise InputError(f"cannot load torch.export program: not a .pt2 archive ({type(e).__name__})", path) from None
    problems: list[str] = []
    with z:
        names = z.namelist()
        if len(set(names)) != len(names):
            return ["repeated member names (the loader and this check could read different members)"]
        roots = {n.split("/", 1)[0] for n in names}
        if all("/" in n for n in names) and len(roots) == 1:
            root = roots.pop() + "/"
        elif not any("/" in n for n in names):
            root = ""
        else:
            return ["members outside the archive's one folder"]
        rel = {n[len(root):]: n for n in names}
        # payload files: raw tensor bytes when every config entry naming them says so, else a pickle
        raw: set[str] = set()
        pickled: set[str] = set()
        for r, n in rel.items():
            if r.startswith(_PAYLOAD_DIRS) and r.endswith("_config.json"):
                try:
                    cfg = json.loads(z.read(n))["config"]
                    entries = list(cfg.items())
                except (ValueError, KeyError, TypeError, AttributeError):
                    problems.append(f"unreadable {r}")
                    continue
                problems += program_problems({"config": {k: {} for k, _ in entries}}, r)
                d = r.rsplit("/", 1)[0] + "/"
                for _, meta in entries:
                    meta = meta if isinstance(meta, dict) else {}
                    file = str(meta.get("path_name"))
                    if not _NAME.match(file):
                        problems.append(f"path_name {file[:40]!r} in {r}")
                    (pickled if meta.get("use_pickle") else raw).add(d + file)
        raw -= pickled
        safe = torch_safe_globals()
        found: list[str] = []
        for r, n in rel.items():
            base = r.rsplit("/", 1)[-1]
            if r in _TEXT or r.startswith(("extra/", "extra_files/")) or r.endswith("/"):
                continue
            if (r.startswith("models/") and r.endswith(".json")) or r == _OLD_PROGRAM:
                try:
                    doc = json.loads(z.read(n))
                except ValueError:
                    problems.append(f"unreadable {r}")
                    continue
                problems += program_problems(doc, r)
            elif r.startswith(_PAYLOAD_DIRS) and r.endswith("_config.json"):
                continue
            elif r.startswith(_PAYLOAD_DIRS) and base.startswith(_CODE_OBJECT_PREFIXES):
                problems.append(f"a pickled Python object ({r})")
            elif r in raw:
                continue
            elif r.startswith(_PAYLOAD_DIRS + ("data/sample_inputs/",)) or r in _OLD_PICKLES:
                found += _pickle_problems(z.read(n), r, safe)
            elif r.startswith("data/aotinductor/"):
                problems.append(f"compiled native code ({r})")
            else:
                problems.append(f"a member torch.export.save does not write ({r})")
    return list(dict.fromkeys(order_globals(found) + problems))


def check_pt2(path: Path) -> None:
    """Refuse (one line naming what it holds) a .pt2 that would run code from the file when loaded or run."""
    problems = pt2_problems(path)
    if problems:
        raise refusal(path, problems, HINT + ", or export the model again with torch.export.save",
                      what="holds Python objects or code", effect="that torch would run while loading the program")


def _members(path: Path) -> list[str] | None:
    try:
        with zipfile.ZipFile(path) as z:
            return z.namelist()
    except (zipfile.BadZipFile, OSError):
        return None


def _torchscript_members(names: list[str]) -> bool:
    return any(n.endswith("constants.pkl") or "/code/" in n for n in names)


def is_torchscript(path: Path) -> bool:
    """Whether a file is a TorchScript archive (constants.pkl and a code/ folder beside data.pkl)."""
    names = _members(path)
    return names is not None and _torchscript_members(names)


def torchscript_refusal(path: Path) -> InputError:
    """The refusal for a TorchScript archive (always: torch compiles and partly runs it while loading it)."""
    names = _members(path)
    if names is None:
        return InputError("not a torch.export program (.pt2) or a TorchScript archive", path)
    if not _torchscript_members(names):
        return InputError("a torch checkpoint (weights), not an exported program: load it with the extractor it "
                          "belongs to (e.g. timm:<architecture>:<file>)", path)
    return refusal(path, file_globals(path) or ["TorchScript code"],
                   HINT + ", or export the model with torch.export (.pt2) instead", what="is a TorchScript program",
                   effect="that torch compiles and runs while loading it (its code can read and write files)")
