"""Readers that turn any accepted source into a stream of chunks.

Each reader yields ``Chunk(ids, X, labels)`` with at most ``chunk_rows`` rows, so
ingest never needs the whole dataset in memory for Parquet and CSV sources
(.npy is memory-mapped; .npz is read whole, as NumPy stores it).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import DataError
from .manifest import FEATURES, ID, LABEL

NPZ_X_KEYS = ("X", "x", "data", "features")
NPZ_Y_KEYS = ("y", "labels", "label", "target")


@dataclass
class Chunk:
    ids: np.ndarray | None      # int64, or None: ingest numbers rows in source order
    X: np.ndarray               # (n, d) float32
    labels: np.ndarray | None   # int64 codes or raw strings (object)


def _chunks_from_arrays(X, y, chunk_rows: int, where: str) -> Iterator[Chunk]:
    if X.ndim == 1:
        raise DataError(f"features are 1-D (shape {X.shape}); expected rows × features", where,
                        "save a 2-D array (N, d); for one feature use X.reshape(-1, 1)")
    if X.ndim > 2:  # images: flatten row-major
        X = X.reshape(X.shape[0], -1)
    if not np.issubdtype(X.dtype, np.number) and X.dtype != bool:
        raise DataError(f"features have non-numeric dtype {X.dtype}", where,
                        "convert the features to numbers before ingesting")
    if y is not None and len(y) != len(X):
        raise DataError(f"labels have {len(y)} rows but features have {len(X)}", where,
                        "save one label per row")
    for start in range(0, len(X), chunk_rows):
        sl = slice(start, start + chunk_rows)
        yield Chunk(None, np.asarray(X[sl], dtype=np.float32), None if y is None else np.asarray(y[sl]))


def read_npz(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    try:
        d = np.load(path, allow_pickle=False)
    except Exception as e:  # zipfile/ValueError: say what it is
        raise DataError(f"cannot read '{path}' as .npz ({type(e).__name__}: {e})", str(path),
                        "pass a file written by numpy.savez") from None
    xk = next((k for k in NPZ_X_KEYS if k in d.files), None)
    if xk is None:
        raise DataError(f"'{path}' has no feature array (keys: {', '.join(d.files)})", str(path),
                        f"store the features under one of {', '.join(NPZ_X_KEYS)}: np.savez(path, X=X, y=y)")
    yk = next((k for k in NPZ_Y_KEYS if k in d.files), None)
    yield from _chunks_from_arrays(d[xk], d[yk] if yk else None, chunk_rows, str(path))


def read_npy(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    try:
        X = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:
        raise DataError(f"cannot read '{path}' as .npy ({type(e).__name__}: {e})", str(path),
                        "pass a file written by numpy.save") from None
    yield from _chunks_from_arrays(X, None, chunk_rows, str(path))


def _table_chunks(batches: Iterator[pa.RecordBatch], where: str) -> Iterator[Chunk]:
    """Chunks from Arrow batches: optional ``id``/``label``, features in a list column
    called ``features`` or in every other (numeric) column."""
    for batch in batches:
        if batch.num_rows == 0:
            continue
        names = batch.schema.names
        ids = None
        if ID in names:
            col = batch.column(ID)
            if not pa.types.is_integer(col.type):
                raise DataError(f"the '{ID}' column has type {col.type}, not integer", where,
                                f"store integer ids in '{ID}', or drop the column to number rows automatically")
            if col.null_count:
                raise DataError(f"the '{ID}' column has {col.null_count} missing values", where,
                                "give every row an id, or drop the column")
            ids = col.to_numpy(zero_copy_only=False).astype(np.int64)
        labels = None
        if LABEL in names:
            col = batch.column(LABEL)
            if col.null_count:
                raise DataError(f"the '{LABEL}' column has {col.null_count} missing values", where,
                                "fill or drop unlabelled rows, or drop the label column")
            labels = col.to_numpy(zero_copy_only=False)
        if FEATURES in names:
            col = batch.column(FEATURES)
            if not (pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type) or
                    pa.types.is_large_list(col.type)):
                raise DataError(f"the '{FEATURES}' column has type {col.type}, not a list of numbers", where,
                                "store each row's features as a list column or as numeric columns")
            if col.null_count:
                raise DataError(f"the '{FEATURES}' column has {col.null_count} missing rows", where,
                                "drop rows without features")
            lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
            if len(set(lengths.tolist())) > 1:
                raise DataError(f"rows of '{FEATURES}' have different lengths ({int(lengths.min())}..{int(lengths.max())})",
                                where, "give every row the same number of features")
            values = pc.list_flatten(col)
            if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)):
                raise DataError(f"the '{FEATURES}' lists hold {values.type}, not numbers", where,
                                "store numeric features")
            X = values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(batch.num_rows, int(lengths[0]))
        else:
            feat = [n for n in names if n not in (ID, LABEL)]
            if not feat:
                raise DataError("no feature columns found", where,
                                f"add numeric columns, or one list column named '{FEATURES}'")
            bad = [n for n in feat if not (pa.types.is_integer(batch.schema.field(n).type) or
                                           pa.types.is_floating(batch.schema.field(n).type) or
                                           pa.types.is_boolean(batch.schema.field(n).type))]
            if bad:
                raise DataError(f"feature column '{bad[0]}' is {batch.schema.field(bad[0]).type}, not numeric", where,
                                f"ingest it as a mixed-type table (distclust ingest SRC OUT --id-column NAME), drop or "
                                f"encode the non-numeric columns ({', '.join(bad[:5])}), or name the label column '{LABEL}'")
            cols = []
            for n in feat:
                c = batch.column(n)
                if c.null_count:
                    raise DataError(f"feature column '{n}' has {c.null_count} missing values", where,
                                    "impute or drop missing values before ingesting")
                cols.append(c.to_numpy(zero_copy_only=False).astype(np.float32))
            X = np.stack(cols, axis=1)
        yield Chunk(ids, X, labels)


def read_csv(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    import pyarrow.csv as pcsv

    try:
        reader = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=1 << 22))
    except pa.ArrowInvalid as e:
        raise DataError(f"cannot read '{path}' as CSV ({e})", str(path), "pass a CSV file with a header row") from None

    def batches():
        try:
            yield from reader
        except pa.ArrowInvalid as e:
            raise DataError(f"CSV parse error in '{path}': {e}", str(path),
                            "make every row have the same columns, with numbers in feature columns") from None

    yield from _table_chunks(batches(), str(path))


def parquet_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if not p.name.startswith((".", "_")))
        if not files:
            raise DataError(f"folder '{path}' holds no .parquet files", str(path),
                            "pass a folder of Parquet files, or one file ingest accepts")
        return files
    return [path]


def read_parquet(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    import pyarrow.parquet as pq

    for f in parquet_files(path):
        try:
            pf = pq.ParquetFile(f)
        except Exception as e:
            raise DataError(f"'{f}' is not a readable Parquet file ({type(e).__name__}: {e})", str(f),
                            "re-create the file, or remove it from the folder") from None

        def batches(pf=pf, f=f):
            try:
                yield from pf.iter_batches(batch_size=chunk_rows)
            except Exception as e:
                raise DataError(f"'{f}' is corrupt ({type(e).__name__}: {e})", str(f),
                                "re-create the file, or remove it from the folder") from None

        yield from _table_chunks(batches(), str(f))


def builtin(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Data that ships with the installed packages (no network)."""
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return d.data.astype(np.float32), d.target.astype(np.int64)
    raise DataError(f"unknown builtin dataset '{name}'", f"builtin:{name}", "use builtin:digits")


def open_source(src: str | os.PathLike, chunk_rows: int = 65536) -> Iterator[Chunk]:
    """Chunk stream of any accepted source: .npz, .npy, .csv, .parquet, a Parquet folder, builtin:NAME."""
    s = str(src)
    if s.startswith("builtin:"):
        X, y = builtin(s.split(":", 1)[1])
        return _chunks_from_arrays(X, y, chunk_rows, s)
    path = Path(s)
    if "://" in s and not path.exists():
        scheme = s.split("://", 1)[0]
        raise DataError(f"'{scheme}://' data locations are not read directly by this version", s,
                        "copy the data to local or shared storage first (e.g. 'aws s3 sync' / 'gsutil rsync' "
                        "onto a path every node mounts) and pass that path")
    if not path.exists():
        raise DataError(f"data path '{s}' does not exist", s,
                        "check the path; accepted are .npz, .npy, .csv, .parquet files, Parquet folders and builtin:digits")
    suffix = path.suffix.lower()
    if path.is_dir() or suffix in (".parquet", ".pq"):
        return read_parquet(path, chunk_rows)
    if suffix == ".npz":
        return read_npz(path, chunk_rows)
    if suffix == ".npy":
        return read_npy(path, chunk_rows)
    if suffix in (".csv", ".txt"):
        return read_csv(path, chunk_rows)
    raise DataError(f"unsupported file type '{suffix}'", s, "convert the data to .npz, .npy, .csv or Parquet")
