"""Reading rows: frames of several videos for one or several extractors, aligned on frame numbers, as a
:class:`FeatureBlock` (an index plus arrays) or a notebook DataFrame. Ranges adjacent in one file are read
together, so a whole split in file order is a few large reads."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import InputError
from .catalogue import Catalogue, VideoLoc
from .schema import FACE_OUTPUTS


@dataclass
class FeatureBlock:
    """Frames of several videos for several extractors: an index plus aligned arrays."""
    index: pd.DataFrame                 # columns video, frame, face
    arrays: dict[str, np.ndarray]       # "extractor/output" -> (n, d)

    def matrix(self, keys: Sequence[str] | None = None, dtype=np.float32) -> np.ndarray:
        """The arrays side by side as one matrix (keys in the given or insertion order)."""
        keys = list(self.arrays) if keys is None else list(keys)
        n = len(self.index)
        width = sum(self.arrays[k].shape[1] for k in keys)
        out = np.empty((n, width), dtype=dtype)
        c = 0
        for k in keys:
            a = self.arrays[k]
            out[:, c:c + a.shape[1]] = a
            c += a.shape[1]
        return out

    def __len__(self) -> int:
        return len(self.index)


class CacheReader(Catalogue):
    """Reads rows of the catalogued videos (see :meth:`read`)."""

    def _read_rows(self, name: str, key: str, locs: list[VideoLoc], out: np.ndarray) -> None:
        """Fill `out` with dataset `key` of the given video ranges, merging ranges adjacent in one file so a
        whole split in file order is a few large reads."""
        o = 0
        i = 0
        while i < len(locs):
            src, start, count = locs[i].source, locs[i].start, locs[i].count
            j = i + 1
            while j < len(locs) and locs[j].source == src and locs[j].start == start + count:
                count += locs[j].count
                j += 1
            if count:
                g = self._file(src)["extractors"][name]
                if key in FACE_OUTPUTS and key not in g:
                    out[o:o + count] = np.nan          # a file written before faces were recorded
                else:
                    g[key].read_direct(out, np.s_[start:start + count], np.s_[o:o + count])
            o += count
            i = j

    def read(self, videos: Sequence[str] | None = None, extractors: Sequence[str] | str | None = None,
             outputs: Sequence[str] | dict[str, Sequence[str]] = ("embedding",), dtype=None) -> FeatureBlock:
        """All frames of `videos` (default: all videos of the first extractor) for one or several extractors.

        `outputs` is one list for all extractors or a dict extractor -> outputs; besides the model's outputs
        these may name the face datasets ``face_box``, ``face_score``, ``face_landmarks`` (NaN rows for videos
        stored without them, see :mod:`features.store.schema`).
        Rows follow the given video order, then frame order. With several extractors only frames present in
        all of them are kept; `face` is the AND of their masks. Missing outputs (e.g. 'va' of a model without
        it) raise an InputError. `dtype` converts arrays (default: as stored).
        """
        extractors, per = self._outputs_per_extractor(extractors, outputs)
        if videos is None:
            videos = self.videos(extractors[0])
        videos = list(videos)
        locs = {e: [self._loc(e, v) for v in videos] for e in extractors}
        frame0, face0, counts, sel = self._frames(videos, extractors, locs)

        arrays = {}
        for e in extractors:
            info = self.info(e)
            n_e = sum(l.count for l in locs[e])
            for o in per[e]:
                dt = np.dtype(info.embedding_dtype if o == "embedding" else np.float32)
                buf = np.empty((n_e, {**info.outputs, **FACE_OUTPUTS}[o]), dt)
                self._read_rows(e, o, locs[e], buf)
                if sel[e] is not None:
                    buf = buf[sel[e]]
                arrays[f"{e}/{o}"] = buf if dtype is None else buf.astype(dtype, copy=False)
        index = pd.DataFrame({
            "video": pd.Categorical(np.repeat(np.arange(len(videos)), counts)).rename_categories(videos)
            if len(videos) else pd.Categorical([]),
            "frame": frame0, "face": face0})
        return FeatureBlock(index, arrays)

    def _outputs_per_extractor(self, extractors: Sequence[str] | str | None,
                               outputs: Sequence[str] | dict[str, Sequence[str]]):
        """The extractors to read (default: the first one) and the outputs of each, every one checked."""
        if extractors is None:
            extractors = self.extractors[:1]
        elif isinstance(extractors, str):
            extractors = [extractors]
        if not extractors:
            raise InputError("the cache holds no extractors", self.paths[0])
        per = {e: list(outputs.get(e, ())) for e in extractors} if isinstance(outputs, dict) \
            else {e: list(outputs) for e in extractors}
        for e in extractors:
            info = self.info(e)
            for o in per[e]:
                if o not in info.outputs and o not in FACE_OUTPUTS:
                    raise InputError(f"extractor {e!r} has no output {o!r} (it has {list(info.outputs)} and the "
                                     f"face datasets {list(FACE_OUTPUTS)})", self.paths[0])
        return extractors, per

    def _frames(self, videos: list[str], extractors: Sequence[str], locs: dict[str, list[VideoLoc]]):
        """Frame numbers and face mask of the rows kept, rows per video, and per extractor the row selection
        that aligns it on those frames (None: all its rows, already aligned)."""
        meta = {}
        for e in extractors:        # frame/face per extractor (small)
            n = sum(l.count for l in locs[e])
            frame = np.empty(n, np.int32)
            face = np.empty(n, bool)
            self._read_rows(e, "frame", locs[e], frame)
            self._read_rows(e, "face", locs[e], face)
            self._check_frames(e, videos, locs[e], frame)
            meta[e] = (frame, face)
        base = extractors[0]
        counts = np.array([l.count for l in locs[base]])
        frame0, face0 = meta[base]
        sel: dict[str, np.ndarray | None] = {base: None}
        if len(extractors) > 1 and any(
                not np.array_equal(meta[e][0], frame0) or [l.count for l in locs[e]] != counts.tolist()
                for e in extractors[1:]):
            return self._align(videos, extractors, locs, meta)
        for e in extractors[1:]:
            face0 = face0 & meta[e][1]
            sel[e] = None
        return frame0, face0, counts, sel

    def _check_frames(self, name: str, videos: list[str], locs: list[VideoLoc], frame: np.ndarray) -> None:
        """Frame numbers must increase within each video (the writer guarantees it; alignment with labels and
        other extractors relies on it), so a damaged file is refused instead of read as wrong rows."""
        if not len(frame):
            return
        bad = np.r_[frame[0] < 1, (np.diff(frame) <= 0) | (frame[1:] < 1)]
        ends = np.cumsum([l.count for l in locs])
        bad[ends[:-1][ends[:-1] < len(frame)]] &= frame[ends[:-1][ends[:-1] < len(frame)]] < 1   # video starts
        if not bad.any():
            return
        r = int(np.argmax(bad))
        k = int(np.searchsorted(ends, r, side="right"))
        what = f"frame {frame[r]} is not a 1-based frame number" if frame[r] < 1 else \
            f"frame {frame[r]} follows frame {frame[r - 1]} (out of order or repeated)"
        raise InputError(f"extractor {name!r}, video {videos[k]!r}: {what}; the file is damaged, re-extract this "
                         f"video", self._sources[locs[k].source])

    def _align(self, videos, extractors, locs, meta):
        """Row selections keeping, per video, the frames every extractor has."""
        offs = {e: np.concatenate([[0], np.cumsum([l.count for l in locs[e]])]) for e in extractors}
        sel = {e: [] for e in extractors}
        frames, faces, counts = [], [], []
        for vi in range(len(videos)):
            per = {e: meta[e][0][offs[e][vi]:offs[e][vi + 1]] for e in extractors}
            common = per[extractors[0]]
            for e in extractors[1:]:
                common = np.intersect1d(common, per[e])
            face = np.ones(len(common), bool)
            for e in extractors:
                idx = offs[e][vi] + np.searchsorted(per[e], common)
                sel[e].append(idx)
                face &= meta[e][1][idx]
            frames.append(common)
            faces.append(face)
            counts.append(len(common))
        cat = lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.empty(0, dt)
        return (cat(frames, np.int32), cat(faces, bool), np.array(counts),
                {e: cat(sel[e], np.int64) for e in extractors})

    def to_dataframe(self, videos: Sequence[str] | None = None, extractors: Sequence[str] | str | None = None,
                     outputs: Sequence[str] = ("embedding",)) -> pd.DataFrame:
        """A notebook view: columns video, frame, face, then `<extractor>/<output>_<i>` as float32."""
        blk = self.read(videos, extractors, outputs)
        cols = [blk.index.reset_index(drop=True)]
        for k, a in blk.arrays.items():
            cols.append(pd.DataFrame(a.astype(np.float32, copy=False),
                                     columns=[f"{k}_{i}" for i in range(a.shape[1])]))
        return pd.concat(cols, axis=1)
