"""`classify predict`'s scores: the videos to score, a run's final head (a blend with its members) on every cached
frame, a chunk of videos at a time, or a pre-trained model's own classes; laid out on the full frame timeline
(postprocess.timeline) as a ScoreSet without labels, NaN where no face was cached (filled later, on the one path
of postprocess.timeline)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from features.errors import InputError
from features.finite import read_for_heads
from features.store import FeatureStore
from features.tasks import EXPR
from postprocess.scores import ScoreSet
from postprocess.timeline import full_timeline, spread

from . import featuresets
from .rules import affwild_probabilities, default_class_names
from .runfolder import LoadedRun

CHUNK_ROWS = 1 << 18           # cached rows scored at a time: bounds the float32 feature matrix (~1.3 GB at 1290)


def choose_videos(store: FeatureStore, extractors: Sequence[str], videos: Sequence[str] | None) -> list[str]:
    """The videos to score: the given ones (each must be cached for every extractor), else every video the
    first extractor holds that the others hold too, in cache order."""
    if videos:
        for v in videos:
            for e in extractors:
                if not store.has_video(e, v):
                    have = store.videos(e)
                    raise InputError(f"video {v!r} is not in the cache for extractor {e!r} (it holds "
                                     f"{len(have)} videos, e.g. {', '.join(have[:3]) or 'none'})", store.paths[0])
        return list(dict.fromkeys(videos))
    out = [v for v in store.videos(extractors[0]) if all(store.has_video(e, v) for e in extractors[1:])]
    if not out:
        raise InputError(f"no video is cached for all of {', '.join(extractors)}", store.paths[0])
    return out


def _chunks(store: FeatureStore, extractor: str, videos: list[str], rows: int) -> list[list[str]]:
    out, cur, n = [], [], 0
    for v in videos:
        c = store.n_frames(extractor, v)
        if cur and n + c > rows:
            out.append(cur)
            cur, n = [], 0
        cur.append(v)
        n += c
    return out + ([cur] if cur else [])


def score_run(store: FeatureStore, lr: LoadedRun, videos: list[str], chunk_rows: int = CHUNK_ROWS) -> ScoreSet:
    """The final head's scores on every frame of `videos`, a chunk of videos at a time (a chunk's features are
    the only large arrays). Each head gets what `classify` gave it on validation (splits.Frames.predict): the rows
    with a face, with their videos and frames (temporal heads window them by video), as stored (float16
    embeddings go to the Keras MLP as they are; it converts a block at a time). Frames without a face get NaN,
    for gap filling."""
    keys = {fs: featuresets.resolve(store, fs) for fs in lr.feature_sets}
    outs: dict[str, list[str]] = {}
    for ks in keys.values():
        for key in ks:
            e, o = key.split("/")
            if o not in outs.setdefault(e, []):
                outs[e].append(o)
    exts = list(outs)
    final = lr.heads[lr.final]
    parts = []
    for chunk in _chunks(store, exts[0], videos, chunk_rows):
        blk = read_for_heads(store, chunk, exts, outputs=outs)
        face = blk.index["face"].to_numpy(bool)
        every = bool(face.all())                   # no copy of the features when every frame has a face
        rows = dict(groups=blk.index["video"].to_numpy(str)[face],
                    frames=blk.index["frame"].to_numpy(np.int64)[face])
        member = {}
        for m, fs in lr.members.items():
            head = lr.heads[m]
            X = blk.arrays[keys[fs][0]] if len(keys[fs]) == 1 else blk.matrix(keys[fs])
            if X.dtype != np.float32 and head.kind != "mlp":
                X = X.astype(np.float32)
            sc = np.full((len(face), lr.task.n_outputs), np.nan, np.float32)
            if face.any():
                sc[face] = head.predict_proba(X if every else X[face], **rows)
            bad = face & ~np.isfinite(sc).all(axis=1)
            if bad.any():
                i = int(np.argmax(bad))
                raise InputError(f"features {fs}: {int(bad.sum())} frames with a face get NaN or infinite scores "
                                 f"(are their features finite?), first: video {blk.index['video'].iloc[i]!r}, "
                                 f"frame {int(blk.index['frame'].iloc[i])}", store.paths[0])
            member[m] = sc
        raw = final.predict_proba(member) if final.kind == "blend" else member[lr.final]
        video, frame, pos = full_timeline(blk.index["video"].to_numpy(str), blk.index["frame"].to_numpy(np.int64),
                                          f"{store.paths[0]}")
        n = len(video)
        parts.append((video, frame, spread(pos, n, face, False), spread(pos, n, raw, np.nan)))
    video, frame, face, raw = (np.concatenate([p[i] for p in parts]) for i in range(4))
    return ScoreSet(video, frame, face, None, raw, attrs={"task": lr.task.name})


def pretrained_classes(store: FeatureStore, extractor: str) -> list[str]:
    """The class names of an extractor's logits, or one line saying why it cannot be used with --pretrained."""
    if extractor not in store.extractors:
        raise InputError(f"--pretrained {extractor}: the cache holds no extractor of that name (it holds "
                         f"{', '.join(store.extractors) or 'none'})", store.paths[0])
    info = store.info(extractor)
    if "logits" not in info.outputs:
        raise InputError(f"--pretrained {extractor}: the extractor has no class logits (outputs: "
                         f"{', '.join(info.outputs)}); train a run on its features and pass --run", store.paths[0])
    return list(info.extra.get("class_names") or default_class_names(info.outputs["logits"]))


def score_pretrained(store: FeatureStore, extractor: str, videos: list[str]) -> ScoreSet:
    """EXPR from the extractor's own class logits mapped to Aff-Wild2's classes (no training)."""
    names = pretrained_classes(store, extractor)
    blk = read_for_heads(store, videos, extractor, ("logits",))
    p = affwild_probabilities(names, blk.arrays[f"{extractor}/logits"])
    face = blk.index["face"].to_numpy(bool)
    video, frame, pos = full_timeline(blk.index["video"].to_numpy(str), blk.index["frame"].to_numpy(np.int64),
                                      "predict")
    n = len(video)
    p[~face] = np.nan
    return ScoreSet(video, frame, spread(pos, n, face, False), None, spread(pos, n, p, np.nan),
                    attrs={"task": EXPR.name})
