"""Model files that would run code when loaded: none of it may run without --allow-pickle.

Each crafted file, if the tool ever deserialised or ran what it carries, touches the marker file ``code_ran`` in
the case's folder (``os.system`` through a pickle, a sympy expression, guard source, TorchScript
``__setstate__``, a Keras lambda). Every refusal is one line naming the file and what it would import or run.
The crafting helpers are shared with tests/test_safe_loaders.py.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import warnings
import zipfile
from pathlib import Path

from extract.cli import main as extract_main

from . import Case, Result, cli
from .extract import S, _data, _tiny_exported

MARKER = "code_ran"


class RunsCode:
    """Unpickling this calls os.system (posix.system), which touches `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class TouchesViaPathlib:
    """Unpickling this calls pathlib.Path.touch on `marker` (a global reached by STACK_GLOBAL in protocol 4)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (Path(self.marker),)


def not_run(tmp: Path, shared: Path, res: Result) -> None:
    assert not (tmp / MARKER).exists(), "code from the file ran"


def not_run_no_cache(tmp: Path, shared: Path, res: Result) -> None:
    not_run(tmp, shared, res)
    assert not (tmp / "c.h5").exists(), "a cache was written for a refused run"


# -- torch.export archives -------------------------------------------------------------------------------------
def tiny_program(shared: Path) -> Path:
    """A small exported program (dynamic batch): embedding 4, logits 3; loads without --allow-pickle (the extract
    catalogue's, built once per session)."""
    return _tiny_exported(shared)


def rewrite_pt2(src: Path, dst: Path, members: dict[str, bytes] | None = None, edit_program=None,
                edit_weights=None) -> Path:
    """A copy of `src` with members replaced or added (names relative to the archive's folder) and the program
    JSON / weights config passed through `edit_program(doc)` / `edit_weights(doc)`."""
    members = dict(members or {})
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w") as zo:
        root = zi.namelist()[0].split("/", 1)[0] + "/"
        for info in zi.infolist():
            rel = info.filename[len(root):]
            data = members.pop(rel, None) or zi.read(info.filename)
            if edit_program and rel.startswith("models/") and rel.endswith(".json"):
                data = json.dumps(edit_program(json.loads(data))).encode()
            if edit_weights and rel.startswith("data/weights/") and rel.endswith("_config.json"):
                data = json.dumps(edit_weights(json.loads(data))).encode()
            zo.writestr(info.filename, data)
        for rel, data in members.items():
            zo.writestr(root + rel, data)
    return dst


def _torch_bytes(obj, protocol: int = 2) -> bytes:
    import torch
    buf = io.BytesIO()
    torch.save(obj, buf, pickle_protocol=protocol)
    return buf.getvalue()


def pt2_sample_inputs(tmp: Path, shared: Path) -> Path:
    """Sample inputs that pickle os.system (torch.export.load falls back to full unpickling for them)."""
    import torch
    evil = _torch_bytes(((torch.zeros(2, 3, S, S),), {"x": RunsCode(tmp / MARKER)}))
    return rewrite_pt2(tiny_program(shared), tmp / "inputs.pt2", {"data/sample_inputs/model.pt": evil})


def pt2_pickled_weight(tmp: Path, shared: Path) -> Path:
    """A weight marked use_pickle whose pickle calls pathlib.Path.touch (loaded with weights_only=False)."""
    def edit(doc):
        doc["config"]["conv.weight"]["use_pickle"] = True
        return doc
    name = None
    with zipfile.ZipFile(tiny_program(shared)) as z:
        for n in z.namelist():
            if n.endswith("model_weights_config.json"):
                name = json.loads(z.read(n))["config"]["conv.weight"]["path_name"]
    evil = _torch_bytes(TouchesViaPathlib(tmp / MARKER), protocol=4)
    return rewrite_pt2(tiny_program(shared), tmp / "weight.pt2", {f"data/weights/{name}": evil}, edit_weights=edit)


def pt2_shape_expression(tmp: Path, shared: Path) -> Path:
    """A symbolic shape that is Python code (torch's deserializer hands it to sympify, which evals it)."""
    def edit(doc):
        text = json.dumps(doc)
        sym = "Symbol('s77', positive=True, integer=True)"
        assert sym in text, "the exported program's batch symbol changed name"
        code = f"__import__('os').system('touch {tmp / MARKER}') or {sym}"
        return json.loads(text.replace(json.dumps(sym), json.dumps(code)))
    return rewrite_pt2(tiny_program(shared), tmp / "shape.pt2", edit_program=edit)


def pt2_guards(tmp: Path, shared: Path) -> Path:
    """Guard source that ExportedProgram.module() compiles into the module and runs on every call."""
    def edit(doc):
        doc["guards_code"] = [f"__import__('os').system('touch {tmp / MARKER}') == 0"]
        return doc
    return rewrite_pt2(tiny_program(shared), tmp / "guards.pt2", edit_program=edit)


def pt2_operator(tmp: Path, shared: Path) -> Path:
    """A node calling torch.save (torch.export.load resolves any torch.* callable as a node target)."""
    def edit(doc):
        node = doc["graph_module"]["graph"]["nodes"][-1]
        node["target"] = "torch.serialization.save"
        return doc
    return rewrite_pt2(tiny_program(shared), tmp / "operator.pt2", edit_program=edit)


def pt2_compiled(tmp: Path, shared: Path) -> Path:
    """An AOTInductor member: torch.export.load extracts and dlopens such libraries."""
    return rewrite_pt2(tiny_program(shared), tmp / "compiled.pt2",
                       {"data/aotinductor/model/model.so": b"\x7fELF" + bytes(60)})


def torchscript_setstate(tmp: Path, shared: Path) -> Path:
    """A TorchScript module whose __setstate__ (run by torch.jit.load) writes the marker with torch.save."""
    import torch

    class Writes(torch.nn.Module):
        def __init__(self, marker: str):
            super().__init__()
            self.p = marker

        def forward(self, x):
            return torch.relu(x).mean((2, 3))

        @torch.jit.export
        def __getstate__(self):
            return (self.p, self.training)

        @torch.jit.export
        def __setstate__(self, state: tuple[str, bool]):
            self.p = state[0]
            self.training = state[1]
            torch.save([1], self.p)

    p = tmp / "script.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(Writes(str(tmp / MARKER))), str(p))
    return p


# -- checkpoints -----------------------------------------------------------------------------------------------
def checkpoint_protocol4(tmp: Path, shared: Path) -> Path:
    """A torch zip checkpoint whose data.pkl is a protocol-4 pickle: names reached by STACK_GLOBAL."""
    import torch
    src = tmp / "p4_src.pt"
    torch.save({"w": torch.zeros(2)}, src)
    p = tmp / "p4.pt"
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(p, "w") as zo:
        for n in zi.namelist():
            data = zi.read(n)
            if n.endswith("data.pkl"):
                data = pickle.dumps({"w": RunsCode(tmp / MARKER)}, protocol=4)
            zo.writestr(n, data)
    return p


# -- Keras -----------------------------------------------------------------------------------------------------
def keras_lambda_model(path: Path, marker: Path, n_in: int = 8, n_out: int = 8) -> Path:
    """A Keras model whose Lambda layer, once deserialised and called (Keras calls it while rebuilding the
    model), touches `marker`. `.keras` (Keras 3) or `.h5` (legacy; written as Keras 2 did, bytecode in a list).
    Built with a harmless lambda, whose bytecode is then swapped in the saved config."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from features.import_order import torch_before_tensorflow
    torch_before_tensorflow()
    import keras
    from keras.src.utils.python_utils import func_dump
    payload = eval(f"lambda t: (__import__('pathlib').Path({str(marker)!r}).touch(), t)[1]")   # noqa: S307
    code, _, _ = func_dump(payload)
    inp = keras.Input((n_in,))
    out = keras.layers.Lambda(lambda t: t, name="lam")(keras.layers.Dense(n_out, name="d")(inp))
    keras.Model(inp, out).save(path)

    def swap(cfg: dict, keras2: bool) -> dict:
        for layer in cfg["config"]["layers"]:
            if layer["class_name"] == "Lambda":
                if keras2:
                    layer["config"].update(function=[code, None, None], function_type="lambda", module="__main__")
                else:
                    layer["config"]["function"]["config"]["code"] = code
        return cfg

    if path.suffix == ".h5":
        import h5py
        with h5py.File(path, "a") as f:
            f.attrs["model_config"] = json.dumps(swap(json.loads(f.attrs["model_config"]), keras2=True))
    else:
        tmp = path.with_name(path.name + ".tmp")
        with zipfile.ZipFile(path) as zi, zipfile.ZipFile(tmp, "w") as zo:
            for n in zi.namelist():
                data = zi.read(n)
                if n == "config.json":
                    data = json.dumps(swap(json.loads(data), keras2=False)).encode()
                zo.writestr(n, data)
        os.replace(tmp, path)
    return path


def _fer_lambda(tmp: Path, shared: Path) -> Result:
    model = keras_lambda_model(tmp / "emotion_model.h5", tmp / MARKER)
    return _run(tmp, shared, f"fer:{model}")


# -- classify predict --------------------------------------------------------------------------------------------
def _run_with_head(tmp: Path, shared: Path, kind: str, files: dict[str, bytes]) -> Path:
    """A copy of the predict catalogue's run whose final head is `kind` with these files (hashes recorded)."""
    from classify.base import sha256

    from .predict import copy_run
    rd = copy_run(tmp, shared)
    h = rd / "heads" / kind
    h.mkdir()
    for name, data in files.items():
        (h / name).write_bytes(data)
    (h / "head.json").write_text(json.dumps({"kind": kind, "task": "expr", "params": {}, "feature_set": "enet/logits",
                                             "sha256": {n: sha256(h / n) for n in files}}))
    m = json.loads((rd / "metrics.json").read_text())
    (rd / "metrics.json").write_text(json.dumps({**m, "final": kind}))
    return rd


def _predict_lama(tmp: Path, shared: Path) -> Result:
    from .predict import predict
    rd = _run_with_head(tmp, shared, "lama", {"lama.pkl": pickle.dumps(TouchesViaPathlib(tmp / MARKER), protocol=5)})
    return predict(tmp, shared, run_dir=rd)


def _predict_keras_lambda(tmp: Path, shared: Path) -> Result:
    from .predict import predict
    model = keras_lambda_model(tmp / "model.keras", tmp / MARKER)
    rd = _run_with_head(tmp, shared, "mlp", {"model.keras": model.read_bytes(),
                                             "fitted.json": json.dumps({"n_features_in_": 8}).encode()})
    model.unlink()
    return predict(tmp, shared, run_dir=rd)


def _run(tmp: Path, shared: Path, spec: str, *args) -> Result:
    return cli(extract_main, ["run", "--data", _data(shared), "--out", tmp / "c.h5", "--workers", "0", "--quiet",
                              "--extractors", spec, *args])


def _exported(craft, size: int = S):
    return lambda tmp, sh: _run(tmp, sh, f"exported:{craft(tmp, sh)}:size={size}")


def _no_output(tmp: Path, shared: Path, res: Result) -> None:
    not_run(tmp, shared, res)
    left = sorted(p.name for p in tmp.iterdir() if p.name.startswith(("p.", ".p.")))
    assert not left, left


def _guards_not_compiled(tmp: Path, shared: Path, res: Result) -> None:
    not_run(tmp, shared, res)
    assert (tmp / "c.h5").exists()


CASES = [
    Case("extract run", "exported .pt2 whose sample inputs pickle os.system", _exported(pt2_sample_inputs),
         expect="posix.system", check=not_run_no_cache, defect="silent"),
    Case("extract run", "exported .pt2 with a pickled weight calling pathlib.Path.touch", _exported(pt2_pickled_weight),
         expect="pathlib.Path.touch", check=not_run_no_cache, defect="misleading"),
    Case("extract run", "exported .pt2 whose shape expression is Python code", _exported(pt2_shape_expression),
         expect="symbolic expression", check=not_run_no_cache, defect="silent"),
    Case("extract run", "exported .pt2 with guard source running os.system (never compiled)", _exported(pt2_guards),
         expect=None, check=_guards_not_compiled, defect="silent"),
    Case("extract run", "exported .pt2 with a node calling torch.serialization.save", _exported(pt2_operator),
         expect="operator torch.serialization.save", check=not_run_no_cache, defect="misleading"),
    Case("extract run", "exported .pt2 holding AOTInductor compiled code", _exported(pt2_compiled),
         expect="compiled native code (data/aotinductor/model/model.so)", check=not_run_no_cache,
         defect="misleading"),
    Case("extract run", "TorchScript .pt whose __setstate__ writes a file", _exported(torchscript_setstate),
         expect="is a TorchScript program (__torch__.", check=not_run_no_cache, defect="silent"),
    Case("extract run", "timm checkpoint with a protocol-4 pickle of os.system",
         lambda tmp, sh: _run(tmp, sh, f"timm:test_efficientnet:{checkpoint_protocol4(tmp, sh)}"),
         expect="p4.pt: holds pickled Python objects (posix.system", check=not_run_no_cache, defect="misleading"),
    Case("extract convert", "checkpoint with a protocol-4 pickle of os.system",
         lambda tmp, sh: cli(extract_main, ["convert", checkpoint_protocol4(tmp, sh), tmp / "out.safetensors"]),
         expect="holds pickled Python objects (posix.system", check=not_run, defect="misleading"),
    Case("extract convert", "a TorchScript program given as a checkpoint",
         lambda tmp, sh: cli(extract_main, ["convert", torchscript_setstate(tmp, sh), tmp / "out.safetensors"]),
         expect="script.pt: a TorchScript program, not a checkpoint", check=not_run, defect="misleading"),
    Case("extract run", "fer model (legacy .h5) with a Lambda layer's bytecode", _fer_lambda,
         expect="emotion_model.h5: holds Python code (Lambda layer 'lam')", check=not_run_no_cache,
         defect="misleading"),
    Case("classify predict", "LightAutoML head whose pickle calls pathlib.Path.touch", _predict_lama,
         expect="lama.pkl: holds pickled Python objects (pathlib.Path.touch", check=_no_output, defect="misleading"),
    Case("classify predict", "MLP head whose model.keras has a Lambda layer", _predict_keras_lambda,
         expect="model.keras: holds Python code (Lambda layer 'lam')", check=_no_output, defect="traceback"),
]
