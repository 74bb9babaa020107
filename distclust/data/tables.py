"""Read a raw table (CSV, a Parquet file or a folder of them) as a stream of Arrow batches.

Mixed-type customer tables arrive as they are: strings, booleans, dates, nulls.
This module only reads and checks the *shape* of the input — which columns
exist, that every file agrees on their types — and turns Arrow's parse errors
into messages that name the column. What the columns mean is ``features.py``'s job.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from ..errors import DataError, did_you_mean

# R's write.csv and pandas' to_csv write the row names as a first column without a name
ROW_NUMBER_NAMES = ("", "Unnamed: 0")


def type_kind(t: pa.DataType) -> str:
    """The kind of an Arrow type that decides a column's role: numeric, temporal, string, bool, null, other."""
    if pa.types.is_dictionary(t):
        return type_kind(t.value_type)
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "numeric"
    if pa.types.is_date(t) or pa.types.is_timestamp(t):
        return "temporal"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view",
                                                                          lambda _: False)(t):
        return "string"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_null(t):
        return "null"
    return "other"


def is_csv(path: Path) -> bool:
    return path.suffix.lower() in (".csv", ".txt") and path.is_file()


def table_files(path: str | Path) -> list[Path]:
    """The files of a table: one CSV, one Parquet file, or every Parquet file under a folder."""
    from .sources import parquet_files

    p = Path(path)
    if not p.exists():
        raise DataError(f"table '{path}' does not exist", str(path),
                        "pass a CSV file, a Parquet file or a folder of Parquet files")
    if is_csv(p):
        return [p]
    if p.is_dir() or p.suffix.lower() in (".parquet", ".pq"):
        return parquet_files(p)
    raise DataError(f"unsupported table file type '{p.suffix}'", str(path),
                    "pass a .csv file, a .parquet file or a folder of Parquet files")


def _csv_options(column_types: dict | None):
    import pyarrow.csv as pcsv

    # empty strings are missing values, as in most exports (R writes "" and NA)
    conv = pcsv.ConvertOptions(strings_can_be_null=True, column_types=column_types or {})
    return pcsv.ReadOptions(block_size=1 << 22), conv


def _csv_error(e: Exception, path: Path, names: list[str]) -> DataError:
    """Arrow's 'In CSV column #3: CSV conversion error to int64: invalid value 'abc'' → a named column."""
    msg = str(e)
    m = re.search(r"column #(\d+)", msg)
    col = names[int(m.group(1))] if m and names and int(m.group(1)) < len(names) else None
    if col is not None and "conversion error" in msg:
        v = re.search(r"invalid value '([^']*)'", msg)
        return DataError(f"CSV column '{col}' mixes numbers and text (first rows read as numbers, later "
                         f"'{v.group(1) if v else '?'}')", str(path),
                         f"clean the column, or read it as text with --categorical {col}")
    return DataError(f"CSV parse error in '{path}': {msg.splitlines()[0]}", str(path),
                     "make every row have the same columns")


def schema_of(path: str | Path, column_types: dict | None = None) -> pa.Schema:
    """The table's schema (for CSV: as Arrow infers it from the first block)."""
    files = table_files(path)
    if is_csv(files[0]):
        import pyarrow.csv as pcsv

        ro, co = _csv_options(column_types)
        try:
            return pcsv.open_csv(files[0], read_options=ro, convert_options=co).schema
        except pa.ArrowInvalid as e:
            raise _csv_error(e, files[0], []) from None
    import pyarrow.parquet as pq

    schemas = []
    for f in files:
        try:
            schemas.append((f, pq.read_schema(f)))
        except Exception as e:  # noqa: BLE001
            raise DataError(f"'{f}' is not a readable Parquet file ({type(e).__name__}: {e})", str(f),
                            "re-create the file, or remove it from the folder") from None
    first_file, first = schemas[0]
    for f, s in schemas[1:]:  # files of one table must agree on every shared column's kind
        for field in s:
            if field.name in first.names:
                a, b = type_kind(first.field(field.name).type), type_kind(field.type)
                if a != b and "null" not in (a, b):
                    raise DataError(f"column '{field.name}' is {first.field(field.name).type} in '{first_file.name}' "
                                    f"but {field.type} in '{f.name}'", str(f),
                                    "write every file of the table with the same column types")
    return first


def check_columns(schema: pa.Schema, wanted: list[str], where: str, what: str = "column") -> None:
    for c in wanted:
        if c not in schema.names:
            shown = ", ".join(repr(n) for n in schema.names[:30])
            raise DataError(f"the table has no {what} '{c}'.{did_you_mean(c, schema.names)}", where,
                            f"use one of its columns: {shown}")


def iter_batches(path: str | Path, columns: list[str] | None = None, batch_rows: int = 65536,
                 column_types: dict | None = None) -> Iterator[pa.RecordBatch]:
    """Batches of the table's ``columns`` (all when None), file after file, in order."""
    files = table_files(path)
    for f in files:
        if is_csv(f):
            import pyarrow.csv as pcsv

            ro, co = _csv_options(column_types)
            if columns is not None:
                co.include_columns = columns
            names: list[str] = []
            try:
                reader = pcsv.open_csv(f, read_options=ro, convert_options=co)
                names = reader.schema.names
                for b in reader:
                    yield from _split(b, batch_rows)
            except pa.ArrowInvalid as e:
                raise _csv_error(e, f, names) from None
        else:
            import pyarrow.parquet as pq

            try:
                # buffered column reads without pre-buffering: the default pre-buffer cache grows with
                # the file (332 MiB peak over a 10M-row file vs 175 MiB over 1M; buffered: 192 vs 165)
                pf = pq.ParquetFile(f, buffer_size=1 << 20, pre_buffer=False)
                have = pf.schema_arrow.names
                cols = [c for c in columns if c in have] if columns is not None else None
                for b in pf.iter_batches(batch_size=batch_rows, columns=cols):
                    yield b
            except DataError:
                raise
            except Exception as e:  # noqa: BLE001
                raise DataError(f"'{f}' cannot be read ({type(e).__name__}: {e})", str(f),
                                "re-create the file, or remove it from the folder") from None


def _split(b: pa.RecordBatch, rows: int) -> Iterator[pa.RecordBatch]:
    for s in range(0, b.num_rows, rows):
        yield b.slice(s, rows)
