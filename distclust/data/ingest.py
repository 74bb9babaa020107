"""``distclust ingest``: any accepted source → sharded Parquet + manifest, streaming.

Rows are dealt round-robin over the shards, so every shard is a stratified
sample of the source (sources sorted by class still shuffle well per worker).
Output goes to a temporary folder beside OUT and is renamed into place at the
end: a failed ingest never leaves a half-written dataset under OUT.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import DataError, OutputExistsError
from .manifest import FEATURES, ID, LABEL, FeatureStats, Manifest
from .sources import open_source


@contextlib.contextmanager
def atomic_dir(out: Path):
    """A temporary sibling folder that replaces ``out`` when the block ends without error (and is
    removed when it fails): a dataset appears whole or not at all."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def deal_rows(table: pa.Table, first_row: int, writers: list, counts: list[int]) -> None:
    """Write row ``first_row + i`` of ``table`` to shard ``(first_row + i) % shards`` (round robin:
    shards of near-equal size whatever the source's order)."""
    shards = len(writers)
    rows = np.arange(first_row, first_row + table.num_rows)
    for s in range(shards):
        idx = np.nonzero(rows % shards == s)[0]
        if len(idx):
            writers[s].write_table(table.take(idx))
            counts[s] += len(idx)


class ShardDealer:
    """Rows dealt round robin over ``shards`` Parquet files in ``folder`` (``deal_rows``), with a progress
    bar; a context manager that closes every file, also on error. ``rows`` counts what was written."""

    def __init__(self, folder: Path, shards: int, desc: str, progress: bool):
        from tqdm.auto import tqdm

        self.folder, self.shards = Path(folder), shards
        self.writers: list[pq.ParquetWriter] = []
        self.counts = [0] * shards
        self.rows = 0
        self.bar = tqdm(desc=desc, unit="rows", disable=not progress, mininterval=1.0)

    def open(self, sch: pa.Schema) -> None:
        self.writers = [pq.ParquetWriter(self.folder / f"part-{i:05d}.parquet", sch) for i in range(self.shards)]

    def write(self, table: pa.Table) -> None:
        deal_rows(table, self.rows, self.writers, self.counts)
        self.rows += table.num_rows
        self.bar.update(table.num_rows)

    def __enter__(self) -> "ShardDealer":
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()
        for w in self.writers:
            w.close()


def features_array(X: np.ndarray) -> pa.FixedSizeListArray:
    """(n, d) float32 → Arrow ``fixed_size_list<float32>[d]`` (arrives in torch as (B, d))."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), X.shape[1])


def schema(dim: int, with_label: bool) -> pa.Schema:
    fields = [pa.field(ID, pa.int64(), nullable=False), pa.field(FEATURES, pa.list_(pa.float32(), dim))]
    if with_label:
        fields.append(pa.field(LABEL, pa.int64()))
    return pa.schema(fields)


class _Stats:
    """Streaming per-feature count, mean, variance (Chan et al.), min, max in float64."""

    def __init__(self, d: int):
        self.n, self.mean, self.m2 = 0, np.zeros(d), np.zeros(d)
        self.min, self.max = np.full(d, np.inf), np.full(d, -np.inf)

    def update(self, X: np.ndarray) -> None:
        X = X.astype(np.float64)
        n_b = len(X)
        mean_b = X.mean(0)
        m2_b = ((X - mean_b) ** 2).sum(0)
        delta = mean_b - self.mean
        tot = self.n + n_b
        self.mean = self.mean + delta * n_b / tot
        self.m2 = self.m2 + m2_b + delta ** 2 * self.n * n_b / tot
        self.n = tot
        self.min = np.minimum(self.min, X.min(0))
        self.max = np.maximum(self.max, X.max(0))

    def result(self) -> FeatureStats:
        std = np.sqrt(self.m2 / max(self.n, 1))
        return FeatureStats(self.mean.tolist(), std.tolist(), self.min.tolist(), self.max.tolist())


def ingest(src: str | os.PathLike, out: str | os.PathLike, shards: int = 8, overwrite: bool = False,
           chunk_rows: int = 65536, progress: bool = True) -> Manifest:
    """Convert ``src`` into ``shards`` Parquet files under ``out`` with a manifest; returns it."""
    out = Path(out)
    if shards < 1:
        raise DataError(f"--shards is {shards}", "ingest", "use 1 or more shards")
    if out.exists():
        if not overwrite:
            raise OutputExistsError(f"output '{out}' already exists", str(out),
                                    "choose a new output folder or pass --overwrite")
    with atomic_dir(out) as tmp:
        return _ingest_into(src, tmp, shards, chunk_rows, progress)


def _ingest_into(src, tmp: Path, shards: int, chunk_rows: int, progress: bool) -> Manifest:
    stats: _Stats | None = None
    dim = None
    has_label = None
    label_codes: dict = {}
    string_labels = False
    label_max = -1
    all_ids: list[np.ndarray] = []
    chunks = open_source(src, chunk_rows)  # fails fast on a missing or unknown source
    with ShardDealer(tmp, shards, f"ingest {Path(str(src)).name}", progress) as out:
        for chunk in chunks:
            next_row = out.rows
            n, d = chunk.X.shape
            if dim is None:
                dim, has_label = d, chunk.labels is not None
                if dim == 0:
                    raise DataError("the source has 0 feature columns", str(src), "give each row at least one feature")
                out.open(schema(dim, has_label))
                stats = _Stats(dim)
            elif d != dim:
                raise DataError(f"rows from {next_row} have {d} features, earlier rows have {dim}", str(src),
                                "give every row the same number of features")
            if (chunk.labels is not None) != has_label:
                raise DataError("some parts of the source have labels and others not", str(src),
                                "label every file, or none")
            finite = np.isfinite(chunk.X)
            if not finite.all():
                r, c = np.argwhere(~finite)[0]
                raise DataError(f"row {next_row + r} (feature {c}) is {chunk.X[r, c]}; NaN and inf cannot be clustered",
                                str(src), "impute or drop rows with missing or infinite values before ingesting")
            ids = chunk.ids if chunk.ids is not None else np.arange(next_row, next_row + n, dtype=np.int64)
            all_ids.append(ids)
            labels = None
            if has_label:
                labels = chunk.labels
                if labels.dtype.kind in "iub" and (len(labels) == 0 or labels.min() >= 0) and not string_labels:
                    labels = labels.astype(np.int64)
                elif labels.dtype.kind == "f" and not string_labels:
                    if not np.all(labels == np.round(labels)):
                        raise DataError("labels are non-integer numbers", str(src),
                                        "use integer class ids or strings as labels")
                    labels = labels.astype(np.int64)
                else:  # strings (or negative ids): code them in order of first appearance, keep the names
                    if label_max >= 0 and not string_labels:
                        raise DataError("labels mix non-negative integers with strings or negative values",
                                        str(src), "use one kind of label throughout")
                    string_labels = True
                    labels = np.array([label_codes.setdefault(str(v), len(label_codes)) for v in labels],
                                      dtype=np.int64)
            if labels is not None and len(labels):
                label_max = max(label_max, int(labels.max()))
            stats.update(chunk.X)
            feats = features_array(chunk.X)
            cols = [pa.array(ids, pa.int64()), feats] + ([pa.array(labels, pa.int64())] if has_label else [])
            out.write(pa.Table.from_arrays(cols, schema=out.writers[0].schema))
    next_row, counts = out.rows, out.counts
    if next_row == 0:
        raise DataError("the source holds no rows", str(src), "pass a non-empty dataset")
    ids = np.concatenate(all_ids)
    uniq, cnt = np.unique(ids, return_counts=True)
    if len(uniq) != len(ids):
        raise DataError(f"the '{ID}' column has duplicates (e.g. id {int(uniq[cnt > 1][0])} appears "
                        f"{int(cnt[cnt > 1][0])} times)", str(src),
                        f"make '{ID}' unique, or drop it to number rows automatically")
    for s in range(shards):  # empty shards (fewer rows than shards) are not kept
        if counts[s] == 0:
            (tmp / f"part-{s:05d}.parquet").unlink()
    label_names = [k for k, _ in sorted(label_codes.items(), key=lambda kv: kv[1])] if string_labels else None
    n_classes = (len(label_names) if label_names else label_max + 1) if has_label else None
    manifest = Manifest(
        rows=next_row, dim=dim, dtype="float32", has_label=bool(has_label),
        shards=[{"file": f"part-{s:05d}.parquet", "rows": counts[s]} for s in range(shards) if counts[s]],
        stats=stats.result(), label_names=label_names, n_classes=n_classes, source=str(src),
    )
    manifest.save(tmp)
    return manifest
