"""Ingest round trips: every accepted source → sharded Parquet whose ids, values and labels survive."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distclust.data import Manifest, ingest
from distclust.errors import DataError, OutputExistsError


def read_back(root):
    t = pq.read_table(root).to_pandas().sort_values("id").reset_index(drop=True)
    X = np.stack(t["features"].to_numpy()).astype(np.float32)
    return t["id"].to_numpy(), X, (t["label"].to_numpy() if "label" in t else None)


def data(n=257, d=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, 3, n)


def test_npz_round_trip_and_manifest(tmp_path):
    X, y = data()
    np.savez(tmp_path / "a.npz", X=X, y=y)
    m = ingest(tmp_path / "a.npz", tmp_path / "out", shards=4, progress=False)
    ids, X2, y2 = read_back(tmp_path / "out")
    assert ids.tolist() == list(range(len(X)))
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(y2, y)
    m2 = Manifest.load(tmp_path / "out")
    assert (m2.rows, m2.dim, m2.has_label, m2.n_classes) == (257, 5, True, 3)
    assert sum(s["rows"] for s in m2.shards) == 257 and len(m2.shards) == 4
    np.testing.assert_allclose(m2.stats.mean, X.mean(0), atol=1e-5)
    np.testing.assert_allclose(m2.stats.std, X.std(0), atol=1e-5)
    np.testing.assert_allclose(m2.stats.max, X.max(0))
    assert m.rows == m2.rows


def test_parquet_to_parquet_streams_in_chunks_and_keeps_ids(tmp_path):
    X, y = data(1000, 3)
    ids = np.arange(1000) * 7 + 11  # user ids are kept, not renumbered
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):  # a folder of several files with scalar feature columns
        sl = slice(i * 334, (i + 1) * 334)
        pq.write_table(pa.table({"id": ids[sl], "f0": X[sl, 0], "f1": X[sl, 1], "f2": X[sl, 2], "label": y[sl]}),
                       src / f"p{i}.parquet", row_group_size=50)
    ingest(src, tmp_path / "out", shards=3, chunk_rows=64, progress=False)  # many chunks
    got_ids, X2, y2 = read_back(tmp_path / "out")
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(y2, y)


def test_csv_with_string_labels_and_npy(tmp_path):
    X, y = data(50, 2)
    names = np.array(["cat", "dog", "eel"])[y]
    pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "label": names}).to_csv(tmp_path / "a.csv", index=False)
    m = ingest(tmp_path / "a.csv", tmp_path / "out", shards=2, progress=False)
    _, X2, codes = read_back(tmp_path / "out")
    np.testing.assert_allclose(X2, X, rtol=1e-6)
    assert m.label_names is not None and [m.label_names[c] for c in codes] == names.tolist()
    np.save(tmp_path / "a.npy", X)
    m = ingest(tmp_path / "a.npy", tmp_path / "out2", shards=2, progress=False)
    assert not m.has_label and m.rows == 50


def test_bad_sources_give_clear_errors_and_leave_nothing(tmp_path):
    X, _ = data(20, 2)
    X[7, 1] = np.nan
    np.savez(tmp_path / "nan.npz", X=X)
    with pytest.raises(DataError, match="row 7.*NaN"):
        ingest(tmp_path / "nan.npz", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))
    pq.write_table(pa.table({"id": [1, 2, 2], "x": [0.1, 0.2, 0.3]}), tmp_path / "dup.parquet")
    with pytest.raises(DataError, match="duplicates"):
        ingest(tmp_path / "dup.parquet", tmp_path / "out", progress=False)
    pq.write_table(pa.table({"x": [0.1], "name": ["a"]}), tmp_path / "str.parquet")
    with pytest.raises(DataError, match="'name' is string, not numeric"):
        ingest(tmp_path / "str.parquet", tmp_path / "out", progress=False)
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match="not a readable Parquet"):
        ingest(tmp_path / "bad.parquet", tmp_path / "out", progress=False)
    with pytest.raises(DataError, match="does not exist"):
        ingest(tmp_path / "missing.npz", tmp_path / "out", progress=False)
    np.savez(tmp_path / "empty.npz", X=np.zeros((0, 3), np.float32))
    with pytest.raises(DataError, match="no rows"):
        ingest(tmp_path / "empty.npz", tmp_path / "out", progress=False)
    np.savez(tmp_path / "ok.npz", X=data(10, 2)[0])
    ingest(tmp_path / "ok.npz", tmp_path / "out", progress=False)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        ingest(tmp_path / "ok.npz", tmp_path / "out", progress=False)
    assert json.loads((tmp_path / "out" / "_manifest.json").read_text())["rows"] == 10
