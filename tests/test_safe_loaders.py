"""No code from a model file runs without the opt-in: the pickle scanner, the .pt2 check, TorchScript, Keras.

The crafted files come from tests/catalogue/loaders.py; each touches `code_ran` if what it carries ever runs.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import tarfile
import warnings
import zipfile

import numpy as np
import pytest
import torch
from catalogue.loaders import (MARKER, RunsCode, TouchesViaPathlib, keras_lambda_model, pt2_compiled, pt2_guards,
                               pt2_operator, pt2_pickled_weight, pt2_sample_inputs, pt2_shape_expression, rewrite_pt2,
                               tiny_program, torchscript_setstate)

from extract.checkpoints import load_weights
from extract.factory import create
from extract.program_check import program_problems, pt2_problems
from features.errors import InputError
from features.serialized_code import UNRESOLVED, file_globals, keras_code_objects, pickle_globals


# ------------------------------------------------------------------------------------------ pickle scanner
@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_globals_found_in_every_protocol(protocol, tmp_path):
    data = pickle.dumps({"a": [RunsCode(tmp_path / "m")], "b": TouchesViaPathlib(tmp_path / "m")}, protocol=protocol)
    names = pickle_globals(data)
    assert "posix.system" in names
    # protocols 0-3 reach a nested name through getattr; 4+ name it with STACK_GLOBAL
    assert ("pathlib.Path.touch" in names) if protocol >= 4 else {"builtins.getattr", "pathlib.Path"} <= set(names)
    assert not (tmp_path / "m").exists()


def test_stack_global_operands_are_followed_not_guessed():
    # 'os', 'system' pushed, then two harmless-looking strings pushed and popped again before STACK_GLOBAL:
    # the global imported is os.system, not the last two strings seen
    decoy = (b"\x80\x04\x8c\x02os\x8c\x06system\x8c\x0ctorch._utils\x8c\x12_rebuild_tensor_v2" + b"00"
             + b"\x93\x8c\x04true\x85R.")
    assert pickle_globals(decoy) == ["os.system"]
    # the operands fetched from the memo
    memo = b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94\x8c\x01x0h\x00h\x01\x93\x8c\x04true\x85R."
    assert pickle_globals(memo) == ["os.system"]
    # an operand that is not a string literal: reported as such, never as a harmless name
    computed = b"\x80\x04\x8c\x02os)\x93."
    assert pickle_globals(computed) == [UNRESOLVED]
    # the copyreg extension registry imports whatever is registered
    assert pickle_globals(b"\x80\x02\x82\x07)R.") == ["<copyreg extension 7>"]
    assert pickle_globals(b"no pickle here") == []


def test_file_globals_reads_zip_members_and_legacy_streams(tmp_path):
    torch.save({"w": torch.zeros(2), "x": RunsCode(tmp_path / "m")}, tmp_path / "zip.pt")
    torch.save({"w": torch.zeros(2), "x": RunsCode(tmp_path / "m")}, tmp_path / "legacy.pt",
               _use_new_zipfile_serialization=False)
    for name in ("zip.pt", "legacy.pt"):
        names = file_globals(tmp_path / name)
        assert names[0] == "posix.system" and "torch._utils._rebuild_tensor_v2" in names[1:], names
    assert not (tmp_path / "m").exists()


# ---------------------------------------------------------------------------------------- torch.export
def test_exported_programs_torch_writes_load_without_opt_in(tmp_path):
    class Rich(torch.nn.Module):          # buffers, constants, string arguments, control flow, a dict output
        def __init__(self):
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(3, 4, 3, stride=4), torch.nn.BatchNorm2d(4)
            self.fc = torch.nn.Linear(4, 3)
            self.register_buffer("b", torch.ones(3))

        def forward(self, x):
            h = torch.nn.functional.gelu(self.bn(self.conv(x)), approximate="tanh")
            emb = torch.relu(h).mean((2, 3))
            emb = torch.cond(emb.sum() > 0, lambda e: e * 2, lambda e: e - 1, (emb,))
            return {"embedding": emb, "logits": self.fc(emb) + self.b + torch.tensor([1.0, 2.0, 3.0])}

    x = torch.rand(2, 3, 32, 32)
    for i, dyn in enumerate((None, ({0: torch.export.Dim("batch", min=1, max=64)},))):
        path = tmp_path / f"rich{i}.pt2"
        torch.export.save(torch.export.export(Rich().eval(), (x,), dynamic_shapes=dyn), str(path))
        assert pt2_problems(path) == []
        ext = create(f"exported:{path}:size=32")
        assert ext.outputs == {"embedding": 4, "logits": 3}
    assert pt2_problems(tiny_program(tmp_path)) == []


@pytest.mark.parametrize("craft,named", [
    (pt2_sample_inputs, "posix.system"),
    (pt2_pickled_weight, "pathlib.Path.touch"),
    (pt2_shape_expression, "symbolic expression \"__import__('os')"),
    (pt2_operator, "operator torch.serialization.save"),
    (pt2_compiled, "compiled native code (data/aotinductor/model/model.so)"),
])
def test_crafted_pt2_refused_before_anything_runs(tmp_path, craft, named):
    path = craft(tmp_path, tmp_path)
    with pytest.raises(InputError) as e:
        create(f"exported:{path}:size=16")
    msg = str(e.value)
    assert msg.startswith(f"{path}: holds Python objects or code (") and named in msg and "--allow-pickle" in msg
    assert "\n" not in msg
    assert not (tmp_path / MARKER).exists()


def test_allow_pickle_is_what_lets_a_pt2_pickle_run(tmp_path):
    path = pt2_sample_inputs(tmp_path, tmp_path)
    ext = create(f"exported:{path}:size=16:allow_pickle=1")        # the user's explicit trust
    assert ext.outputs["embedding"] == 4 and (tmp_path / MARKER).exists()


def test_pt2_guards_are_never_compiled(tmp_path):
    ext = create(f"exported:{pt2_guards(tmp_path, tmp_path)}:size=16")
    ext(np.zeros((3, 16, 16, 3), np.uint8))
    assert not (tmp_path / MARKER).exists()


def test_pt2_names_specs_and_layout_are_checked(tmp_path):
    node = {"target": "torch.ops.higher_order.cond", "inputs": [{"name": "x=__import__('os').system('id'),y",
                                                                  "arg": {"as_tensor": {"name": "x"}}}], "outputs": []}
    assert program_problems({"graph": {"nodes": [node]}}, "m.json")[0].startswith("name \"x=__import__")
    spec = json.dumps([1, {"type": "builtins.dict", "context": json.dumps({"__enum__": True, "fqn": "os:system",
                                                                           "name": "x"}), "children_spec": []}])
    assert program_problems({"signature": {"in_spec": spec}}, "m.json") == ["in_spec that imports a class"]
    opens_files = {**node, "target": "torch.ops.aten.from_file.default", "inputs": []}
    assert program_problems({"graph": {"nodes": [opens_files]}}, "m.json") == [
        "operator torch.ops.aten.from_file.default"]
    # a weights config pointing outside its folder, and two members of one name
    bad = rewrite_pt2(tiny_program(tmp_path), tmp_path / "path.pt2",
                      edit_weights=lambda d: {"config": {k: {**v, "path_name": "../models/model.json"}
                                                         for k, v in d["config"].items()}})
    assert any("path_name '../models/model.json'" in p for p in pt2_problems(bad))
    # a legacy tar checkpoint as sample inputs: torch.load fully unpickles its members
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as t:
        info = tarfile.TarInfo("pickle")
        info.size = 2
        t.addfile(info, io.BytesIO(b"N."))
    bad = rewrite_pt2(tiny_program(tmp_path), tmp_path / "tar.pt2", {"data/sample_inputs/model.pt": tar.getvalue()})
    assert pt2_problems(bad) == ["data/sample_inputs/model.pt: a legacy torch tar archive"]
    dup = tmp_path / "dup.pt2"
    with zipfile.ZipFile(tiny_program(tmp_path)) as zi, zipfile.ZipFile(dup, "w") as zo:
        for n in zi.namelist():
            zo.writestr(n, zi.read(n))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")          # zipfile warns about the duplicate name
            zo.writestr(zi.namelist()[0], b"x")
    assert pt2_problems(dup) == ["repeated member names (the loader and this check could read different members)"]


# ---------------------------------------------------------------------------------------------- TorchScript
def test_torchscript_needs_opt_in(tmp_path):
    path = torchscript_setstate(tmp_path, tmp_path)
    with pytest.raises(InputError, match=r"script.pt: is a TorchScript program \(__torch__\..*torch compiles and "
                                         r"runs while loading it.*--allow-pickle.*torch.export"):
        create(f"exported:{path}:size=16")
    assert not (tmp_path / MARKER).exists()
    with pytest.raises(InputError, match="script.pt: a TorchScript program, not a checkpoint"):
        load_weights(path)                       # as a checkpoint: torch refuses it with weights_only
    assert not (tmp_path / MARKER).exists()
    torch.save({"w": torch.zeros(2)}, tmp_path / "weights.pt")
    with pytest.raises(InputError, match="weights.pt: a torch checkpoint"):
        create(f"exported:{tmp_path / 'weights.pt'}:size=16")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        create(f"exported:{path}:size=16:allow_pickle=1")
    assert (tmp_path / MARKER).exists()          # its __setstate__ ran: only because the user opted in


# --------------------------------------------------------------------------------------------------- Keras
def test_keras_lambda_layers_named_and_refused_in_one_line(tmp_path):
    from classify.base import load_head, sha256
    from extract.models.fer import FerExtractor
    h5 = keras_lambda_model(tmp_path / "m.h5", tmp_path / MARKER)
    assert keras_code_objects(h5) == ["Lambda layer 'lam'"]
    with pytest.raises(InputError, match=r"m.h5: holds Python code \(Lambda layer 'lam'\) that Keras' safe mode refuses to load"
                                         r".*--allow-pickle"):
        FerExtractor(h5)
    head = tmp_path / "head"
    head.mkdir()
    keras_lambda_model(head / "model.keras", tmp_path / MARKER)
    (head / "fitted.json").write_text(json.dumps({"n_features_in_": 8}))
    digests = {n: sha256(head / n) for n in ("model.keras", "fitted.json")}
    (head / "head.json").write_text(json.dumps({"kind": "mlp", "task": "expr", "params": {}, "feature_set": "x/logits",
                                                "sha256": digests}))
    assert keras_code_objects(head / "model.keras") == ["Lambda layer 'lam'"]
    with pytest.raises(InputError) as e:
        load_head(head)
    assert str(e.value).startswith(f"{head / 'model.keras'}: holds Python code (Lambda layer 'lam')")
    assert "\n" not in str(e.value)
    assert not (tmp_path / MARKER).exists()
    load_head(head, allow_pickle=True)           # opted in: Keras rebuilds the model, calling the lambda
    assert (tmp_path / MARKER).exists()
    os.remove(tmp_path / MARKER)
