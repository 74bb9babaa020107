"""``distclust ingest TABLE OUT --id-column NAME``: a mixed-type table → sharded Parquet + pipeline.

Two streaming passes over the source: the first checks the ids and fits the feature
pipeline (``features.py``), the second encodes every row with it and deals rows
round-robin over the shards. Shards hold what the engine reads (``id`` = row number,
``features``, ``label``) plus the user's id column under its own name and type, so
``assign`` and ``evaluate`` can key their output by it. The fitted pipeline is stored
in the manifest (``stats.pipeline``), which the engine hands to the model. Output is
written beside OUT and renamed into place: a failed ingest leaves nothing under OUT.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import DataError, OutputExistsError
from .features import FeatureOptions, FeaturePipeline, PipelineFitter, options_dict
from .ingest import ShardDealer, _Stats, atomic_dir, features_array
from .manifest import FEATURES, ID, LABEL, FeatureStats, Manifest
from .tables import check_columns, is_csv, iter_batches, schema_of, table_files, type_kind


def _id_hashes(col: pa.Array) -> np.ndarray:
    """64-bit keys of the ids for the duplicate check: integers as they are, other types hashed."""
    if pa.types.is_integer(col.type):
        return col.to_numpy(zero_copy_only=False).astype(np.int64).view(np.uint64)
    import pandas as pd

    return pd.util.hash_array(pc.cast(col, pa.string()).to_numpy(zero_copy_only=False).astype(object),
                              categorize=False)


class IdKeySpill:
    """The ids' 64-bit keys spilled to disk in 256 buckets by their top bits, so the duplicate check
    holds one bucket at a time (memory ~ rows / 256 × 8 bytes, not rows × 8: bounded at 10M+ rows)."""

    BUCKETS = 256

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.files = [open(self.folder / f"ids-{b:03d}.u64", "wb") for b in range(self.BUCKETS)]

    def __enter__(self) -> "IdKeySpill":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for f in self.files:
            f.close()

    def add(self, keys: np.ndarray) -> None:
        keys = np.ascontiguousarray(keys, dtype=np.uint64)
        bucket = (keys >> np.uint64(56)).astype(np.int64)
        order = np.argsort(bucket, kind="stable")
        keys, edges = keys[order], np.searchsorted(bucket[order], np.arange(self.BUCKETS + 1))
        for b in np.nonzero(np.diff(edges))[0]:
            self.files[b].write(keys[edges[b]:edges[b + 1]].tobytes())

    def duplicates(self) -> tuple[int, np.ndarray]:
        """(number of repeated rows, the keys that occur more than once)."""
        self.close()
        extra, dup = 0, []
        for b in range(self.BUCKETS):
            uniq, cnt = np.unique(np.fromfile(self.folder / f"ids-{b:03d}.u64", dtype=np.uint64), return_counts=True)
            extra += int((cnt - 1).sum())
            dup.append(uniq[cnt > 1])
        return extra, np.concatenate(dup)


def _check_id_nulls(col: pa.Array, first_row: int, id_column: str, where: str) -> None:
    if col.null_count:
        rows = np.nonzero(pc.is_null(col).to_numpy(zero_copy_only=False))[0][:3] + first_row
        raise DataError(f"the id column '{id_column}' is empty in {col.null_count} row(s) of this part "
                        f"(e.g. rows {', '.join(str(int(r)) for r in rows)}, counting from 0)", where,
                        "give every row an id, or drop rows without one before ingesting")


def _duplicate_examples(src, id_column: str, dup_keys: np.ndarray, batch_rows: int, column_types) -> list[str]:
    """The ids behind duplicated keys (an error path: one more pass over the id column only)."""
    found: dict = {}
    dup = set(dup_keys.tolist())
    for b in iter_batches(src, [id_column], batch_rows, column_types):
        col = b.column(id_column)
        keys = _id_hashes(col)
        for i in np.nonzero(np.isin(keys, dup_keys))[0]:
            v = col[int(i)].as_py()
            found[v] = found.get(v, 0) + 1
        if len([v for v, k in found.items() if k > 1]) >= 3:
            break
    ex = [f"{v!r} ({k}×)" for v, k in found.items() if k > 1][:3]
    return ex or [f"{len(dup)} hashed keys"]


def ingest_table(src: str | os.PathLike, out: str | os.PathLike, id_column: str | None = None,
                 label_column: str | None = None, columns: list[str] | None = None,
                 exclude: list[str] | None = None, options: FeatureOptions | None = None, shards: int = 8,
                 overwrite: bool = False, batch_rows: int = 65536, progress: bool = True) -> Manifest:
    """Ingest a raw table with mixed column types; returns the manifest (its ``stats.pipeline``)."""
    out = Path(out)
    options = options or FeatureOptions()
    if shards < 1:
        raise DataError(f"--shards is {shards}", "ingest", "use 1 or more shards")
    if columns and exclude:
        raise DataError("--columns and --exclude were both given", "distclust ingest",
                        "pass the columns to use, or the columns to leave out, not both")
    if out.exists() and not overwrite:
        raise OutputExistsError(f"output '{out}' already exists", str(out),
                                "choose a new output folder or pass --overwrite")
    where = str(src)
    files = table_files(src)
    csv_types = {c: pa.string() for c in options.categorical} if is_csv(files[0]) else None
    schema = schema_of(src, csv_types)
    special = [c for c in (id_column, label_column) if c is not None]   # "" is a name (R's row numbers)
    check_columns(schema, special, where, "id or label column")
    if columns:
        check_columns(schema, columns, where)
    check_columns(schema, exclude or [], where, "column to exclude")
    check_columns(schema, options.categorical, where, "--categorical column")
    feats = [c for c in (columns or schema.names) if c not in special and c not in (exclude or [])]
    if id_column is not None:
        kind = type_kind(schema.field(id_column).type)
        if kind not in ("numeric", "string", "temporal"):
            raise DataError(f"the id column '{id_column}' has type {schema.field(id_column).type}", where,
                            "use an integer or text id column")
        if id_column == ID and not pa.types.is_integer(schema.field(id_column).type):
            raise DataError(f"the id column is named '{ID}' but holds {schema.field(id_column).type}; "
                            f"'{ID}' is the row key distclust stores", where,
                            "rename the column (e.g. to 'record_id') and pass --id-column with the new name")
        if id_column in (FEATURES, LABEL) and id_column != label_column:
            raise DataError(f"the id column may not be named '{id_column}'", where, "rename it")
    if not feats:
        raise DataError("the table has no usable feature column (only id/label/excluded columns)", where,
                        "keep at least one feature column")

    # ---- pass 1: ids, labels and the pipeline --------------------------------------------------
    with warnings.catch_warnings(record=True) as caught, contextlib.ExitStack() as stack:
        warnings.simplefilter("always")
        fitter = PipelineFitter(schema, feats, options, where)
        n = 0
        spill = None
        if id_column is not None:   # removed with its files however the pass ends
            d = stack.enter_context(tempfile.TemporaryDirectory(
                prefix=".distclust-ids-", dir=out.parent if out.parent.is_dir() else None))
            spill = stack.enter_context(IdKeySpill(Path(d)))
        for b in iter_batches(src, special + feats, batch_rows, csv_types):
            if id_column is not None:
                col = b.column(id_column)
                _check_id_nulls(col, n, id_column, where)
                spill.add(_id_hashes(col))
            if label_column is not None and b.column(label_column).null_count:
                raise DataError(f"the label column '{label_column}' has {b.column(label_column).null_count} "
                                f"missing values (rows from {n})", where,
                                "fill or drop unlabelled rows, or leave out --label-column")
            fitter.update(b.select(feats))
            n += b.num_rows
        if n == 0:
            raise DataError("the table holds no rows", where, "pass a non-empty table")
        if spill is not None:
            extra, dup_keys = spill.duplicates()
            if extra:
                ex = _duplicate_examples(src, id_column, dup_keys, batch_rows, csv_types)
                raise DataError(f"the id column '{id_column}' has {extra} duplicate value(s), "
                                f"e.g. {', '.join(ex)}", where,
                                "make the ids unique (or drop repeated rows) before ingesting")
        pipe = fitter.result()
    warned = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    for msg in warned:
        warnings.warn(msg, stacklevel=2)
    pipe.id_column, pipe.label_column = id_column, label_column

    # ---- pass 2: encode and write ------------------------------------------------------------
    with atomic_dir(out) as tmp:
        manifest = _write(src, tmp, pipe, schema, shards, batch_rows, csv_types, progress, where)
        manifest.extra = {"id_column": id_column, "label_column": label_column, "feature_options":
                          options_dict(options), "warnings": warned}
        manifest.save(tmp)
        return manifest


def _write(src, tmp: Path, pipe: FeaturePipeline, schema: pa.Schema, shards: int, batch_rows: int,
           csv_types, progress: bool, where: str) -> Manifest:
    idc, labc = pipe.id_column, pipe.label_column
    fields = [pa.field(ID, pa.int64(), nullable=False)]
    own_id = idc is not None and idc != ID
    if own_id:
        fields.append(pa.field(idc, schema.field(idc).type, nullable=False))
    fields.append(pa.field(FEATURES, pa.list_(pa.float32(), pipe.dim)))
    if labc is not None:
        fields.append(pa.field(LABEL, pa.int64()))
    sch = pa.schema(fields)
    stats = _Stats(pipe.dim)
    label_codes: dict = {}
    int_labels = labc is not None and type_kind(schema.field(labc).type) == "numeric"
    read = [c for c in dict.fromkeys([*(x for x in (idc, labc) if x is not None), *pipe.input_columns])]
    with ShardDealer(tmp, shards, f"ingest {Path(str(src)).name}", progress) as out:
        out.open(sch)
        for b in iter_batches(src, read, batch_rows, csv_types):
            n, next_row = b.num_rows, out.rows
            X = pipe.transform(b, where)
            stats.update(X)
            rows = np.arange(next_row, next_row + n)
            ids = b.column(idc).cast(pa.int64()) if idc == ID else pa.array(rows, pa.int64())
            cols = [ids]
            if own_id:
                cols.append(b.column(idc).cast(schema.field(idc).type))
            cols.append(features_array(X))
            if labc is not None:
                lab = b.column(labc)
                if int_labels:
                    v = pc.cast(lab, pa.float64()).to_numpy(zero_copy_only=False)
                    if (v < 0).any() or not np.all(v == np.round(v)):
                        raise DataError(f"label column '{labc}' holds negative or fractional numbers", where,
                                        "use class ids 0, 1, 2, … or text labels")
                    codes = v.astype(np.int64)
                else:
                    codes = np.array([label_codes.setdefault(str(v), len(label_codes))
                                      for v in lab.to_pylist()], np.int64)
                cols.append(pa.array(codes, pa.int64()))
            out.write(pa.Table.from_arrays(cols, schema=sch))
    next_row, counts = out.rows, out.counts
    for s in range(shards):
        if counts[s] == 0:
            (tmp / f"part-{s:05d}.parquet").unlink()
    st = stats.result()
    n_classes = None
    names = None
    if labc is not None:
        if int_labels:
            n_classes = int(max(pc.max(pq.read_table(tmp, columns=[LABEL]).column(LABEL)).as_py(), 0)) + 1
        else:
            names = [k for k, _ in sorted(label_codes.items(), key=lambda kv: kv[1])]
            n_classes = len(names)
    return Manifest(rows=next_row, dim=pipe.dim, dtype="float32", has_label=labc is not None,
                    shards=[{"file": f"part-{s:05d}.parquet", "rows": counts[s]} for s in range(shards) if counts[s]],
                    stats=FeatureStats(st.mean, st.std, st.min, st.max, pipeline=pipe.to_dict()),
                    label_names=names, n_classes=n_classes, source=str(src))
