"""A customer table end to end on real Ray: ingest → train (typed losses) → assign the raw table
(Parquet and CSV, keyed by the user's string id, --keep) → predict on pandas → evaluate → profile."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from conftest import SHARED, run_cli, tiny_spec, screenshot
from test_tables import customers

from distclust.errors import DataError


@pytest.fixture(scope="module")
def trained(ray_cluster, tmp_path_factory):
    from distclust.data.table_ingest import ingest_table
    from distclust.engine.trainer import run_training
    from distclust.spec import spec_from_dict

    d = tmp_path_factory.mktemp("customers")
    raw = pa.Table.from_pandas(customers(600), preserve_index=False)
    pq.write_table(raw, d / "table.parquet", row_group_size=200)
    pacsv.write_csv(raw, d / "table.csv")
    ingest_table(d / "table.parquet", d / "ds", id_column="customer_id", label_column="segment", shards=4,
                 progress=False)
    spec = tiny_spec("ae-kmeans", n_clusters=3, recon="typed", pretrain_epochs=4)
    spec["data"]["normalize"] = "none"
    res = run_training(spec_from_dict(spec), d / "run", data=str(d / "ds"), quiet=True)
    return d, res


def test_typed_ae_trains_and_assigns_raw_tables_by_their_ids(trained, tmp_path):
    from distclust import load
    from distclust.assign import run_assign
    from distclust.evaluate import evaluate

    d, res = trained
    assert res.metrics["acc"] > 0.6            # 3 well-separated segments; chance is ~0.34
    model = load(res.model_dir)
    assert model.pipeline.id_column == "customer_id" and model.config["features"]["blocks"]
    s = run_assign(res.model_dir, d / "table.parquet", tmp_path / "a", keep=["plan", "age"], progress=False)
    out = pq.read_table(tmp_path / "a")
    assert out.schema.names == ["customer_id", "cluster", "distance", "plan", "age"]
    assert pa.types.is_string(out.schema.field("customer_id").type) or \
        pa.types.is_large_string(out.schema.field("customer_id").type)
    assert s["rows"] == 600 and out.column("customer_id").to_pandas().is_unique
    raw = pq.read_table(d / "table.parquet").to_pandas()
    got = out.to_pandas().set_index("customer_id").loc[raw["customer_id"]]
    np.testing.assert_array_equal(got["age"].to_numpy(), raw["age"].to_numpy())   # --keep passes through
    # predict on the raw pandas table (nulls, bools, dates as they are) gives the assignment's clusters
    np.testing.assert_array_equal(model.predict(raw), got["cluster"].to_numpy())
    # the CSV is read with the training types and assigned identically
    run_assign(res.model_dir, d / "table.csv", tmp_path / "c", progress=False)
    c = pq.read_table(tmp_path / "c").to_pandas().set_index("customer_id").loc[raw["customer_id"]]
    np.testing.assert_array_equal(c["cluster"].to_numpy(), got["cluster"].to_numpy())
    # evaluate joins on the user's id column
    e = evaluate(tmp_path / "a", d / "ds")
    assert e["n"] == 600 and abs(e["acc"] - res.metrics["acc"]) < 1e-9


def test_assign_bad_tables_fail_before_writing(trained, tmp_path):
    d, res = trained
    df = customers(20, start=5000)
    pq.write_table(pa.Table.from_pandas(df.drop(columns=["plan"]), preserve_index=False), tmp_path / "noplan.parquet")
    r = run_cli("assign", res.model_dir, tmp_path / "noplan.parquet", tmp_path / "o1", "--quiet")
    assert r.returncode == 2 and "lacks column 'plan'" in r.stderr, r.stderr
    df2 = df.assign(age=df["age"].astype(str))
    pq.write_table(pa.Table.from_pandas(df2, preserve_index=False), tmp_path / "strage.parquet")
    r = run_cli("assign", res.model_dir, tmp_path / "strage.parquet", tmp_path / "o2", "--quiet")
    assert r.returncode == 2 and "column 'age' holds" in r.stderr and "training data had int64" in r.stderr
    r = run_cli("assign", res.model_dir, d / "table.parquet", tmp_path / "o3", "--keep", "nope", "--quiet")
    assert r.returncode == 2 and "no --keep column 'nope'" in r.stderr, r.stderr
    assert not any((tmp_path / n).exists() for n in ("o1", "o2", "o3"))


def test_typed_vade_trains_on_the_table(trained):
    from distclust.engine.trainer import run_training
    from distclust.spec import spec_from_dict

    d, _ = trained
    spec = tiny_spec("vade", n_clusters=3, recon="typed", pretrain_epochs=2, epochs=2, gmm_sample=600)
    spec["model"].pop("kmeans_nredo")
    spec["data"]["normalize"] = "none"
    res = run_training(spec_from_dict(spec), d / "run-vade", data=str(d / "ds"), quiet=True)
    assert np.isfinite(res.metrics["loss"]) and res.metrics["acc"] > 0.5


def test_profile_of_an_assignment(trained, tmp_path):
    import json

    from distclust.assign import run_assign
    from distclust.report.profile import write_profile

    d, res = trained
    run_assign(res.model_dir, d / "table.parquet", tmp_path / "a", progress=False)
    page = write_profile(tmp_path / "a", d / "table.parquet", sample=400)
    assert page == tmp_path / "a" / "_profile" / "index.html"
    prof = json.loads((page.parent / "profile.json").read_text())
    assert prof["rows"] == 600 and prof["sampled_rows"] == 400
    assert abs(sum(s["share"] for s in prof["segments"]) - 1) < 1e-9
    assert {"age", "income", "signup"} <= set(prof["columns"]["numeric"])
    assert {"plan", "is_subscriber"} <= set(prof["columns"]["categorical"])
    # the segments differ in age and plan by construction: those separate them most
    top = {c for s in prof["segments"] for c in s["top_columns"][:3]}
    assert top & {"age", "plan", "income", "segment", "is_subscriber"}
    for f in ("segments.csv", "numeric.csv", "categorical.csv", "missing.csv", "separation.csv"):
        assert len(pd.read_csv(page.parent / f)) > 0
    text = page.read_text()
    assert text.count("<img") >= 4 and "lift" in text
    assert pq.read_table(tmp_path / "a").num_rows == 600     # the profile folder does not disturb readers


@pytest.mark.slow
def test_movies_profile_renders_in_headless_chromium(ray_cluster, tmp_path):
    """The real movies.csv (heavy nulls, free text, R's unnamed row-number column): ingest, train,
    assign the raw CSV, profile, and render the page in headless Chromium."""
    movies = SHARED / "movies.csv"
    if not movies.is_file():
        pytest.skip(f"{movies} is not available")
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    # movies has no unique id column: number the rows into one, as a user would
    t = pacsv.read_csv(movies, convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
    t = t.append_column("movie_id", pa.array(np.arange(t.num_rows)))
    pq.write_table(t, tmp_path / "movies.parquet")
    for args in (["ingest", tmp_path / "movies.parquet", tmp_path / "ds", "--id-column", "movie_id",
                  "--exclude", "title", "--quiet"],
                 ["train", "jobs/customers-ae-kmeans.yaml", "--data", tmp_path / "ds", "--out", tmp_path / "run",
                  "--set", "model.n_clusters=5", "--set", "model.pretrain_epochs=2", "--quiet"],
                 ["assign", tmp_path / "run", tmp_path / "movies.parquet", tmp_path / "a", "--keep", "title",
                  "--quiet"],
                 ["profile", tmp_path / "a", tmp_path / "movies.parquet"]):
        r = run_cli(*args, timeout=1200)
        assert r.returncode == 0, (args[0], r.stderr[-2000:])
    page = tmp_path / "a" / "_profile" / "index.html"
    shot = tmp_path / "profile.png"
    screenshot(exe, page, shot)
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1200, 2000)
        assert np.asarray(im.convert("L")).std() > 10


def test_pipeline_errors_are_data_errors():
    """predict on a frame without a training column is a DataError, not a KeyError (no Ray)."""
    from distclust.data.features import FeaturePipeline

    pipe = FeaturePipeline([{"name": "a", "role": "numeric", "kind": "numeric", "type": "double",
                             "transform": "none", "indicator": False, "center": 0.0, "scale": 1.0}], [])
    with pytest.raises(DataError, match="lacks column 'a'"):
        pipe.transform(pd.DataFrame({"b": [1.0]}))
