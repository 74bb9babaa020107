"""Mixed-type tables: ingest (Parquet, CSV), the fitted feature pipeline, bad input, the typed loss.

No Ray here: tiny tables generated in the test, real Parquet/CSV, real pyarrow.
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch

from distclust.data import Manifest
from distclust.data.features import MISSING, OTHER, FeatureOptions, FeaturePipeline, FeatureWarning
from distclust.data.table_ingest import ingest_table
from distclust.data.tables import type_kind
from distclust.errors import DataError


def customers(n=400, seed=0, start=0) -> pd.DataFrame:
    """A small CRM-like table: string ids, numbers with gaps, categories, a bool, a date, a constant."""
    rng = np.random.default_rng(seed)
    seg = rng.integers(0, 3, n)
    income = np.exp(10 + 0.5 * seg + rng.normal(0, 0.3, n))
    return pd.DataFrame({
        "customer_id": [f"c-{start + i:06d}" for i in range(n)],
        "age": (30 + 10 * seg + rng.normal(0, 3, n)).round().astype("int64"),
        "income": pd.array(np.where(rng.random(n) < 0.2, np.nan, income), dtype="Float64"),
        "plan": pd.array(np.where(rng.random(n) < 0.1, None, np.array(["free", "plus", "pro"])[seg]),
                         dtype="string"),
        "is_subscriber": seg == 1,
        "signup": pd.to_datetime("2024-01-01") - pd.to_timedelta(rng.integers(0, 900, n), unit="D"),
        "constant": np.ones(n),
        "nothing": pd.array([None] * n, dtype="Float64"),
        "segment": seg,
    })


@pytest.fixture
def table(tmp_path):
    p = tmp_path / "customers.parquet"
    pq.write_table(pa.Table.from_pandas(customers(), preserve_index=False), p)
    return p


def ingest_quiet(src, out, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = ingest_table(src, out, progress=False, **kw)
    return m, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def test_parquet_table_roles_ids_labels_and_pipeline(table, tmp_path):
    m, warned = ingest_quiet(table, tmp_path / "ds", id_column="customer_id", label_column="segment", shards=3)
    pipe = FeaturePipeline.from_dict(m.stats.pipeline)
    roles = {p["name"]: p["role"] for p in pipe.columns}
    assert roles == {"age": "numeric", "income": "numeric", "plan": "categorical", "is_subscriber": "categorical",
                     "signup": "numeric"}
    assert {d["name"] for d in pipe.dropped} == {"constant", "nothing"}
    assert any("'constant' dropped" in w for w in warned) and any("'nothing' dropped" in w for w in warned)
    # income has gaps → indicator; plan: 3 levels + other + missing; bool: 2 + other + missing
    assert pipe.dim == 2 + 1 + 5 + 4 + 1 == m.dim
    kinds = [b["kind"] for b in pipe.blocks]
    assert kinds == ["numeric", "numeric", "indicator", "categorical", "categorical", "numeric"]
    assert m.extra["id_column"] == "customer_id" and m.n_classes == 3
    t = pq.read_table(tmp_path / "ds")
    assert type_kind(t.schema.field("customer_id").type) == "string" and t.num_rows == 400
    # the shards' features are the pipeline applied to the raw rows, joined on the user's id
    raw = pq.read_table(table)
    X_raw = pipe.transform(raw)
    order = {v: i for i, v in enumerate(raw.column("customer_id").to_pylist())}
    rows = [order[v] for v in t.column("customer_id").to_pylist()]
    np.testing.assert_allclose(np.stack(t.column("features").to_numpy(zero_copy_only=False)), X_raw[rows],
                               atol=1e-6)
    np.testing.assert_array_equal(t.column("label").to_numpy(), raw.column("segment").to_numpy()[rows])
    # one-hot blocks are one-hot; numbers are robust-scaled (median 0) and imputed at 0
    for b in pipe.blocks:
        if b["kind"] == "categorical":
            np.testing.assert_array_equal(X_raw[:, b["start"]:b["end"]].sum(1), 1.0)
    inc = X_raw[:, pipe.feature_names.index("income")]
    miss = X_raw[:, pipe.feature_names.index(f"income={MISSING}")]
    assert (inc[miss == 1] == 0).all() and miss.sum() == raw.column("income").null_count
    assert abs(np.median(inc[miss == 0])) < 0.05
    # round trip through JSON (manifest / artifact)
    again = FeaturePipeline.from_dict(json.loads(json.dumps(pipe.to_dict())))
    np.testing.assert_array_equal(again.transform(raw), X_raw)


def test_csv_table_matches_parquet_and_dates_are_days(table, tmp_path):
    df = customers()
    pacsv.write_csv(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "c.csv")
    m, _ = ingest_quiet(tmp_path / "c.csv", tmp_path / "dc", id_column="customer_id", label_column="segment")
    pipe = FeaturePipeline.from_dict(m.stats.pipeline)
    assert [p["name"] for p in pipe.columns] == ["age", "income", "plan", "is_subscriber", "signup"]
    signup = next(p for p in pipe.columns if p["name"] == "signup")
    days = (df["signup"] - pd.Timestamp("1970-01-01")).dt.days.to_numpy()
    assert abs(signup["center"] - np.median(days)) <= 1.0
    assert pipe.to_dict()["reference_date"] == "1970-01-01"


def test_unseen_levels_nulls_extra_and_missing_columns(table):
    m = ingest_table(table, table.parent / "ds", id_column="customer_id", label_column="segment", progress=False)
    pipe = FeaturePipeline.from_dict(m.stats.pipeline)
    new = pd.DataFrame({"customer_id": ["x", "y"], "age": [None, 50], "income": [1e5, None],
                        "plan": ["enterprise", None], "is_subscriber": [True, None],
                        "signup": pd.to_datetime(["2024-05-01", None]), "extra": ["ignored", "too"]})
    X = pipe.transform(new)
    plan = next(b for b in pipe.blocks if b["column"] == "plan")
    names = pipe.feature_names[plan["start"]:plan["end"]]
    assert names[int(X[0, plan["start"]:plan["end"]].argmax())] == f"plan={OTHER}"
    assert names[int(X[1, plan["start"]:plan["end"]].argmax())] == f"plan={MISSING}"
    assert np.isfinite(X).all()
    with pytest.raises(DataError, match="lacks column 'plan'"):
        pipe.transform(new.drop(columns=["plan"]))
    with pytest.raises(DataError, match="column 'age' holds (large_)?string but the training data had int64"):
        pipe.transform(new.assign(age=["old", "young"]))


def test_high_cardinality_is_hashed_in_bounded_counts(tmp_path):
    n = 20_000
    t = pa.table({"uid": pa.array(np.arange(n)), "code": pa.array([f"v{i}" for i in range(n)]),
                  "x": pa.array(np.random.default_rng(0).normal(size=n))})
    pq.write_table(t, tmp_path / "t.parquet")
    m, warned = ingest_quiet(tmp_path / "t.parquet", tmp_path / "ds", id_column="uid",
                             options=FeatureOptions(hash_above=100, hash_buckets=8))
    pipe = FeaturePipeline.from_dict(m.stats.pipeline)
    code = next(p for p in pipe.columns if p["name"] == "code")
    assert code["role"] == "hashed" and m.dim == 1 + 8 + 1
    assert any("hashed into 8 buckets" in w for w in warned)
    X = pipe.transform(t)
    b = next(b for b in pipe.blocks if b["column"] == "code")
    assert b["end"] - b["start"] == 9
    counts = X[:, b["start"]:b["end"] - 1].sum(0)
    assert counts.sum() == n and counts.min() > n / 8 * 0.8       # spread over the buckets
    # the same value always lands in the same bucket (fixed hash key), in a fresh pipeline too
    again = FeaturePipeline.from_dict(pipe.to_dict()).transform(t.slice(5, 3))
    np.testing.assert_array_equal(again, X[5:8])


def test_quantile_and_log1p_transforms(tmp_path):
    rng = np.random.default_rng(0)
    heavy = rng.lognormal(3, 1.5, 5000)
    t = pa.table({"k": pa.array(np.arange(5000)), "spend": pa.array(heavy), "flat": pa.array(rng.normal(size=5000))})
    pq.write_table(t, tmp_path / "t.parquet")
    m = ingest_table(tmp_path / "t.parquet", tmp_path / "a", id_column="k", progress=False)
    plans = {p["name"]: p for p in FeaturePipeline.from_dict(m.stats.pipeline).columns}
    assert plans["spend"]["transform"] == "log1p" and plans["flat"]["transform"] == "none"
    m = ingest_table(tmp_path / "t.parquet", tmp_path / "b", id_column="k", progress=False,
                     options=FeatureOptions(numeric_transform="quantile"))
    X = FeaturePipeline.from_dict(m.stats.pipeline).transform(t)
    # normal scores, robust-scaled: median 0 and the IQR of a standard normal (1.349)
    assert abs(np.median(X[:, 0])) < 0.05 and 1.25 < np.subtract(*np.percentile(X[:, 0], [75, 25])) < 1.45


# --------------------------------------------------------------------------- bad input
def _no_output(tmp_path, name="bad"):
    return not (tmp_path / name).exists() and not list(tmp_path.glob(f".{name}.tmp-*"))


def test_duplicate_and_null_ids_name_examples(tmp_path):
    df = customers(50)
    df.loc[7, "customer_id"] = df.loc[3, "customer_id"]
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "d.parquet")
    with pytest.raises(DataError, match=r"1 duplicate value\(s\), e.g. 'c-000003' \(2×\)"):
        ingest_table(tmp_path / "d.parquet", tmp_path / "bad", id_column="customer_id", progress=False)
    df = customers(50)
    df.loc[[4, 9], "customer_id"] = None
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "n.parquet")
    with pytest.raises(DataError, match=r"empty in 2 row\(s\).*rows 4, 9"):
        ingest_table(tmp_path / "n.parquet", tmp_path / "bad", id_column="customer_id", progress=False)
    with pytest.raises(DataError, match="no id or label column 'cust_id'.*Did you mean 'customer_id'"):
        ingest_table(tmp_path / "n.parquet", tmp_path / "bad", id_column="cust_id", progress=False)
    assert _no_output(tmp_path)


def test_type_differs_between_shards(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(pa.Table.from_pandas(customers(30), preserve_index=False), folder / "a.parquet")
    b = customers(30, start=100)
    b["age"] = b["age"].astype(str)
    pq.write_table(pa.Table.from_pandas(b, preserve_index=False), folder / "b.parquet")
    with pytest.raises(DataError, match="column 'age' is int64 in 'a.parquet' but (large_)?string in 'b.parquet'"):
        ingest_table(folder, tmp_path / "bad", id_column="customer_id", progress=False)
    assert _no_output(tmp_path)


def test_csv_column_of_numbers_and_text(tmp_path):
    rows = "\n".join(f"r{i},{i * 1.5},{'abc' if i % 7 == 0 else i}" for i in range(60))
    (tmp_path / "m.csv").write_text("rid,x,size\n" + rows + "\n")
    with pytest.raises(DataError, match="column 'size' mixes numbers and text.*'abc'.*--categorical size"):
        ingest_table(tmp_path / "m.csv", tmp_path / "bad", id_column="rid", progress=False)
    assert _no_output(tmp_path)
    m = ingest_table(tmp_path / "m.csv", tmp_path / "ok", id_column="rid", progress=False,
                     options=FeatureOptions(categorical=["size"]))
    assert next(p for p in m.stats.pipeline["columns"] if p["name"] == "size")["role"] == "categorical"


def test_no_usable_feature_column(tmp_path):
    t = pa.table({"k": pa.array(["a", "b", "c"]), "same": pa.array([1, 1, 1]), "gone": pa.nulls(3, pa.float64())})
    pq.write_table(t, tmp_path / "t.parquet")
    with pytest.raises(DataError, match="no usable feature column.*'same': constant.*'gone': every value is missing"):
        ingest_quiet(tmp_path / "t.parquet", tmp_path / "bad", id_column="k")
    assert _no_output(tmp_path)


def test_numeric_ingest_unchanged_and_manifest_backward_compatible(tmp_path):
    from distclust.data import ingest

    X = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    np.savez(tmp_path / "a.npz", X=X)
    m = ingest(tmp_path / "a.npz", tmp_path / "ds", shards=2, progress=False)
    assert m.stats.pipeline is None
    raw = json.loads((tmp_path / "ds" / "_manifest.json").read_text())
    raw["stats"].pop("pipeline")  # a manifest written before tables existed
    (tmp_path / "ds" / "_manifest.json").write_text(json.dumps(raw))
    assert Manifest.load(tmp_path / "ds").stats.pipeline is None


# --------------------------------------------------------------------------- typed loss
def test_typed_reconstruction_loss_per_block():
    from distclust.models.base import Normalizer
    from distclust.models.networks import BlockLayout, require_layout, typed_reconstruction_loss

    blocks = [{"kind": "numeric", "start": 0, "end": 1}, {"kind": "indicator", "start": 1, "end": 2},
              {"kind": "categorical", "start": 2, "end": 5}, {"kind": "categorical", "start": 5, "end": 7}]
    lay = BlockLayout(blocks)
    x = torch.tensor([[0.5, 1.0, 0, 1, 0, 1, 0]])
    xh = torch.tensor([[1.5, 0.3, 2.0, -1.0, 0.0, 0.2, 0.4]])
    expect = 0.5 * 1.0 ** 2 + torch.nn.functional.softplus(-torch.tensor(0.3)) \
        - torch.log_softmax(torch.tensor([2.0, -1.0, 0.0]), 0)[1] - torch.log_softmax(torch.tensor([0.2, 0.4]), 0)[0]
    torch.testing.assert_close(typed_reconstruction_loss(xh, x, x, lay), expect.reshape(1))
    with pytest.raises(DataError, match="recon: typed needs the column layout"):
        require_layout(Normalizer(7), "typed", "model.recon")
    assert require_layout(Normalizer(7, {"blocks": blocks}), "typed", "model.recon") is not None


@pytest.mark.slow
def test_million_distinct_values_are_hashed(tmp_path):
    """1M distinct ids in a categorical column: hashed, with counting stopped at the threshold."""
    import resource

    n = 1_000_000
    t = pa.table({"k": pa.array(np.arange(n)), "code": pa.array(np.char.add("v", np.arange(n).astype(str))),
                  "x": pa.array(np.random.default_rng(0).normal(size=n))})
    pq.write_table(t, tmp_path / "t.parquet", row_group_size=100_000)
    del t
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    m, _ = ingest_quiet(tmp_path / "t.parquet", tmp_path / "ds", id_column="k")
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert next(p for p in m.stats.pipeline["columns"] if p["name"] == "code")["role"] == "hashed"
    assert grown_mib < 1000, grown_mib


def test_column_dropout_hides_whole_columns():
    """A number and its missing indicator, or a whole one-hot block, are hidden together."""
    from distclust.models.networks import BlockLayout

    blocks = [{"column": "a", "kind": "numeric", "start": 0, "end": 1},
              {"column": "a", "kind": "indicator", "start": 1, "end": 2},
              {"column": "b", "kind": "categorical", "start": 2, "end": 5}]
    lay = BlockLayout(blocks)
    assert lay.n_columns == 2 and lay.column.tolist() == [0, 0, 1, 1, 1]
    torch.manual_seed(0)
    x = torch.ones(2000, 5)
    out = lay.drop_columns(x, 0.5)
    assert (out[:, 0] == out[:, 1]).all() and (out[:, 2:] == out[:, 2:3]).all()
    assert 0.45 < out[:, 0].mean() < 0.55 and 0.45 < out[:, 2].mean() < 0.55


def test_csv_text_after_the_first_block_names_the_column(tmp_path):
    """Arrow infers CSV types from the first 4 MiB; text further down is a named error, not a traceback."""
    n = 300_000
    ids = np.char.add("r", np.arange(n).astype(str))
    size = (np.arange(n) % 50).astype(str).astype(object)
    size[n - 5] = "abc"
    pd.DataFrame({"rid": ids, "x": np.arange(n) * 0.5, "size": size}).to_csv(tmp_path / "late.csv", index=False)
    assert (tmp_path / "late.csv").stat().st_size > 4 << 20
    with pytest.raises(DataError, match="CSV column 'size' mixes numbers and text.*later 'abc'.*--categorical size"):
        ingest_table(tmp_path / "late.csv", tmp_path / "bad", id_column="rid", progress=False)
    assert _no_output(tmp_path)


def test_profile_without_ray_flags_levels_and_lift(tmp_path):
    """compute_profile on a hand-made assignment: a 0/1 flag that defines the segments separates them
    fully (one bin per value, not deciles), lifts and medians are exact, sizes count every row."""
    from distclust.report.profile import compute_profile, write_profile

    n = 300
    seg = np.arange(n) % 3
    table = pa.table({"cid": [f"k{i}" for i in range(n)], "flag": (seg == 0).astype(np.int64),
                      "spend": (seg * 10.0 + 1).tolist(), "tier": np.array(["a", "b", "c"])[seg].tolist()})
    pq.write_table(table, tmp_path / "t.parquet")
    (tmp_path / "as").mkdir()
    pq.write_table(pa.table({"cid": table.column("cid"), "cluster": seg, "distance": np.zeros(n, np.float32)}),
                   tmp_path / "as" / "part.parquet")
    prof = compute_profile(tmp_path / "as", tmp_path / "t.parquet", sample=200)
    assert [s["size"] for s in prof["segments"]] == [100, 100, 100] and prof["sampled_rows"] == 200
    sep = {(r["segment"], r["column"]): r["score"] for r in prof["separation"]}
    assert sep[(0, "flag")] == pytest.approx(1.0) and sep[(0, "tier")] == pytest.approx(1.0)
    med = {(r["segment"], r["column"]): r["median"] for r in prof["numeric"]}
    assert med[(2, "spend")] == 21.0
    tier0 = next(r for r in prof["categorical"] if r["segment"] == 0 and r["column"] == "tier")["levels"][0]
    assert tier0["level"] == "a" and tier0["share"] == 1.0 and 2.5 < tier0["lift"] < 3.6
    page = write_profile(tmp_path / "as", tmp_path / "t.parquet", sample=200)
    assert page.is_file() and (page.parent / "separation.csv").is_file()


def test_id_key_spill_finds_every_duplicate_one_bucket_at_a_time(tmp_path):
    """The ingest's duplicate-id check spills 64-bit keys to 256 bucket files (bounded memory at
    10M+ rows) and still counts every repeat, whatever bucket and batch it falls in."""
    from distclust.data.table_ingest import IdKeySpill

    rng = np.random.default_rng(0)
    keys = rng.integers(0, 2**63, 50_000, dtype=np.int64).view(np.uint64) * np.uint64(2) + np.uint64(1)
    repeats = keys[[3, 17_000, 49_999]]
    with IdKeySpill(tmp_path) as spill:
        for part in np.array_split(np.concatenate([keys, repeats, repeats[:1]]), 7):
            spill.add(part)
        extra, dup = spill.duplicates()
    assert extra == 4 and sorted(dup.tolist()) == sorted(repeats.tolist())
    assert len(list(tmp_path.glob("ids-*.u64"))) == IdKeySpill.BUCKETS
