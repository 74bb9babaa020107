"""VaDE end to end on a real local Ray: GMM init, ELBO training, artifact, predict_proba, assign;
loading a pretrained autoencoder instead of pretraining."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import tiny_spec

import distclust
from distclust.errors import SpecError
from distclust.spec import load_spec


def vade_spec(**over):
    m = dict(recon="mse", recon_logvar=-1.0, pretrain_epochs=4, epochs=3, lr=1e-3, gmm_sample=600)
    m.update(over)
    raw = tiny_spec("vade", **m)
    raw["model"].pop("kmeans_nredo")
    raw["train"]["eval_every"] = 1
    return raw


@pytest.fixture(scope="module")
def vade_run(ray_cluster, blobs_dataset, tmp_path_factory):
    from distclust.engine.trainer import run_training

    return run_training(load_spec(vade_spec()), tmp_path_factory.mktemp("vade") / "run", data=str(blobs_dataset))


def test_vade_trains_and_predicts(vade_run, blobs_npz):
    d = np.load(blobs_npz)
    stages = [h["stage"] for h in vade_run.history]
    assert stages.count("pretrain") == 4 and "gmm_init" in stages and stages.count("vade") == 3
    vade = [h for h in vade_run.history if h["stage"] == "vade"]
    assert all(np.isfinite(h["loss"]) and "kl_z" in h and "acc" in h for h in vade)
    model = distclust.load(vade_run.model_dir)
    assert model.config["assign_by"] == "proba"
    p = model.predict_proba(d["X"])
    assert p.shape == (len(d["X"]), 4) and (p >= 0).all()
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    labels, dist = model.assign(d["X"])
    np.testing.assert_array_equal(labels, p.argmax(1))
    assert model.score_metrics(d["X"], d["y"])["acc"] > 0.95


def test_vade_assign_command_path(vade_run, blobs_dataset, blobs_npz, tmp_path):
    import pyarrow.parquet as pq

    from distclust.assign import run_assign

    run_assign(vade_run.model_dir, blobs_dataset, tmp_path / "assign", progress=False)
    t = pq.read_table(tmp_path / "assign").to_pandas().sort_values("id")
    X = np.load(blobs_npz)["X"]
    np.testing.assert_array_equal(t["cluster"].to_numpy(), distclust.load(vade_run.model_dir).predict(X))


def test_vade_from_pretrained_autoencoder(vade_run, blobs_dataset, blobs_npz, tmp_path):
    from distclust.engine.trainer import run_training

    res = run_training(load_spec(vade_spec(pretrained=str(vade_run.model_dir), epochs=1)), tmp_path / "run",
                       data=str(blobs_dataset))
    pre = [h for h in res.history if h["stage"] == "pretrain"]
    assert len(pre) == 1 and pre[0].get("pretrained_loaded") == 1.0
    d = np.load(blobs_npz)
    assert distclust.load(res.model_dir).score_metrics(d["X"], d["y"])["acc"] > 0.95


def test_bad_pretrained_path_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="pretrained"):
        load_spec(vade_spec(pretrained=str(tmp_path / "nope")))


def test_relative_pretrained_run_dir_is_resolved_for_the_workers(vade_run, monkeypatch):
    """Workers run in another directory: a relative path (or a run dir) given on the command line
    must reach them as the absolute model directory."""
    run_dir = vade_run.model_dir.parent
    monkeypatch.chdir(run_dir.parent)
    spec = load_spec(vade_spec(pretrained=run_dir.name))
    assert spec.model.pretrained == str(vade_run.model_dir.resolve())


def test_gmm_restarts_without_the_sklearn_start_are_a_spec_error():
    """gmm_n_init restarts scikit-learn's own k-means; with the FAISS start it would be silently ignored."""
    with pytest.raises(SpecError, match="gmm_init"):
        load_spec(vade_spec(gmm_n_init=3))
    assert load_spec(vade_spec(gmm_n_init=3, gmm_init="sklearn")).model.gmm_n_init == 3
