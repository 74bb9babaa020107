"""Data I/O: ingest sources into sharded Parquet, and find/prepare datasets for jobs."""
from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .ingest import features_array, ingest
from .manifest import FEATURES, ID, LABEL, Manifest, is_dataset

__all__ = ["ingest", "Manifest", "is_dataset", "resolve_dataset", "features_array", "ID", "FEATURES", "LABEL",
           "split_files"]


def resolve_dataset(src: str | None, cache_dir: str | Path, shards: int = 8,
                    progress: bool = True) -> tuple[Path, Manifest]:
    """An ingested dataset for ``src``: used as is when it is one, else ingested into ``cache_dir``."""
    if not src:
        raise DataError("no data given", "data.path", "pass --data PATH or set data.path in the job spec")
    if not str(src).startswith("builtin:") and is_dataset(src):
        return Path(src).resolve(), Manifest.load(src)
    cache = Path(cache_dir)
    if is_dataset(cache):
        m = Manifest.load(cache)
        if m.source == str(src):
            return cache.resolve(), m
    m = ingest(src, cache, shards=shards, overwrite=True, progress=progress)
    return cache.resolve(), m


def split_files(manifest: Manifest, root: str | Path, world: int) -> list[tuple[list[str], int]]:
    """Deal the shard files over ``world`` workers: [(files, rows)] per rank, disjoint, covering all."""
    shards = [s for s in manifest.shards if s["rows"] > 0]
    if len(shards) < world:
        raise DataError(f"the dataset has {len(shards)} non-empty shards but {world} workers were asked for",
                        str(root), f"re-ingest with --shards {world} or more (e.g. {max(8, world * 2)}), "
                                   "or use fewer workers")
    # greedy by size so that workers get near-equal rows
    order = sorted(range(len(shards)), key=lambda i: -shards[i]["rows"])
    parts: list[list[int]] = [[] for _ in range(world)]
    load = [0] * world
    for i in order:
        r = min(range(world), key=lambda k: (load[k], k))
        parts[r].append(i)
        load[r] += shards[i]["rows"]
    root = Path(root)
    return [([str(root / shards[i]["file"]) for i in sorted(p)], load[r]) for r, p in enumerate(parts)]
