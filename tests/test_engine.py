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
    import torch

    from distclust.engine.worker import make_context
    from distclust.spec import spec_from_dict

    cfg = config["train_config"]
    ctx_t = ray.train.get_context()
    rank, world = ctx_t.get_world_rank(), ctx_t.get_world_size()
    ctx = make_context(cfg, spec_from_dict(cfg.spec).train, None, rank, world, torch.device("cpu"))
    full = np.concatenate([b["id"].numpy() for b in ctx.batches()])
    epoch = [b["id"].numpy() for b in ctx.epoch_batches(0)]
    out = Path(cfg.spec["name"])
    np.save(out / f"full-{rank}.npy", full)
    (out / f"steps-{rank}.json").write_text(json.dumps(len(epoch)))
    ray.train.report({"rows": int(len(full))})


def _train_recording_ids(config):
    """The real worker (real model, real loop) with each epoch's ids recorded per rank."""
    from distclust.engine import context, worker

    cfg = config["train_config"]
    seen: list[np.ndarray] = []
    orig = context.WorkerContext.epoch_batches

    def recording(self, epoch):
        ids = []
        for b in orig(self, epoch):
            ids.append(b["id"].numpy())
            yield b
        seen.append(np.concatenate(ids))
        np.save(Path(cfg.spec["name"]) / f"epochs-{self.rank}.npy", np.array(seen, dtype=object), allow_pickle=True)

    context.WorkerContext.epoch_batches = recording
    try:
        worker.train_fn(config)
    finally:
        context.WorkerContext.epoch_batches = orig


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
def unbalanced_dataset(tmp_path_factory):
    """8 shards of unequal size (600 rows), for 3 workers."""
    from conftest import make_blobs

    from distclust.data import ingest

    X, y = make_blobs(n=600)
    src = tmp_path_factory.mktemp("unb") / "unb.npz"
    np.savez(src, X=X, y=y)
    out = tmp_path_factory.mktemp("unbds") / "ds"
    ingest(src, out, shards=8, progress=False)
    return out


@pytest.mark.parametrize("cache", ["never", "always"])
def test_every_row_every_epoch_on_unbalanced_shards(ray_cluster, unbalanced_dataset, tmp_path, cache):
    """A real model over 8 shards on 3 workers, streaming or cached: each epoch visits every id."""
    import ray.cloudpickle

    from distclust.data import split_files

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    raw = tiny_spec(pretrain_epochs=3)
    raw["name"] = str(tmp_path)
    raw["data"]["materialize"] = cache
    raw["train"].update(batch_size=40, shuffle_buffer=64)
    raw["scaling"].update(num_workers=3, cpus_per_worker=0.5)
    spec = load_spec(raw)
    m = Manifest.load(unbalanced_dataset)
    rows = [r for _, r in split_files(m, unbalanced_dataset, 3)]
    assert len(set(rows)) > 1, "the shards should be unbalanced for this test to mean anything"
    res = fit_trainer(build_trainer(spec, tmp_path, unbalanced_dataset, m, quiet=True, loop=_train_recording_ids))
    assert res.checkpoint is not None
    per_rank = [np.load(tmp_path / f"epochs-{r}.npy", allow_pickle=True) for r in range(3)]
    assert all(len(e) == 3 for e in per_rank), "3 pretraining epochs on every rank"
    for epoch in range(3):
        seen = np.concatenate([e[epoch] for e in per_rank])
        assert set(seen.tolist()) == set(range(m.rows)), f"epoch {epoch} missed rows"
    assert max(rows) in {len(e[0]) for e in per_rank}   # the largest shard: each row exactly once


def test_dec_refreshes_its_target_while_streaming(ray_cluster, blobs_dataset, tmp_path):
    """DEC's target refresh is a global pass started inside a running epoch: it must work when streaming."""
    raw = tiny_spec("dec", cluster_epochs=2, update_interval=3, tol=0.0)
    raw["data"]["materialize"] = "never"
    res = run_training(load_spec(raw), tmp_path / "run", data=str(blobs_dataset))
    cluster = [h for h in res.history if h["stage"] == "cluster"]
    assert len(cluster) == 2 and cluster[-1]["target_refreshes"] >= 3
    assert res.metrics["acc"] > 0.9


def _ae_spec(k: int, epochs: int, storage: Path) -> dict:
    raw = tiny_spec(pretrain_epochs=epochs, n_clusters=k)
    raw["scaling"]["storage_path"] = str(storage)
    raw["train"]["checkpoint_every"] = 1
    return raw


def test_runs_sharing_a_storage_path_never_see_each_other(ray_cluster, blobs_dataset, tmp_path):
    """Run A (K=4, 3 epochs), then run B (K=3, 2 epochs) on the same storage path: B trains from epoch 1
    with its own prototypes; a --resume of the finished A hands A back as it was; with A's model removed
    (as if killed after its last checkpoint) a --resume continues A from A's own checkpoint, not B's."""
    import shutil

    storage = tmp_path / "shared-storage"
    a = run_training(load_spec(_ae_spec(4, 3, storage)), tmp_path / "a", data=str(blobs_dataset))
    b = run_training(load_spec(_ae_spec(3, 2, storage)), tmp_path / "b", data=str(blobs_dataset))
    pre_b = [h for h in b.history if h["stage"] == "pretrain"]
    assert [h["epoch"] for h in pre_b] == [1, 2], "run B must train its own epochs from the start"
    assert distclust.load(b.model_dir).cluster_centers_.shape == (3, 4)
    assert distclust.load(a.model_dir).cluster_centers_.shape == (4, 4)
    ids = {json.loads((tmp_path / r / "run.json").read_text())["run_id"] for r in ("a", "b")}
    assert len(ids) == 2 and all(any(storage.glob(f"distclust-{i}/checkpoint_*")) for i in ids)
    again = run_training(load_spec(_ae_spec(4, 3, storage)), tmp_path / "a", data=str(blobs_dataset), resume=True)
    assert again.already_finished and again.model_dir == a.model_dir

    shutil.rmtree(a.model_dir)
    res = run_training(load_spec(_ae_spec(4, 3, storage)), tmp_path / "a", data=str(blobs_dataset), resume=True)
    assert not res.already_finished
    assert distclust.load(res.model_dir).cluster_centers_.shape == (4, 4)
    pre = [h for h in res.history if h["stage"] == "pretrain"]
    assert [h["epoch"] for h in pre] == [1, 2, 3]    # its own 3 epochs, carried in its checkpoint


@pytest.fixture(scope="module")
def trained(tiny_ae_run):
    return tiny_ae_run   # run_training(load_spec(tiny_spec()), …) on the blobs, shared with test_portable


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


def test_training_leaves_no_temporary_checkpoints(trained):
    """Each checkpoint and the final artifact are written to a local temp folder and copied to the
    run's storage by ray.train.report; the temp folders must not pile up (they did: one per epoch)."""
    import glob
    import tempfile

    run_id = json.loads((trained.run_dir / "run.json").read_text())["run_id"]
    assert list((trained.run_dir / "ray").glob("*/checkpoint_*")), "the run wrote no checkpoints"
    assert glob.glob(f"{tempfile.gettempdir()}/distclust-*-{run_id}-*") == []


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
    torch.save({"next_epoch": 3, "run_id": "r1"}, old / STATE_FILE)
    (new / STATE_FILE).write_bytes(b"PK\x03\x04 half-copied")  # the copy the kill interrupted
    assert _unregistered_state([str(new), str(old)], "cpu", "r1") == {"next_epoch": 3, "run_id": "r1"}
    assert _unregistered_state([str(new)], "cpu", "r1") is None
    with pytest.raises(distclust.errors.DistclustError, match="belongs to run"):   # another run's checkpoint
        _unregistered_state([str(old)], "cpu", "r2")


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
