"""The spine end to end on a real local Ray: sharding, training, artifact, assignment, determinism."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import tiny_spec

import distclust
from distclust.data import Manifest
from distclust.engine.trainer import build_trainer, fit_trainer, run_training
from distclust.spec import load_spec


def _record_ids_loop(config):
    """A train loop that records, per rank, the ids of one training epoch and of one full pass."""
    import ray.train

    from distclust.engine.context import WorkerContext

    ctx_t = ray.train.get_context()
    rank, world = ctx_t.get_world_rank(), ctx_t.get_world_size()
    ctx = WorkerContext(None, ray.train.get_dataset_shard("train"), rank, world, __import__("torch").device("cpu"),
                        0, 32, config["rank_rows"][rank], config["steps_per_epoch"], 1000)
    if config["cache"]:
        ctx.cache_shard()
    full = np.concatenate([b["id"].numpy() for b in ctx.batches()])
    epoch = [b["id"].numpy() for b in ctx.epoch_batches(0)]
    out = Path(config["spec"]["name"])
    np.save(out / f"full-{rank}.npy", full)
    (out / f"steps-{rank}.json").write_text(json.dumps(len(epoch)))
    ray.train.report({"rows": int(len(full))})


@pytest.mark.parametrize("cache", ["always", "never"])
def test_two_workers_get_disjoint_shards_covering_all(ray_cluster, blobs_dataset, tmp_path, cache):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    raw = tiny_spec()
    raw["name"] = str(tmp_path)
    raw["data"]["materialize"] = cache
    spec = load_spec(raw)
    m = Manifest.load(blobs_dataset)
    fit_trainer(build_trainer(spec, tmp_path, blobs_dataset, m, quiet=True, loop=_record_ids_loop))
    a, b = np.load(tmp_path / "full-0.npy"), np.load(tmp_path / "full-1.npy")
    assert len(a) > 0 and len(b) > 0
    assert not set(a.tolist()) & set(b.tolist()), "the two workers saw a common row"
    assert sorted(a.tolist() + b.tolist()) == list(range(m.rows)), "rows missing or duplicated"
    # DDP needs the same number of steps on every worker
    assert json.loads((tmp_path / "steps-0.json").read_text()) == json.loads((tmp_path / "steps-1.json").read_text())


@pytest.fixture(scope="module")
def trained(ray_cluster, blobs_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    res = run_training(load_spec(tiny_spec()), out, data=str(blobs_dataset))
    return res


def test_training_produces_artifact_and_clusters_blobs(trained, blobs_npz):
    d = np.load(blobs_npz)
    model = distclust.load(trained.model_dir)
    assert model.n_clusters_ == 4 and model.cluster_centers_.shape == (4, 4)
    scores = model.score_metrics(d["X"], d["y"])
    assert scores["acc"] > 0.95, scores
    # per-epoch history: pretrain epochs, then k-means, then the final entry
    stages = [h["stage"] for h in trained.history]
    assert stages.count("pretrain") == 3 and "kmeans" in stages and stages[-1] == "done"
    losses = [h["loss"] for h in trained.history if h["stage"] == "pretrain"]
    assert losses[-1] < losses[0]


def test_assign_one_row_per_id_equal_to_predict(trained, blobs_dataset, blobs_npz, tmp_path):
    from distclust.assign import run_assign

    s = run_assign(trained.model_dir, blobs_dataset, tmp_path / "assign", rows_per_unit=50, progress=False)
    t = pq.read_table(tmp_path / "assign").to_pandas().sort_values("id")
    X = np.load(blobs_npz)["X"]
    assert s["rows"] == len(X) == len(t)
    assert t["id"].tolist() == list(range(len(X)))
    np.testing.assert_array_equal(t["cluster"].to_numpy(), distclust.load(trained.model_dir).predict(X))
    assert (t["distance"] >= 0).all()
    # a rerun of the same command finds everything done and changes nothing
    s2 = run_assign(trained.model_dir, blobs_dataset, tmp_path / "assign", rows_per_unit=50, progress=False)
    assert s2["resumed_units"] == s2["units"] and s2["rows"] == len(X)


def test_same_seed_same_clusters(trained, blobs_dataset, blobs_npz, tmp_path):
    res2 = run_training(load_spec(tiny_spec()), tmp_path / "again", data=str(blobs_dataset))
    X = np.load(blobs_npz)["X"]
    a, b = distclust.load(trained.model_dir), distclust.load(res2.model_dir)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, rtol=1e-5, atol=1e-5)


def test_existing_run_dir_is_refused(trained):
    from distclust.errors import OutputExistsError

    with pytest.raises(OutputExistsError, match="--overwrite"):
        run_training(load_spec(tiny_spec()), trained.run_dir)


def test_resume_falls_back_to_newest_whole_unregistered_checkpoint(tmp_path):
    """A run killed before Ray recorded its checkpoints resumes from the newest one that loads."""
    import torch

    from distclust.engine.worker import STATE_FILE, _unregistered_state

    old, new = tmp_path / "checkpoint_2026-01-01_00-00-01", tmp_path / "checkpoint_2026-01-01_00-00-02"
    old.mkdir()
    new.mkdir()
    torch.save({"next_epoch": 3}, old / STATE_FILE)
    (new / STATE_FILE).write_bytes(b"PK\x03\x04 half-copied")  # the copy the kill interrupted
    assert _unregistered_state([str(new), str(old)], "cpu") == {"next_epoch": 3}
    assert _unregistered_state([str(new)], "cpu") is None


# --------------------------------------------------------------------------- early stopping
def test_plateau_rule():
    from distclust.engine.stopping import epochs_without_improvement, should_stop

    assert epochs_without_improvement([10, 9, 8.995, 8.99], 0.01) == 2      # 9 → 8.99 is under 1 %
    assert epochs_without_improvement([10, 9, 8], 0.01) == 0
    assert epochs_without_improvement([float("nan"), 5, float("nan")], 0.0) == 1
    assert should_stop([10, 9, 8.995, 8.99], patience=2, min_delta=0.01)
    assert not should_stop([10, 9, 8.995, 8.99], patience=3, min_delta=0.01)
    assert not should_stop([10, 9, 8.995, 8.99], patience=2, min_delta=0.01, min_epochs=5)   # still settling
    assert not should_stop([10, 10, 10], patience=0, min_delta=0.01)                          # off


def test_early_stopping_ends_the_stage_and_the_run_still_finishes(ray_cluster, blobs_dataset, tmp_path):
    raw = tiny_spec(pretrain_epochs=8)
    raw["train"].update(early_stop_patience=1, early_stop_min_delta=0.9)   # only a 90 % drop counts
    raw["scaling"]["num_workers"] = 1
    res = run_training(load_spec(raw), tmp_path / "run", data=str(blobs_dataset))
    pre = [h for h in res.history if h["stage"] == "pretrain"]
    assert len(pre) == 2 and pre[-1].get("early_stopped") == 1 and "early_stopped" not in pre[0]
    assert any(h["stage"] == "kmeans" for h in res.history)   # the later stage still ran
    assert distclust.load(res.model_dir).cluster_centers_.shape == (4, 4)


def test_concrete_gmvae_stops_early_only_on_its_bound_after_the_kl_anneal():
    from distclust.models import get_model_class

    cls = get_model_class("concrete-gmvae")
    m = cls(6, cls.Params(n_clusters=3, latent_dim=2, hidden=[8], kl_warmup_epochs=1, kl_anneal_epochs=2.5))
    st = m.stages()[0]
    assert (st.monitor, st.min_epochs) == ("neg_elbo", 4)
    assert "neg_elbo" in m(__import__("torch").rand(5, 6), "train")
