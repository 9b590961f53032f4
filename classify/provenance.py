"""What a run records about the extractors behind its features (metrics.json's `provenance`), and the check that
a cache it is applied to was made by the same ones (`classify predict`)."""
from __future__ import annotations

import os
from typing import Sequence

from features.errors import InputError
from features.store import FeatureStore

from . import featuresets

_PIXEL_KEYS = ("resize", "min_side", "bad_frames")     # extract.runner.PIXELS: how crops became model input


def run_provenance(store: FeatureStore, feature_sets: Sequence[str]) -> dict:
    """Provenance of every extractor the feature sets use, as `classify` records it in metrics.json."""
    out = {}
    for fs in feature_sets:
        for key in featuresets.resolve(store, fs):
            e, o = key.split("/")
            info = store.info(e)
            rec = out.setdefault(e, {**info.provenance(), "used_outputs": [],
                                     "class_names": list(info.extra.get("class_names") or []),
                                     "source": info.extra.get("source") or {}})
            if o not in rec["used_outputs"]:
                rec["used_outputs"].append(o)
    return out


def check_provenance(store: FeatureStore, recorded: dict, where: str | os.PathLike) -> None:
    """Refuse a cache whose extractors differ from the ones the run was trained on (one line naming the first
    difference). Compared: checkpoint sha256, input size, normalisation, the widths of the outputs the run
    uses and the pixel pipeline; not compared: how the frames were found (crop folders vs face detection in
    video files: that is the point of applying a run to new videos) or the storage dtype of the embedding."""
    for e, rec in recorded.items():
        if e not in store.extractors:
            raise InputError(f"the cache holds no features of extractor {e!r}, which the run uses (it holds "
                             f"{', '.join(store.extractors) or 'none'}); extract them with the run's "
                             f"checkpoint (sha256 {str(rec.get('checkpoint_sha256'))[:12]}...)", store.paths[0])
        info = store.info(e)
        have = info.provenance()
        diffs = []
        for k in ("checkpoint_sha256", "input_size", "normalization"):
            if k in rec and have.get(k) != rec[k]:
                a, b = have.get(k), rec[k]
                if k == "checkpoint_sha256":
                    a, b = f"{str(a)[:12]}...", f"{str(b)[:12]}..."
                diffs.append(f"{k} {a} here, {b} in the run")
        for o in rec.get("used_outputs", []):
            w_run, w_here = (rec.get("outputs") or {}).get(o), info.outputs.get(o)
            if w_here != w_run:
                diffs.append(f"output {o!r} of width {w_here} here, {w_run} in the run")
        src_run, src_here = rec.get("source") or {}, info.extra.get("source") or {}
        for k in _PIXEL_KEYS:
            if k in src_run and k in src_here and src_run[k] != src_here[k]:
                diffs.append(f"pixel pipeline {k} {src_here[k]!r} here, {src_run[k]!r} in the run")
        if diffs:
            raise InputError(f"extractor {e!r} differs from the one run {where} was trained on ({diffs[0]}); "
                             f"extract the videos again with the run's checkpoint and preprocessing",
                             store.paths[0])
