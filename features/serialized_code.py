"""What Python a model file would import or run if it were deserialised, found WITHOUT deserialising it, and the
one refusal every loader gives for such a file.

A pickle can only reach code through the globals it names (GLOBAL, STACK_GLOBAL, INST opcodes, or the copyreg
extension registry), so listing those names is enough to say whether a file is plain data: the opcodes are
walked with a model of the unpickler's stack (``pickletools`` knows every opcode's stack effect), so a name
assembled from memoised strings is still found, and a name that cannot be worked out is reported as such (and so
is never mistaken for a safe one). Keras files carry Python as marshalled ``Lambda`` bytecode in their JSON config.

The loaders (extract.checkpoints, extract.program_check, classify heads) decide which names are harmless for
their format; this module only finds them and words the refusal.
"""
from __future__ import annotations

import _compat_pickle
import io
import json
import os
import pickletools
import re
import zipfile
from pathlib import Path

from .errors import InputError

UNRESOLVED = "<a global whose name is computed while unpickling>"
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING",
               "STRING"}
_MARK = object()
_OTHER = object()
#: what torch rebuilds tensors and containers with: listed after the names that say what else a file holds
_TENSOR_KIND = re.compile(r"(torch\._utils\._rebuild_\w+|torch\.\w*Storage|torch\.serialization\._get_layout"
                          r"|torch\.(u?int|float|bfloat|half|double|long|short|bool|complex|qu?int)\w*"
                          r"|collections\.(OrderedDict|Counter)|builtins\.(set|frozenset|bytearray|complex)"
                          r"|_codecs\.encode)\Z")


class _Malformed(Exception):
    pass


def _py3_name(module: str, name: str, proto: int) -> str:
    """What the unpickler imports: protocols 0-2 may use Python 2 names, which it maps (fix_imports)."""
    if proto < 3:
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


def _one_pickle(f: io.BytesIO, found: list[str]) -> bool:
    """Walk one pickle from f's position, appending the globals it names; False when f holds no pickle there."""
    stack: list = []
    memo: dict = {}
    n_ops = 0
    proto = 0

    def pop(k: int = 1):
        if len(stack) < k:
            raise _Malformed
        out = stack[len(stack) - k:]
        del stack[len(stack) - k:]
        return out

    def pop_mark():
        while stack:
            if stack.pop() is _MARK:
                return
        raise _Malformed

    try:
        for op, arg, _ in pickletools.genops(f):
            n_ops += 1
            name = op.name
            if name in _STRING_OPS:
                stack.append(arg.decode("latin-1") if isinstance(arg, bytes) else str(arg))
            elif name == "PROTO":
                proto = int(arg)
            elif name in ("GLOBAL", "INST"):
                found.append(_py3_name(*(str(arg).split(" ", 1) + [""])[:2], proto))
                if name == "INST":
                    pop_mark()
                stack.append(_OTHER)
            elif name == "STACK_GLOBAL":
                module, qual = pop(2)
                found.append(_py3_name(module, qual, proto) if isinstance(module, str) and isinstance(qual, str)
                             else UNRESOLVED)
                stack.append(_OTHER)
            elif name in ("EXT1", "EXT2", "EXT4"):
                found.append(f"<copyreg extension {arg}>")
                stack.append(_OTHER)
            elif name == "MARK":
                stack.append(_MARK)
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = stack[-1] if stack else _OTHER
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1] if stack else _OTHER
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo.get(arg, _OTHER))
            elif name == "DUP":
                stack.append(stack[-1] if stack else _OTHER)
            elif name == "POP":
                if stack:
                    stack.pop()
            elif name == "POP_MARK":
                pop_mark()
            elif name == "STOP":
                return True
            else:
                before = op.stack_before
                if pickletools.markobject in before:
                    pop_mark()
                    pop(before.index(pickletools.markobject))
                else:
                    pop(len(before))
                stack.extend([_OTHER] * len(op.stack_after))
    except _Malformed:
        # the real unpickler stops here too, but this model of its stack may be what went wrong: say so
        found.append("<pickle opcodes this check cannot follow>")
        return True
    except Exception:       # not a pickle (any more): the unpickler fails at the same opcode, after these
        return n_ops > 0
    return n_ops > 0


def order_globals(names: list[str]) -> list[str]:
    """Unique names, the ones that say what a file holds first, torch's tensor rebuilders last."""
    names = list(dict.fromkeys(names))
    tensor_kind = [g for g in names if _TENSOR_KIND.match(g)]
    return [g for g in names if g not in tensor_kind] + tensor_kind


def pickle_globals(data: bytes, max_pickles: int = 1) -> list[str]:
    """The globals ``module.name`` that unpickling `data` would import: up to `max_pickles` pickles in a row
    (legacy torch files are five, then raw storage bytes), in order_globals order."""
    f = io.BytesIO(data)
    found: list[str] = []
    for _ in range(max_pickles):
        if f.tell() >= len(data) or not _one_pickle(f, found):
            break
    return order_globals(found)


def zip_pickle_members(z: zipfile.ZipFile) -> list[str]:
    """The members of an archive that torch unpickles: every ``*.pkl`` (data.pkl, constants.pkl, ...)."""
    return [i.filename for i in z.infolist() if i.filename.endswith(".pkl")]


def file_globals(path: str | os.PathLike, max_pickles: int = 5) -> list[str]:
    """The globals a file would import if loaded: every ``*.pkl`` member of a zip archive (torch checkpoints,
    TorchScript archives; told apart by their first bytes, as torch does), else the pickles at its start."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"PK\x03\x04":
        return pickle_globals(data, max_pickles)
    found: list[str] = []
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            for name in zip_pickle_members(z):
                found += pickle_globals(z.read(name), 1)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        pass                    # a damaged archive: what was read so far
    return order_globals(found)


def shown(names: list[str], k: int = 3) -> str:
    return ", ".join(names[:k]) + (f", ... ({len(names)} in all)" if len(names) > k else "")


def refusal(path: str | os.PathLike, names: list[str], hint: str = "pass --allow-pickle",
            what: str = "holds pickled Python objects", effect: str = "that run code when loaded") -> InputError:
    """The one-line refusal for a file that would run code when loaded, naming what it would import."""
    return InputError(f"{what} ({shown(names)}) {effect}; only if you trust its source, {hint}", path)


# -- Keras ---------------------------------------------------------------------------------------------------
def _keras_config(path: Path) -> dict | None:
    """A Keras file's model config: config.json of a .keras zip, the model_config attribute of a legacy .h5."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                return json.loads(z.read("config.json"))
        import h5py
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
            if raw is None:
                return None
            return json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except Exception:       # unreadable: Keras will say why when it tries
        return None


def keras_code_objects(path: str | os.PathLike) -> list[str]:
    """The layers of a Keras model file that hold Python code (a ``Lambda`` layer's marshalled bytecode, a
    ``__lambda__`` function), as ``Lambda layer 'name'``, read from its config without building the model."""
    config = _keras_config(Path(path))
    found: list[str] = []

    def walk(o, layer: str | None) -> None:
        if isinstance(o, dict):
            cfg = o.get("config") if isinstance(o.get("config"), dict) else {}
            if o.get("class_name") == "Lambda":
                layer = str(cfg.get("name") or "?")
                if cfg.get("function_type") == "lambda":       # Keras 2: base64 marshalled bytecode
                    found.append(f"Lambda layer {layer!r}")
            elif o.get("class_name") == "__lambda__":           # Keras 3
                found.append(f"Lambda layer {layer!r}" if layer else "Python lambda")
            for v in o.values():
                walk(v, layer)
        elif isinstance(o, list):
            for v in o:
                walk(v, layer)

    if config is not None:
        walk(config, None)
    return list(dict.fromkeys(found))


def is_keras_safe_mode_error(e: BaseException) -> bool:
    """Keras refused to deserialise Python code (safe mode)."""
    text = str(e)
    return isinstance(e, ValueError) and ("safe_mode" in text or "unsafe_deserialization" in text)


def keras_refusal(path: str | os.PathLike, hint: str = "pass --allow-pickle") -> InputError:
    names = keras_code_objects(path) or ["Python code in its config"]
    return refusal(path, names, hint, what="holds Python code", effect="that Keras' safe mode refuses to load")
