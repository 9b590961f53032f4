"""Bad input to `python -m extract finetune`, to `finetuned:` checkpoints, and to `classify --blend-weights`.

Every refused fine-tuning must stop before anything is written: no checkpoint, report, state or lock file. The
shared world is a small synthetic Aff-Wild2 set (and a copy without AU labels) and a tiny timm network.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from extract.cli import main

from . import Case, Result, cli
from .classify import classify

SIZE = 32


def world(shared: Path) -> Path:
    """`shared/finetune`: data/ (synthetic Aff-Wild2, 3 train + 1 val videos), data_no_au/ (no AU labels at all),
    tiny.safetensors (a timm test_efficientnet with random weights)."""
    root = shared / "finetune"
    if (root / "done").exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    import timm
    import torch
    from safetensors.torch import save_file

    from features.synthetic import make_affwild
    make_affwild(root / "data", n_train=2, n_val=1, n_frames=12, size=48, seed=0)
    shutil.copytree(root / "data", root / "data_no_au")
    for d in ("AU_Detection_Challenge", "MTL_Challenge"):
        shutil.rmtree(root / "data_no_au" / d)
    torch.manual_seed(0)
    m = timm.create_model("test_efficientnet", pretrained=False, num_classes=8)
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(root / "tiny.safetensors"))
    (root / "done").touch()
    return root


def tiny(shared: Path) -> str:
    return f"timm:test_efficientnet:{world(shared) / 'tiny.safetensors'}:size={SIZE}"


def finetune(tmp: Path, shared: Path, *args: str, data: str = "data", source: str | None = None,
             out: str = "ft.safetensors") -> Result:
    w = world(shared)
    argv = ["finetune", "--task", "expr", "--data", w / data, "--from", source or tiny(shared), "--out", tmp / out,
            "--epochs", "1", "--batch", "4", "--frames-per-video", "4", "--val-frames-per-video", "4",
            "--ceiling-steps", "0", "--quiet", "--threads", "1", *args]
    if "--task" in args:        # the case's own task replaces the default
        i = argv.index("--task")
        del argv[i:i + 2]
    return cli(main, argv)


def nothing_written(keep: tuple[str, ...] = ()):
    """No checkpoint, report, state or lock file: the case's folder holds only what it put there."""
    def check(tmp: Path, shared: Path, res: Result) -> None:
        left = sorted(p.name for p in tmp.iterdir() if p.name not in keep)
        assert not left, left
    return check


def _case(name: str, *args: str, expect: str, **kw) -> Case:
    return Case("extract finetune", name, lambda tmp, sh: finetune(tmp, sh, *args, **kw), expect=expect,
                check=nothing_written())


def _existing_output(tmp: Path, shared: Path) -> Result:
    (tmp / "ft.safetensors").write_text("keep me")
    return finetune(tmp, shared)


def _kept(tmp: Path, shared: Path, res: Result) -> None:
    assert (tmp / "ft.safetensors").read_text() == "keep me"
    nothing_written(keep=("ft.safetensors",))(tmp, shared, res)


def _locked(tmp: Path, shared: Path) -> Result:
    from features.cachelock import CacheLock
    with CacheLock(tmp / "ft.safetensors"):
        res = finetune(tmp, shared)
    return res


def _exported(tmp: Path, shared: Path) -> Result:
    from .extract import _tiny_exported
    return finetune(tmp, shared, source=f"exported:{_tiny_exported(shared)}:size=16")   # its input size


def _valid(tmp: Path, shared: Path) -> Result:
    res = finetune(tmp, shared)
    if res.code == 0:       # the checkpoint is an extractor
        cache = tmp / "c.h5"
        res2 = cli(main, ["run", "--data", world(shared) / "data", "--cache", cache, "--extractors",
                          f"finetuned:{tmp / 'ft.safetensors'}", "--workers", "0", "--quiet", "--runtime", "torch"])
        return res2 if res2.code else res
    return res


def _finished(tmp: Path, shared: Path, res: Result) -> None:
    assert sorted(p.name for p in tmp.iterdir()) == ["c.h5", "ft.json", "ft.safetensors"]
    assert json.loads((tmp / "ft.json").read_text())["best_epoch"] == 1


# -- checkpoints given to `extract run --extractors finetuned:...`
def _checkpoint(tmp: Path, meta: dict | None, name: str = "ft.safetensors") -> Path:
    """A safetensors file with a tiny network's tensors and the given metadata (None: none at all)."""
    import timm
    import torch
    from safetensors.torch import save_file
    torch.manual_seed(0)
    m = timm.create_model("test_efficientnet", pretrained=False, num_classes=8)
    p = tmp / name
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(p), metadata=meta)
    return p


GOOD_META = {"format": "affect-features finetuned 1", "architecture": "test_efficientnet", "input_size": "32",
             "normalization": json.dumps({"mean": [0.5] * 3, "std": [0.25] * 3}), "task": "expr",
             "class_names": json.dumps(["Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise",
                                        "Other"])}


def _run_with(meta: dict | None, name: str = "ft.safetensors"):
    def run(tmp: Path, shared: Path) -> Result:
        ck = _checkpoint(tmp, meta, name)
        return cli(main, ["run", "--data", world(shared) / "data", "--cache", tmp / "c.h5", "--extractors",
                          f"finetuned:{ck}", "--workers", "0", "--quiet"])
    return run


def _no_cache(tmp: Path, shared: Path, res: Result) -> None:
    assert not (tmp / "c.h5").exists()


def _blend(*args: str, heads: str = "mlp,logits,blend"):
    return lambda tmp, sh: classify(tmp, sh, *args, heads=heads)


def _no_run(tmp: Path, shared: Path, res: Result) -> None:
    d = tmp / "runs" / "expr"
    assert not d.exists() or not any(d.iterdir())


CASES = [
    # -- numbers, bounded before anything is read or written
    _case("--epochs 0", "--epochs", "0", expect="--epochs: must be >= 1"),
    _case("--epochs 100000", "--epochs", "100000", expect="--epochs: must be <= 1000"),
    _case("--batch 0", "--batch", "0", expect="--batch: must be >= 1"),
    _case("--batch 100000", "--batch", "100000", expect="--batch: must be <= 4096"),
    _case("--lr 0", "--lr", "0", expect="--lr: must be > 0"),
    _case("--lr nan", "--lr", "nan", expect="--lr: must be > 0"),
    _case("--backbone-lr 2", "--backbone-lr", "2", expect="--backbone-lr: must be > 0 and <= 1"),
    _case("--frames-per-video 0", "--frames-per-video", "0", expect="--frames-per-video: must be >= 1"),
    _case("--seed -1", "--seed", "-1", expect="--seed: must be >= 0"),
    _case("--workers 100000", "--workers", "100000", expect="--workers: must be <= "),
    _case("--freeze-until beyond the network's layer groups", "--freeze-until", "99",
          expect="--freeze-until 99: this network has"),
    # -- what to start from, what to train on, where to write
    _case("--from fer (a Keras model)", expect="is a Keras model, not a torch network", source="fer"),
    Case("extract finetune", "--from an exported program (no classifier to replace)", _exported,
         expect="whose classifier cannot be replaced", check=nothing_written(keep=("tiny.pt2",))),
    _case("--from an unknown extractor", expect="unknown extractor 'nosuch'", source="nosuch:x.safetensors"),
    _case("--task au on data without AU labels", "--task", "au", expect="no AU annotations", data="data_no_au"),
    _case("--data missing", expect="data folder does not exist", data="no_such_folder"),
    _case("--loss bce for expr", "--loss", "bce", expect="loss 'bce' is for multilabel tasks"),
    _case("--out not .safetensors", expect="--out must end in .safetensors", out="ft.pt"),
    _case("--device cuda:99", "--device", "cuda:99", expect="--device cuda:99: no CUDA device"),
    _case("--amp fp16 on a CPU", "--amp", "fp16", expect="--amp fp16 needs a CUDA device"),
    Case("extract finetune", "--out exists", _existing_output, expect="output exists", check=_kept),
    Case("extract finetune", "a second writer on the same --out", _locked,
         expect="another fine-tuning writes this checkpoint", check=nothing_written()),
    Case("extract finetune", "a valid fine-tuning, then extraction with it", _valid, expect=None, check=_finished),
    # -- fine-tuned checkpoints are files from elsewhere: every metadata field checked
    Case("extract run", "finetuned: a safetensors file without fine-tuning metadata", _run_with(None),
         expect="not a fine-tuned checkpoint", check=_no_cache),
    Case("extract run", "finetuned: input_size 100000 in the metadata",
         _run_with({**GOOD_META, "input_size": "100000"}), expect="input_size must be an integer in [16, 1024]",
         check=_no_cache),
    Case("extract run", "finetuned: std 0 in the metadata",
         _run_with({**GOOD_META, "normalization": json.dumps({"mean": [0.5] * 3, "std": [0, 1, 1]})}),
         expect="normalization std must be 3 finite positive numbers", check=_no_cache),
    Case("extract run", "finetuned: class names that are not the task's",
         _run_with({**GOOD_META, "class_names": json.dumps(["a"] * 8)}), expect="class_names must be the expr labels",
         check=_no_cache),
    Case("extract run", "finetuned: an unknown task", _run_with({**GOOD_META, "task": "pose"}),
         expect="metadata task must be one of", check=_no_cache),
    Case("extract run", "finetuned: a classifier of the wrong size", _run_with({**GOOD_META, "task": "au",
                                                                               "class_names": json.dumps(
                                                                                   ["AU1", "AU2", "AU4", "AU6", "AU7",
                                                                                    "AU10", "AU12", "AU15", "AU23",
                                                                                    "AU24", "AU25", "AU26"])}),
         expect="the classifier has 8 outputs; a au network has 12", check=_no_cache),
    Case("extract run", "finetuned: not a .safetensors file", _run_with(GOOD_META, "ft.pt"),
         expect="a fine-tuned checkpoint is a .safetensors file", check=_no_cache),
    # -- fixed blend weights
    Case("classify", "--blend-weights that do not sum to 1", _blend("--blend-weights", "mlp=0.5,logits=0.4"),
         expect="weights must sum to 1, they sum to 0.9", check=_no_run),
    Case("classify", "--blend-weights naming no member", _blend("--blend-weights", "mlp=0.5,finetuned=0.5"),
         expect="'finetuned' is not a blend member; the members are mlp, logits", check=_no_run),
    Case("classify", "--blend-weights with a word for a weight", _blend("--blend-weights", "mlp=half"),
         expect="weight of 'mlp' is not a number", check=_no_run),
    Case("classify", "--blend-weights without the blend head", _blend("--blend-weights", "mlp=1", heads="mlp,logits"),
         expect="--blend-weights needs blend among --heads", check=_no_run),
]
