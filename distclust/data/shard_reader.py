"""A worker's own shard files, read with pyarrow inside the worker's process.

Training reads need no Ray tasks at all: a worker that holds every CPU it was
given can always read its own data, so a job that fits on a cluster can never
deadlock on its reads (a Ray Data read task waiting for a CPU that the training
workers hold hung forever; docs/architecture.md). Two modes:

- *cached* (shard under ``data.materialize``'s limit): the shard is read once and
  held as tensors sorted by id; epochs are seeded permutations;
- *streaming*: every pass reads the files' row groups in a seeded order through a
  bounded shuffle buffer, so memory does not grow with the shard.

``epoch_batches`` yields exactly ``steps`` batches (DDP needs equal steps on every
rank). The driver sets ``steps = ceil(largest shard / batch)``, so the largest
shard is visited once per epoch and smaller ones wrap around (a fresh shuffle) to
fill their steps: every row is seen at least once every epoch, in both modes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from .manifest import FEATURES, ID, LABEL

Batch = dict[str, torch.Tensor]


def features_matrix(col) -> np.ndarray:
    """A ``features`` column (fixed-size lists, or variable-size lists written by other tools) as a
    float32 (rows × d) array, without a per-row Python loop for fixed-size lists."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_fixed_size_list(col.type):
        d = col.type.list_size
        vals = col.values.to_numpy(zero_copy_only=False)
        if col.offset:  # a sliced array's values start earlier than its first row
            vals = vals[col.offset * d:(col.offset + len(col)) * d]
        return vals.astype(np.float32, copy=False).reshape(len(col), d)
    return np.stack(col.to_numpy(zero_copy_only=False)).astype(np.float32)


def _to_tensors(table: pa.Table, columns: Sequence[str]) -> Batch:
    out: Batch = {}
    for c in columns:
        col = table.column(c).combine_chunks()
        if c == FEATURES:
            arr = np.ascontiguousarray(features_matrix(col))
            out[c] = torch.from_numpy(arr if arr.flags.writeable else arr.copy())   # Arrow buffers are read-only
        else:
            out[c] = torch.from_numpy(col.to_numpy(zero_copy_only=False).astype(np.int64, copy=True))
    return out


class ShardReader:
    """Iterate one worker's Parquet files as batches of tensors (``id``, ``features``, ``label``?)."""

    def __init__(self, files: Sequence[str | Path], rows: int, columns: Sequence[str], cache: bool,
                 shuffle_buffer: int = 20000, device: torch.device | str = "cpu"):
        self.files = [str(f) for f in files]
        self.rows = int(rows)
        self.columns = list(columns)
        self.shuffle_buffer = int(shuffle_buffer)
        self.device = torch.device(device)
        self._cache: Batch | None = None
        self._units = self._row_groups()
        if cache:
            self._cache = self._read_all()

    @classmethod
    def from_tensors(cls, tensors: Batch, shuffle_buffer: int = 20000, device="cpu") -> "ShardReader":
        """A cached reader over tensors already in memory (the in-process loop over NumPy arrays)."""
        r = cls.__new__(cls)
        r.files, r._units = [], []
        r.rows = len(tensors[ID])
        r.columns = list(tensors)
        r.shuffle_buffer, r.device = int(shuffle_buffer), torch.device(device)
        r._cache = {k: v.to(r.device) for k, v in tensors.items()}
        return r

    @property
    def cached(self) -> bool:
        return self._cache is not None

    def _row_groups(self) -> list[tuple[str, int]]:
        units = []
        for f in self.files:
            units.extend((f, rg) for rg in range(pq.ParquetFile(f).metadata.num_row_groups))
        return units

    def _read_all(self) -> Batch:
        parts = [_to_tensors(pq.read_table(f, columns=self.columns), self.columns) for f in self.files]
        if not parts:
            return {c: torch.zeros((0, 0) if c == FEATURES else (0,)) for c in self.columns}
        cache = {c: torch.cat([p[c] for p in parts]) for c in self.columns}
        order = torch.argsort(cache[ID])  # a fixed order whatever the file order: same seed, same batches
        return {k: v[order].to(self.device) for k, v in cache.items()}

    def _read_unit(self, unit: tuple[str, int]) -> Batch:
        f, rg = unit
        return _to_tensors(pq.ParquetFile(f).read_row_group(rg, columns=self.columns), self.columns)

    # -- one pass ------------------------------------------------------------------
    def iter_once(self, batch_size: int, shuffle_seed: int | None = None) -> Iterator[Batch]:
        """Every row exactly once: in id order (cached) or file order (streaming) without a seed;
        shuffled (a permutation, or row groups in seeded order through the buffer) with one."""
        if self._cache is not None:
            n = self.rows
            order = None
            if shuffle_seed is not None and self.shuffle_buffer > 0:
                g = torch.Generator().manual_seed(int(shuffle_seed))
                order = torch.randperm(n, generator=g).to(self.device)
            for s in range(0, n, batch_size):
                idx = order[s:s + batch_size] if order is not None else slice(s, s + batch_size)
                yield {k: v[idx] for k, v in self._cache.items()}
            return
        if shuffle_seed is None or self.shuffle_buffer <= 0:
            for unit in self._units:
                t = self._read_unit(unit)
                for s in range(0, len(t[ID]), batch_size):
                    yield {k: v[s:s + batch_size].to(self.device, non_blocking=True) for k, v in t.items()}
            return
        yield from self._shuffled_stream(batch_size, int(shuffle_seed))

    def _shuffled_stream(self, batch_size: int, seed: int) -> Iterator[Batch]:
        rng = np.random.default_rng(seed)
        g = torch.Generator().manual_seed(seed)
        order = rng.permutation(len(self._units))
        limit = max(self.shuffle_buffer, batch_size)
        buf: list[Batch] = []
        held = 0

        def drain(final: bool) -> Iterator[Batch]:
            nonlocal buf, held
            if not buf:
                return
            pool = {k: torch.cat([b[k] for b in buf]) for k in buf[0]}
            perm = torch.randperm(held, generator=g)
            pool = {k: v[perm] for k, v in pool.items()}
            full = held if final else (held // batch_size) * batch_size
            for s in range(0, full, batch_size):
                yield {k: v[s:min(s + batch_size, full)].to(self.device, non_blocking=True) for k, v in pool.items()}
            rest = {k: v[full:] for k, v in pool.items()}
            held = held - full
            buf = [rest] if held else []

        for i in order:
            b = self._read_unit(self._units[i])
            buf.append(b)
            held += len(b[ID])
            if held >= limit:
                yield from drain(final=False)
        yield from drain(final=True)

    # -- training epochs -----------------------------------------------------------
    def epoch_batches(self, batch_size: int, steps: int, seed: int) -> Iterator[Batch]:
        """Exactly ``steps`` shuffled batches; passes over the shard repeat (reshuffled) until then."""
        if self.rows == 0:
            return
        done, rep = 0, 0
        while done < steps:
            for b in self.iter_once(batch_size, shuffle_seed=seed + 104_729 * rep):
                yield b
                done += 1
                if done >= steps:
                    return
            rep += 1


def columns_for(has_label: bool) -> list[str]:
    return [ID, FEATURES] + ([LABEL] if has_label else [])
