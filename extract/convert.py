"""Convert a checkpoint (e.g. a published whole-pickled HSEmotion `.pt`) into a plain safetensors file.

    python -m extract.convert IN.pt OUT.safetensors [--allow-pickle] [--arch tf_efficientnet_b0] [--force]

The weights are checked by loading them strictly into a fresh timm model of the architecture, then written
with metadata (architecture, num_classes, source_sha256, source_file, source_format), so later runs load
them safely (no pickle) and can check they fit the extractor asked for. An existing OUT is never replaced
unless --force is given.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from features.cli import add_verbose, setup_console
from features.errors import InputError
from features.outputs import check_output, output_path

from .checkpoints import load_strict, load_weights, sha256_file

_EFFNET_BY_WIDTH = {1280: "tf_efficientnet_b0", 1408: "tf_efficientnet_b2"}


def infer_arch(sd: dict, metadata: dict, path: Path) -> str:
    """Architecture from the checkpoint's own record, else from tell-tale shapes; else ask for --arch."""
    from .models.hsemotion import canonical_arch
    if metadata.get("architecture"):
        return canonical_arch(metadata["architecture"])
    if "conv_head.weight" in sd and tuple(sd["conv_stem.weight"].shape[:2]) == (32, 3) \
            and int(sd["conv_head.weight"].shape[0]) in _EFFNET_BY_WIDTH:
        return _EFFNET_BY_WIDTH[int(sd["conv_head.weight"].shape[0])]
    if "layer4.1.conv2.weight" in sd and "layer4.2.conv1.weight" not in sd and "layer1.0.conv3.weight" not in sd:
        return "resnet18"
    raise InputError("cannot tell the architecture from the checkpoint; give --arch (a timm model name)", path)


def convert(src: str | os.PathLike, dst: str | os.PathLike, allow_pickle: bool = False, arch: str | None = None,
            force: bool = False) -> dict:
    """Write `dst` (safetensors) from `src`; returns the metadata written."""
    from safetensors.torch import save_file

    from .models.timm_generic import classifier_key, count_classes, create_timm, unwrap_sequential_head
    dst = Path(dst)
    if dst.suffix != ".safetensors":
        raise InputError("output must end in .safetensors", dst)
    if dst.exists() and not force:
        raise InputError("output exists; pass --force to replace it", dst)
    check_output(dst, force)
    w = load_weights(src, allow_pickle=allow_pickle)
    arch = arch or infer_arch(w.state_dict, w.metadata, w.path)
    probe = create_timm(arch, 0)
    clf = classifier_key(probe)
    sd = unwrap_sequential_head(w.state_dict, clf)
    if arch == "resnet18" and "fc.weight" not in sd:
        sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    n = count_classes(sd, clf)
    load_strict(create_timm(arch, n) if n else probe, sd, w.path, arch)
    meta = {"architecture": arch, "num_classes": str(n), "source_sha256": w.sha256,
            "source_file": w.path.name, "source_format": w.format, "converted_by": "affect-features extract.convert"}
    if w.metadata.get("module_class"):
        meta["source_module"] = w.metadata["module_class"]
    with output_path(dst, force=force) as tmp:
        # clone: safetensors refuses tensors that share storage
        save_file({k: v.detach().contiguous().clone() for k, v in sd.items()}, str(tmp), metadata=meta)
    meta["sha256"] = sha256_file(dst)
    return meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m extract.convert", description=__doc__.split("\n\n")[0])
    ap.add_argument("src", help="checkpoint to read (.pt/.pth state_dict or pickled module, .safetensors)")
    ap.add_argument("dst", help="safetensors file to write")
    ap.add_argument("--allow-pickle", action="store_true",
                    help="unpickle a checkpoint that holds Python objects (a whole pickled module): this EXECUTES "
                         "code stored in the file while loading it, before any check of its contents; only for "
                         "files from a source you trust")
    ap.add_argument("--arch", help="timm architecture (default: from the checkpoint)")
    ap.add_argument("--force", action="store_true", help="replace an existing output file")
    add_verbose(ap)
    a = ap.parse_args(argv)
    setup_console(a.verbose)
    try:
        meta = convert(a.src, a.dst, allow_pickle=a.allow_pickle, arch=a.arch, force=a.force)
    except (InputError, OSError) as e:
        from features.cli import error_line
        print(error_line(e), file=sys.stderr)
        return 2
    print(f"wrote {a.dst}: {meta['architecture']}, {meta['num_classes']} classes, "
          f"source sha256 {meta['source_sha256'][:12]}..., sha256 {meta['sha256'][:12]}...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
