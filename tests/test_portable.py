"""Correctness at scale: a model folder copied anywhere loads and assigns; assignment over any input
layout gives one row per input id; evaluation joins in bounded partitions."""
from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import tiny_spec

import distclust
from distclust.errors import DataError
from distclust.spec import load_spec


@pytest.fixture(scope="module")
def pretrained_ae(tiny_ae_run):
    return tiny_ae_run   # a tiny_spec() AE + k-means trained through Ray on the blobs (conftest)


@pytest.mark.parametrize("model", ["dec", "vade"])
def test_model_from_pretrained_loads_and_assigns_after_moving(model, pretrained_ae, blobs_dataset, blobs_npz,
                                                              tmp_path):
    """Train from `pretrained:`, delete the pretrained run, move the model folder: load + assign work."""
    from distclust.assign import run_assign
    from distclust.engine.inprocess import train_inprocess
    from distclust.engine.trainer import run_training

    ae_copy = tmp_path / "ae-run"
    shutil.copytree(pretrained_ae.run_dir, ae_copy)
    over = dict(pretrained=str(ae_copy / "model"), pretrain_epochs=0)
    if model == "dec":
        over.update(cluster_epochs=1, update_interval=2, tol=0.0)
    else:
        over.update(recon="mse", epochs=1, gmm_sample=600)
    raw = tiny_spec(model, **over)
    if model == "vade":
        raw["model"].pop("kmeans_nredo")
    if model == "dec":   # through Ray Train: the pretrained path reaches the workers
        res = run_training(load_spec(raw), tmp_path / "run", data=str(blobs_dataset))
    else:                # the same loop in this process (a Ray Train start is ~15 s of the suite's CPU)
        res = train_inprocess(load_spec(raw), data=str(blobs_dataset), out_dir=tmp_path / "run", quiet=True)
    shutil.rmtree(ae_copy)                                    # the pretrained run is gone
    moved = tmp_path / "elsewhere" / "model"
    moved.parent.mkdir()
    shutil.move(str(res.model_dir), moved)                    # and the model lives somewhere else
    shutil.rmtree(tmp_path / "run")
    fitted = distclust.load(moved)
    X = np.load(blobs_npz)["X"]
    labels = fitted.predict(X)
    s = run_assign(moved, blobs_dataset, tmp_path / "assign", progress=False)
    got = pq.read_table(tmp_path / "assign").to_pandas().sort_values("id")
    assert s["rows"] == len(X) and got["cluster"].tolist() == labels.tolist()


def _hive_layout(blobs_dataset, root):
    """The dataset's rows written as region=a|b|c/part-0.parquet (equal file names in three folders)."""
    t = pa.concat_tables([pq.read_table(f) for f in sorted(blobs_dataset.glob("part-*.parquet"))])
    n = t.num_rows
    for i, region in enumerate("abc"):
        d = root / f"region={region}"
        d.mkdir(parents=True)
        pq.write_table(t.slice(i * n // 3, (i + 1) * n // 3 - i * n // 3), d / "part-0.parquet", row_group_size=50)
    return n


def test_assign_hive_partitioned_equal_file_names(pretrained_ae, blobs_dataset, tmp_path):
    from distclust.assign import run_assign

    n = _hive_layout(blobs_dataset, tmp_path / "in")
    s = run_assign(pretrained_ae.model_dir, tmp_path / "in", tmp_path / "out", rows_per_unit=60, progress=False)
    t = pq.read_table(tmp_path / "out", partitioning=None).to_pandas()
    assert s["rows"] == n == len(t) and t["id"].nunique() == n
    assert sorted(p.parent.name for p in (tmp_path / "out").rglob("*.parquet"))[0] == "region=a"


def test_a_short_output_is_detected_and_named(pretrained_ae, blobs_dataset, tmp_path):
    from distclust.assign import run_assign

    _hive_layout(blobs_dataset, tmp_path / "in")
    run_assign(pretrained_ae.model_dir, tmp_path / "in", tmp_path / "out", rows_per_unit=60, progress=False)
    victim = sorted((tmp_path / "out" / "region=b").glob("*.parquet"))[0]
    t = pq.read_table(victim)
    pq.write_table(t.slice(0, t.num_rows - 3), victim)         # three rows lost
    with pytest.raises(DataError, match=r"region=b.*holds .* rows but its input"):
        run_assign(pretrained_ae.model_dir, tmp_path / "in", tmp_path / "out", rows_per_unit=60, progress=False)


def test_evaluate_in_partitions_equals_one_pass(pretrained_ae, blobs_dataset, tmp_path):
    from distclust.assign import run_assign
    from distclust.evaluate import evaluate

    run_assign(pretrained_ae.model_dir, blobs_dataset, tmp_path / "out", rows_per_unit=100, progress=False)
    one = evaluate(tmp_path / "out", blobs_dataset)
    many = evaluate(tmp_path / "out", blobs_dataset, partition_rows=97)   # 7 partitions
    for k in ("acc", "nmi", "ari", "n"):
        assert one[k] == pytest.approx(many[k])
    assert one["n"] == 600
    victim = sorted((tmp_path / "out").glob("*.parquet"))[0]
    pq.write_table(pq.read_table(victim).slice(5), victim)
    with pytest.raises(DataError, match="5 of 600 labelled rows have no assignment"):
        evaluate(tmp_path / "out", blobs_dataset, partition_rows=97)


def test_a_vade_saved_with_the_old_unused_centroids_still_loads(tmp_path):
    """VaDE used to extend AE+k-means and saved its unused ``centroids``; such folders still load, and any
    other unexpected key is still an error."""
    import torch

    from distclust.artifact import save_artifact
    from distclust.errors import ArtifactError
    from distclust.models import get_model_class
    from distclust.validation import build

    cls = get_model_class("vade")
    m = cls(8, build(cls.Params, {"n_clusters": 3, "latent_dim": 2, "hidden": [16]}, "model"))
    m.is_fitted.fill_(True)
    d = save_artifact(m, tmp_path / "m", data_info={})
    state = torch.load(d / "weights.pt", weights_only=True)
    torch.save({**state, "centroids": torch.zeros(3, 2)}, d / "weights.pt")
    X = np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32)
    np.testing.assert_allclose(distclust.load(d).predict_proba(X), m.predict_proba(torch.from_numpy(X)).detach().numpy(),
                               atol=1e-6)
    torch.save({**state, "something_else": torch.zeros(1)}, d / "weights.pt")
    with pytest.raises(ArtifactError, match="do not load"):
        distclust.load(d)
