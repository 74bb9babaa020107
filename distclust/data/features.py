"""The feature pipeline of a mixed-type table: fitted in one streaming pass, applied anywhere.

Column roles come from Arrow types: integer/float/decimal → numeric; date/timestamp →
numeric (days since ``REFERENCE_DATE``); string, dictionary, boolean → categorical.
Encoding, per column:

- numeric: optional heavy-tail transform (``log1p`` on the magnitude, or a ``quantile``
  map to normal scores), then robust scaling (median, IQR/1.349), clipped to ±``CLIP``;
  missing values → the median (0 after scaling) plus a 0/1 missing-indicator column when
  the training data had any;
- categorical: one-hot of the most frequent levels + ``other`` + ``missing``;
- high cardinality (more than ``hash_above`` distinct values): one-hot of a stable hash
  bucket + ``missing`` — counting stops at the threshold, so a million distinct values
  cost no more memory than a thousand;
- constant and all-null columns are dropped, with a warning.

Statistics are exact counts from ``pyarrow.compute`` per batch plus quantiles from a
seeded uniform sample of rows (bottom-k of random keys: bounded memory for any row count).
The fitted pipeline is a JSON-able dict (``to_dict``), stored in the dataset manifest and
in the model artifact, so training, ``assign`` and ``predict`` encode rows identically.
``blocks`` is the layout the type-aware reconstruction loss reads
(``models.networks.typed_reconstruction_loss``).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import DataError
from .tables import ROW_NUMBER_NAMES, type_kind

REFERENCE_DATE = "1970-01-01"   # temporal columns become days since this date
CLIP = 8.0                      # robust-scaled numbers are clipped to ±CLIP (outliers do not dominate MSE)
OTHER, MISSING = "__other__", "__missing__"
PIPELINE_VERSION = 1
NUMBER_RE = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"
HASH_KEY = "distclust-hash-0"   # 16 bytes: pandas' siphash key, fixed so buckets never move


class FeatureWarning(UserWarning):
    """A column was dropped or changed role while fitting the pipeline."""


@dataclass
class FeatureOptions:
    """How columns are encoded (CLI flags of ``distclust ingest``)."""

    max_levels: int = 64                 # most frequent levels one-hot encoded per categorical column
    hash_above: int = 1000               # more distinct values than this → hashing
    hash_buckets: int = 32
    numeric_transform: str = "auto"      # auto (log1p for non-negative columns with skewness > 1) | none | log1p | quantile
    sample_rows: int = 100_000           # rows sampled (seeded) for medians, IQRs and quantiles
    seed: int = 0
    categorical: list[str] = field(default_factory=list)   # numeric-typed columns to treat as categorical

    def check(self) -> None:
        for k in ("max_levels", "hash_above", "hash_buckets", "sample_rows"):
            if getattr(self, k) < 1:
                raise DataError(f"{k} is {getattr(self, k)}", "feature options", f"use a {k} of 1 or more")
        if self.numeric_transform not in ("auto", "none", "log1p", "quantile"):
            raise DataError(f"numeric transform '{self.numeric_transform}' is unknown", "--numeric-transform",
                            "use auto, none, log1p or quantile")


# --------------------------------------------------------------------------- column values
def numeric_values(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """float64 values of a numeric or temporal column, NaN where missing (or non-finite)."""
    t = col.type
    if pa.types.is_dictionary(t):
        col = col.dictionary_decode() if isinstance(col, pa.Array) else pc.cast(col, t.value_type)
        t = col.type
    if pa.types.is_null(t):
        return np.full(len(col), np.nan)
    if pa.types.is_date32(t):
        x = pc.cast(col, pa.int32()).to_numpy(zero_copy_only=False).astype(np.float64)
    elif pa.types.is_date64(t):
        x = pc.cast(col, pa.int64()).to_numpy(zero_copy_only=False).astype(np.float64) / 86_400_000.0
    elif pa.types.is_timestamp(t):
        per_day = {"s": 86_400, "ms": 86_400_000, "us": 86_400_000_000, "ns": 86_400_000_000_000}[t.unit]
        x = pc.cast(pc.cast(col, pa.timestamp(t.unit)), pa.int64()).to_numpy(zero_copy_only=False)
        x = x.astype(np.float64) / per_day
    else:
        x = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
    x = np.array(x, dtype=np.float64, copy=True)
    nulls = pc.is_null(col).to_numpy(zero_copy_only=False)
    x[nulls | ~np.isfinite(x)] = np.nan
    return x


def string_values(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A categorical column as strings (booleans → 'true'/'false'), nulls kept."""
    if pa.types.is_dictionary(col.type):
        col = pc.cast(col, col.type.value_type)
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_null(col.type):
        return pa.nulls(len(col), pa.string())
    return pc.cast(col, pa.string())


def hash_buckets(values: pa.Array, buckets: int) -> np.ndarray:
    """Stable bucket of each string (pandas' siphash with a fixed key); -1 where missing."""
    import pandas as pd

    arr = values.to_numpy(zero_copy_only=False)
    nulls = pc.is_null(values).to_numpy(zero_copy_only=False)
    filled = np.where(nulls, "", arr).astype(object)
    h = pd.util.hash_array(filled, hash_key=HASH_KEY, categorize=False)
    out = (h % np.uint64(buckets)).astype(np.int64)
    out[nulls] = -1
    return out


def _parse_dates(col, name: str, where: str):
    """ISO-8601 text → timestamps, for a date column that arrived as text."""
    try:
        return pc.cast(col, pa.timestamp("ns"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise DataError(f"column '{name}' holds text that is not an ISO date ({str(e).splitlines()[0]})", where,
                        f"pass '{name}' as dates (e.g. pandas.to_datetime) or ISO text such as 2024-03-01") from None


# --------------------------------------------------------------------------- fitting
class _Sample:
    """Uniform sample of ``cap`` rows over a stream: keep the rows with the smallest random keys."""

    def __init__(self, cap: int, width: int, seed: int):
        self.cap, self.rng = cap, np.random.default_rng(seed)
        self.keys, self.rows = np.zeros(0), np.zeros((0, width))

    def add(self, X: np.ndarray) -> None:
        keys = self.rng.random(len(X))
        if len(self.keys) >= self.cap:
            keep = keys < self.keys.max()
            keys, X = keys[keep], X[keep]
        self.keys, self.rows = np.concatenate([self.keys, keys]), np.concatenate([self.rows, X])
        if len(self.keys) > self.cap:
            idx = np.argpartition(self.keys, self.cap - 1)[:self.cap]
            self.keys, self.rows = self.keys[idx], self.rows[idx]


class PipelineFitter:
    """Accumulates one pass of batches; ``result()`` gives the fitted ``FeaturePipeline``."""

    def __init__(self, schema: pa.Schema, columns: list[str], options: FeatureOptions, where: str):
        options.check()
        self.opt, self.where = options, where
        self.roles: dict[str, str] = {}
        self.kinds: dict[str, str] = {}
        self.types: dict[str, str] = {}
        self.dropped: list[dict] = []
        for c in columns:
            t = schema.field(c).type
            kind = type_kind(t)
            self.kinds[c], self.types[c] = kind, str(t)
            if c in ROW_NUMBER_NAMES:
                self.dropped.append({"name": c, "reason": "unnamed column (row numbers written by R or pandas)"})
            elif kind == "other":
                self.dropped.append({"name": c, "reason": f"type {t} is neither a number, a date nor a category"})
            elif c in options.categorical or kind in ("string", "bool"):
                self.roles[c] = "categorical"
            elif kind == "null":
                self.dropped.append({"name": c, "reason": "every value is missing"})
            else:
                self.roles[c] = "numeric"
        self.numeric = [c for c, r in self.roles.items() if r == "numeric"]
        self.categorical = [c for c, r in self.roles.items() if r == "categorical"]
        self.n = 0
        self.nulls = dict.fromkeys(self.roles, 0)
        self.lo = dict.fromkeys(self.numeric, math.inf)
        self.hi = dict.fromkeys(self.numeric, -math.inf)
        self.sample = _Sample(options.sample_rows, len(self.numeric), options.seed)
        self.counts: dict[str, dict | None] = {c: {} for c in self.categorical}   # None: over hash_above
        # text columns whose values mostly look like numbers: a CSV column mixing numbers and text
        self.numberlike = {c: [0, 0, None] for c in self.categorical
                           if self.kinds[c] == "string" and c not in options.categorical}

    def update(self, batch: pa.RecordBatch | pa.Table) -> None:
        n = batch.num_rows
        if n == 0:
            return
        self.n += n
        cols = []
        for c in self.numeric:
            kind = type_kind(batch.column(c).type)
            if kind not in ("numeric", "temporal", "null"):
                raise DataError(f"column '{c}' holds {batch.column(c).type} here but numbers earlier in the table",
                                self.where, f"give '{c}' one type in every file, or exclude it with --exclude {c}")
            x = numeric_values(batch.column(c))
            finite = ~np.isnan(x)
            self.nulls[c] += int((~finite).sum())
            if finite.any():
                self.lo[c] = min(self.lo[c], float(x[finite].min()))
                self.hi[c] = max(self.hi[c], float(x[finite].max()))
            cols.append(x)
        if cols:
            self.sample.add(np.stack(cols, axis=1))
        for c in self.categorical:
            col = batch.column(c)
            self.nulls[c] += col.null_count
            if c in self.numberlike:
                s = string_values(col)
                looks = pc.match_substring_regex(s, NUMBER_RE)
                acc = self.numberlike[c]
                acc[0] += pc.sum(looks).as_py() or 0
                acc[1] += len(s) - s.null_count
                if acc[2] is None:
                    odd = pc.filter(s, pc.invert(pc.fill_null(looks, True)))
                    acc[2] = odd[0].as_py() if len(odd) else None
            if self.counts[c] is None:
                continue
            vc = pc.value_counts(string_values(col))
            counts = self.counts[c]
            for v, k in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()):
                if v is not None:
                    counts[v] = counts.get(v, 0) + k
            if len(counts) > self.opt.hash_above:
                self.counts[c] = None   # high cardinality: stop counting, hash instead

    def result(self) -> "FeaturePipeline":
        for c, (numeric, nonnull, example) in self.numberlike.items():
            if nonnull and numeric < nonnull and numeric >= 0.5 * nonnull:
                raise DataError(f"column '{c}' mixes numbers and text ({numeric} of {nonnull} values are "
                                f"numbers, others like {example!r})", self.where,
                                f"clean the column so it holds only numbers, or pass --categorical {c} to "
                                "treat every value as a category")
        plans = []
        for j, c in enumerate(self.numeric):
            nulls = self.nulls[c]
            if nulls == self.n:
                self.dropped.append({"name": c, "reason": "every value is missing"})
                continue
            if self.lo[c] == self.hi[c] and nulls == 0:
                self.dropped.append({"name": c, "reason": f"constant (every value is {self.lo[c]:g})"})
                continue
            s = self.sample.rows[:, j]
            s = s[~np.isnan(s)]
            plans.append(_fit_numeric(c, self.kinds[c], self.types[c], s, self.lo[c], nulls, self.opt))
        for c in self.categorical:
            counts, nulls = self.counts[c], self.nulls[c]
            if nulls == self.n:
                self.dropped.append({"name": c, "reason": "every value is missing"})
                continue
            if counts is None:
                plans.append({"name": c, "role": "hashed", "kind": self.kinds[c], "type": self.types[c],
                              "buckets": self.opt.hash_buckets})
                warnings.warn(f"column '{c}' has more than {self.opt.hash_above} distinct values: "
                              f"hashed into {self.opt.hash_buckets} buckets", FeatureWarning, stacklevel=2)
                continue
            if len(counts) <= 1 and nulls == 0:
                self.dropped.append({"name": c, "reason": f"constant (every value is {next(iter(counts), '')!r})"})
                continue
            top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:self.opt.max_levels]
            plans.append({"name": c, "role": "categorical", "kind": self.kinds[c], "type": self.types[c],
                          "levels": [v for v, _ in top], "n_distinct": len(counts),
                          "other_share": 1 - sum(k for _, k in top) / max(self.n - nulls, 1)})
        for d in self.dropped:
            warnings.warn(f"column '{d['name']}' dropped: {d['reason']}", FeatureWarning, stacklevel=2)
        if not plans:
            raise DataError("the table has no usable feature column (" +
                            ("; ".join(f"{d['name']!r}: {d['reason']}" for d in self.dropped[:6]) or "none left")
                            + ")", self.where, "pass a table with at least one numeric, date or categorical "
                                               "column that is not constant, besides the id and label columns")
        order = {c: i for i, c in enumerate(self.roles)}
        plans.sort(key=lambda p: order[p["name"]])
        return FeaturePipeline(plans, self.dropped, rows=self.n, null_counts=self.nulls)


def _fit_numeric(name: str, kind: str, typ: str, s: np.ndarray, lo: float, nulls: int,
                 opt: FeatureOptions) -> dict:
    transform = opt.numeric_transform
    if transform == "auto":
        skew = 0.0
        if len(s) > 2 and s.std() > 0:
            skew = float(((s - s.mean()) ** 3).mean() / s.std() ** 3)
        transform = "log1p" if lo >= 0 and skew > 1.0 else "none"
    plan = {"name": name, "role": "numeric", "kind": kind, "type": typ, "transform": transform,
            "indicator": nulls > 0, "missing_share": None}
    if transform == "quantile":
        grid = np.unique(np.quantile(s, np.linspace(0, 1, 101))) if len(s) else np.array([0.0])
        plan["quantiles"] = grid.tolist()
    t = _transform_values(plan, s)
    med = float(np.median(t)) if len(t) else 0.0
    q1, q3 = (np.quantile(t, [0.25, 0.75]) if len(t) else (0.0, 0.0))
    scale = float(q3 - q1) / 1.349
    if not scale > 1e-12:
        scale = float(t.std()) if len(t) else 0.0
    if not scale > 1e-12:
        scale = 1.0
    plan.update(center=med, scale=scale)
    return plan


def _transform_values(plan: dict, x: np.ndarray) -> np.ndarray:
    if plan["transform"] == "log1p":
        return np.sign(x) * np.log1p(np.abs(x))    # symmetric, so a stray negative value stays finite
    if plan["transform"] == "quantile":
        from scipy.special import ndtri

        grid = np.asarray(plan["quantiles"])
        if len(grid) < 2:
            return np.zeros_like(x)
        u = np.interp(x, grid, np.linspace(0, 1, len(grid)))
        return ndtri(np.clip(u, 0.001, 0.999))
    return x


# --------------------------------------------------------------------------- the pipeline
class FeaturePipeline:
    """Fitted column encodings; ``transform`` turns a raw Arrow/pandas table into float32 features."""

    def __init__(self, columns: list[dict], dropped: list[dict], rows: int = 0, null_counts: dict | None = None,
                 id_column: str | None = None, label_column: str | None = None):
        self.columns, self.dropped, self.rows = columns, dropped, rows
        self.id_column, self.label_column = id_column, label_column
        self.null_counts = null_counts or {}
        self.blocks: list[dict] = []
        self.feature_names: list[str] = []
        for p in columns:
            start = len(self.feature_names)
            if p["role"] == "numeric":
                self.feature_names.append(p["name"])
                self.blocks.append({"column": p["name"], "kind": "numeric", "start": start, "end": start + 1})
                if p["indicator"]:
                    self.feature_names.append(f"{p['name']}={MISSING}")
                    self.blocks.append({"column": p["name"], "kind": "indicator", "start": start + 1,
                                        "end": start + 2})
                    if self.rows:
                        p["missing_share"] = self.null_counts.get(p["name"], 0) / self.rows
                continue
            slots = ([f"{p['name']}={v}" for v in p["levels"]] + [f"{p['name']}={OTHER}"]
                     if p["role"] == "categorical" else [f"{p['name']}#{b}" for b in range(p["buckets"])])
            self.feature_names.extend(slots + [f"{p['name']}={MISSING}"])
            self.blocks.append({"column": p["name"], "kind": "categorical", "start": start,
                                "end": len(self.feature_names)})

    @property
    def dim(self) -> int:
        return len(self.feature_names)

    @property
    def input_columns(self) -> list[str]:
        return [p["name"] for p in self.columns]

    # -- serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"version": PIPELINE_VERSION, "reference_date": REFERENCE_DATE, "clip": CLIP,
                "id_column": self.id_column, "label_column": self.label_column, "rows": self.rows,
                "columns": self.columns, "dropped": self.dropped, "blocks": self.blocks,
                "feature_names": self.feature_names, "dim": self.dim}

    @classmethod
    def from_dict(cls, d: dict) -> "FeaturePipeline":
        if d.get("version", 0) > PIPELINE_VERSION:
            raise DataError(f"feature pipeline version {d.get('version')} is newer than this distclust reads",
                            "feature pipeline", "upgrade distclust")
        p = cls(d["columns"], d.get("dropped", []), rows=0, id_column=d.get("id_column"),
                label_column=d.get("label_column"))
        p.rows = d.get("rows", 0)
        return p

    # -- applying -----------------------------------------------------------------------
    def csv_column_types(self) -> dict:
        """Types to force when reading a CSV for this pipeline: categories as text, so codes like
        '007' or a column that happens to hold only digits in a small file keep their meaning."""
        return {p["name"]: pa.bool_() if p["kind"] == "bool" else pa.string()
                for p in self.columns if p["role"] != "numeric" and p["kind"] in ("bool", "string")}

    def transform(self, table, where: str = "input table") -> np.ndarray:
        """(n, dim) float32 features of a pyarrow Table/RecordBatch or pandas DataFrame.

        Extra columns are ignored; a missing column or a column whose kind changed since
        training (e.g. text where the training data had numbers) is a ``DataError``.
        """
        if not isinstance(table, (pa.Table, pa.RecordBatch)):
            try:
                table = pa.Table.from_pandas(table, preserve_index=False)
            except Exception as e:  # noqa: BLE001
                raise DataError(f"cannot read the input as a table ({type(e).__name__}: {e})", where,
                                "pass a pandas DataFrame or a pyarrow Table with the training columns") from None
        self.check_schema(table.schema, where)
        n = table.num_rows
        X = np.zeros((n, self.dim), np.float32)
        rows = np.arange(n)
        for p, start in zip(self.columns, self._starts()):
            col = table.column(p["name"])
            if p["role"] == "numeric":
                if p["kind"] == "temporal" and type_kind(col.type) == "string":
                    col = _parse_dates(col, p["name"], where)
                x = numeric_values(col)
                miss = np.isnan(x)
                v = (_transform_values(p, np.where(miss, 0.0, x)) - p["center"]) / p["scale"]
                v = np.clip(v, -CLIP, CLIP)
                v[miss] = 0.0       # median imputation (the median is 0 after scaling)
                X[:, start] = v
                if p["indicator"]:
                    X[:, start + 1] = miss
                continue
            s = string_values(col)
            nulls = pc.is_null(s).to_numpy(zero_copy_only=False)
            if p["role"] == "categorical":
                L = len(p["levels"])
                idx = pc.index_in(s, value_set=pa.array(p["levels"], pa.string()))
                code = pc.fill_null(idx, L).to_numpy(zero_copy_only=False).astype(np.int64)  # unseen → other
                code[nulls] = L + 1
            else:
                B = p["buckets"]
                code = hash_buckets(s, B)
                code[nulls] = B
            X[rows, start + code] = 1.0
        return X

    def check_schema(self, schema: pa.Schema, where: str) -> None:
        """Every training column present, with the kind of type it had (numbers stay numbers)."""
        missing = [c for c in self.input_columns if c not in schema.names]
        if missing:
            raise DataError(f"the table lacks column{'s' if len(missing) > 1 else ''} "
                            f"{', '.join(repr(c) for c in missing[:8])} that the model was trained on", where,
                            "pass a table with every training column (extra columns are ignored)")
        for p in self.columns:
            t = schema.field(p["name"]).type
            kind = type_kind(t)
            ok = kind in ("numeric", "temporal", "null") if p["role"] == "numeric" else kind in (p["kind"], "null")
            ok = ok or (p["kind"] == "temporal" and kind == "string")   # ISO dates read as text (pandas read_csv)
            if not ok:
                had = f"{p['type']} (numbers)" if p["role"] == "numeric" else p["type"]
                raise DataError(f"column '{p['name']}' holds {t} but the training data had {had}", where,
                                f"give '{p['name']}' the type it had in the training data")

    def _starts(self) -> list[int]:
        starts, seen = [], set()
        for b in self.blocks:
            if b["column"] not in seen:
                seen.add(b["column"])
                starts.append(b["start"])
        return starts

    def describe(self) -> str:
        """One line per column: how it is encoded (printed by ``distclust ingest``)."""
        lines = []
        for p in self.columns:
            if p["role"] == "numeric":
                lines.append(f"  {p['name']:<24} numeric ({p['type']}), {p['transform']}, robust-scaled"
                             + (", + missing indicator" if p["indicator"] else ""))
            elif p["role"] == "categorical":
                lines.append(f"  {p['name']:<24} categorical ({p['type']}), {len(p['levels'])} levels"
                             f" + other + missing" + (f" ({p['n_distinct']} distinct)"
                                                      if p["n_distinct"] > len(p["levels"]) else ""))
            else:
                lines.append(f"  {p['name']:<24} hashed ({p['type']}), {p['buckets']} buckets + missing")
        for d in self.dropped:
            lines.append(f"  {d['name'] or '(unnamed)':<24} dropped: {d['reason']}")
        return "\n".join(lines)


def options_dict(o: FeatureOptions) -> dict:
    return asdict(o)
