"""The HDF5 feature cache: per-frame embeddings, logits and valence/arousal of several frozen extractors.

The file layout (schema version 1) is in :mod:`features.store.schema`.

Crash safety. HDF5 is not journaled: a process killed inside a metadata update can leave a file unreadable.
So the main file is never modified in place. Each committed video is written to its own small segment file
``<cache>.parts/seg-<seq>-<id>.h5`` (written as ``*.tmp``, fsynced, then renamed, which is atomic), and closing a
writer compacts main + segments into ``<cache>.tmp`` and renames it over the main file. A writer killed at any
moment therefore leaves the main file intact, every committed video in a complete segment, and at worst a
``*.tmp`` file that the next writer deletes. Readers see main + segments as one cache, so a cache can be read
while it is being extracted, and several shard files read as one cache too.

One writer at a time. A writer holds ``<cache>.lock`` (features.cachelock) from opening to closing; a second
writer is refused at once with one line naming the holder (pid, host). The kernel releases the lock of a dead
process, so a lock file left by a crash is taken over. Compaction folds, and then deletes, only the segments
this writer has indexed; segments on disk that it has not indexed (a commit interrupted after its rename) are
indexed first, never deleted unread. Ctrl-C during a commit is held until the commit (rename + index) is done.

Modules, each built on the ones before it:

- ``schema``: the format, :class:`ExtractorInfo` (provenance), the checks on open, a group's layout
- ``durability``: fsync + atomic rename, Ctrl-C held during a commit, write errors as one line
- ``paths``: which files make up a cache (main file, segments, shards, a command-line spec)
- ``catalogue``: the open files and where each video's rows lie
- ``reader``: :meth:`FeatureStore.read` and :class:`FeatureBlock`
- ``compaction``: the catalogue folded into one file
- ``writer``: :class:`FeatureStore` (lock, writers, close) and :class:`VideoWriter` (atomic commits)
- ``merge``: :func:`merge_caches`
"""
from .merge import merge_caches
from .paths import cache_files, shard_files, shard_path, shard_sets
from .reader import FeatureBlock
from .schema import FORMAT, OUTPUTS, SCHEMA_VERSION, ExtractorInfo, package_versions
from .writer import FeatureStore, VideoWriter, create_empty

__all__ = [
    "FORMAT", "OUTPUTS", "SCHEMA_VERSION", "ExtractorInfo", "package_versions",
    "FeatureBlock", "FeatureStore", "VideoWriter", "create_empty",
    "cache_files", "shard_files", "shard_path", "shard_sets", "merge_caches",
]
