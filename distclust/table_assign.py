"""Assignment of raw tables by a model trained on an ingested table (``assign.py`` calls these).

A model whose artifact holds a feature pipeline assigns the user's table as it is: each
batch is encoded by the pipeline inside the assign actor, and the output is keyed by the
table's own id column (its name and type), with ``--keep`` columns passed through. A CSV
is first converted to Parquet beside the output, reading categories with their training
types, so row-group units and resume work as for Parquet. Every check runs in the driver
before the output folder exists: a bad table leaves nothing half-written.
"""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import DataError


def is_raw_table(data: Path) -> bool:
    """True for a CSV, or Parquet without the ``features`` column that ``distclust ingest`` writes."""
    from .data.manifest import FEATURES
    from .data.tables import is_csv, table_files

    if str(data).startswith("builtin:") or not data.exists():
        return False
    if is_csv(data):
        return True
    if data.suffix.lower() in (".npz", ".npy"):
        return False
    files = table_files(data)
    return FEATURES not in pq.read_schema(files[0]).names


def prepare_raw(model, data: Path, out: Path, keep: list[str], progress: bool) -> list[Path]:
    """The Parquet files to assign for a raw table (a CSV converted first), all checked."""
    from .data.tables import check_columns, is_csv, iter_batches, schema_of, table_files

    pipe = model.pipeline
    if pipe is None:
        raise DataError(f"'{data}' is a raw table but the model was trained on plain numeric features", str(data),
                        "pass an ingested dataset (or id/features Parquet), or train on the table ingested "
                        "with 'distclust ingest TABLE OUT --id-column NAME'")
    if pipe.id_column is None:
        raise DataError("the model was trained on a table ingested without --id-column, so its output "
                        "could not be keyed by your ids", str(data),
                        "re-ingest the training table with --id-column NAME and retrain, or assign the ingested dataset")
    schema = schema_of(data, pipe.csv_column_types() if is_csv(data) else None)
    check_columns(schema, [pipe.id_column], str(data), "id column")
    check_columns(schema, keep, str(data), "--keep column")
    pipe.check_schema(schema, str(data))
    if not is_csv(data):
        files = table_files(data)
        for f in files:  # every file: a shard written with other types fails here, not in an actor
            s = pq.read_schema(f)
            check_columns(s, [pipe.id_column, *keep], str(f))
            pipe.check_schema(s, str(f))
        return files
    conv = out.parent / f".{out.name}.input"
    if conv.exists():
        shutil.rmtree(conv)
    tmp = out.parent / f".{out.name}.input-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        cols = list(dict.fromkeys([pipe.id_column, *keep, *pipe.input_columns]))
        writer = None
        for b in iter_batches(data, cols, 100_000, pipe.csv_column_types()):
            if writer is None:
                writer = pq.ParquetWriter(tmp / "part-00000.parquet", b.schema)
            pipe.check_schema(b.schema, str(data))
            writer.write_table(pa.Table.from_batches([b.cast(writer.schema)]), row_group_size=100_000)
        if writer is None:
            raise DataError("the table holds no rows", str(data), "pass a non-empty table")
        writer.close()
        os.replace(tmp, conv)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [conv / "part-00000.parquet"]


def output_schema(file_schema: pa.Schema, id_name: str, keep: list[str]) -> pa.Schema:
    return pa.schema([pa.field(id_name, file_schema.field(id_name).type), pa.field("cluster", pa.int64()),
                      pa.field("distance", pa.float32()), *(file_schema.field(k) for k in keep)])


def read_columns(model, file_schema: pa.Schema, keep: list[str]) -> tuple[list[str], str]:
    """(columns to read, id column name) for one input file of either kind."""
    from .data.manifest import FEATURES, ID

    pipe = model.pipeline
    if FEATURES in file_schema.names:  # an ingested dataset: key by the user's id when the shards carry it
        idc = pipe.id_column if pipe is not None and pipe.id_column in file_schema.names else ID
        return list(dict.fromkeys([idc, FEATURES])), idc
    return list(dict.fromkeys([pipe.id_column, *keep, *pipe.input_columns])), pipe.id_column
