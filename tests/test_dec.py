"""DEC / IDEC on a real local Ray: the all-reduced target equals the single-process one,
the tolerance rule stops the stage, artifacts round-trip, and the Python estimator works."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from conftest import make_blobs, tiny_spec

import distclust
from distclust.engine.trainer import run_training
from distclust.spec import load_spec


def dec_spec(model="dec", **over):
    m = dict(pretrain_epochs=4, cluster_epochs=3, update_interval=2, tol=0.0, cluster_lr=1e-3)
    m.update(over)
    return tiny_spec(model, **m)


@pytest.fixture(scope="module")
def dec_run(ray_cluster, blobs_dataset, tmp_path_factory):
    # 2 workers, tol 0: runs every cluster epoch, refreshing P every 2 steps
    return run_training(load_spec(dec_spec("dec")), tmp_path_factory.mktemp("dec"), data=str(blobs_dataset))


@pytest.fixture(scope="module")
def idec_run(ray_cluster, blobs_dataset, tmp_path_factory):
    return run_training(load_spec(dec_spec("idec", gamma=0.1)), tmp_path_factory.mktemp("idec"),
                        data=str(blobs_dataset))


def _numpy_q(z: np.ndarray, mu: np.ndarray, alpha: float) -> np.ndarray:
    d2 = ((z[:, None, :] - mu[None, :, :]) ** 2).sum(-1)
    q = (1.0 + d2 / alpha) ** (-(alpha + 1.0) / 2.0)
    return q / q.sum(1, keepdims=True)


def test_all_reduced_target_equals_single_process(dec_run, blobs_npz):
    """f_j saved at the last refresh of a 2-worker run == Σ_i q_ij over the FULL data in NumPy,
    computed with the frozen weights of that refresh; and so is P."""
    X = np.load(blobs_npz)["X"]
    fm = distclust.load(dec_run.model_dir)
    m = fm.model
    assert bool(m.has_target) and int(m.refreshes) >= 2
    with torch.no_grad():
        z = m.target_encoder(m.normalizer(torch.from_numpy(X))).double().numpy()
    mu = m.target_mu.double().numpy()
    q = _numpy_q(z, mu, m.params.alpha)
    f = q.sum(0)
    f_run = m.target_f.double().numpy()
    # one worker holds about half the rows: a per-worker f would sum to ~300, not 600
    assert abs(f_run.sum() - len(X)) < 1e-3 * len(X)
    np.testing.assert_allclose(f_run, f, rtol=1e-4)
    p = q ** 2 / f
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(m.target(torch.from_numpy(X)).double().numpy(), p, atol=1e-5)
    # the changed-label fraction is logged at each refresh after the first
    cl = [h for h in dec_run.history if h["stage"] == "cluster"]
    assert len(cl) == 3 and all("delta_label" in h and 0 <= h["delta_label"] <= 1 for h in cl)


@pytest.mark.parametrize("which", ["dec", "idec"])
def test_trains_saves_loads_and_predicts(which, dec_run, idec_run, blobs_npz):
    res = dec_run if which == "dec" else idec_run
    d = np.load(blobs_npz)
    fm = distclust.load(res.model_dir)
    assert fm.config["model"] == which and fm.cluster_centers_.shape == (4, 4)
    assert fm.score_metrics(d["X"], d["y"])["acc"] > 0.95
    proba = fm.predict_proba(d["X"])
    assert proba.shape == (len(d["X"]), 4)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    # argmax q (Student's t) is the nearest prototype, which FAISS serves
    np.testing.assert_array_equal(fm.predict(d["X"]), proba.argmax(1))
    # the prototypes were trained (moved away from the k-means init)
    m = fm.model
    assert not torch.allclose(m.mu, m.centroids)
    stages = [h["stage"] for h in res.history]
    assert stages.count("pretrain") == 4 and "kmeans" in stages and stages.count("cluster") == 3
    if which == "idec":
        assert all("recon" in h for h in res.history if h["stage"] == "cluster")


def test_assign_equals_predict(dec_run, blobs_dataset, blobs_npz, tmp_path):
    from distclust.assign import run_assign

    run_assign(dec_run.model_dir, blobs_dataset, tmp_path / "as", rows_per_unit=200, progress=False)
    t = pq.read_table(tmp_path / "as").to_pandas().sort_values("id")
    X = np.load(blobs_npz)["X"]
    np.testing.assert_array_equal(t["cluster"].to_numpy(), distclust.load(dec_run.model_dir).predict(X))


def test_stopping_rule_fires_and_pretrained_weights_load(dec_run, blobs_dataset, tmp_path):
    """From the dec run's autoencoder (no pretraining), a loose tol ends clustering long before 30 epochs."""
    spec = dec_spec("dec", pretrain_epochs=0, pretrained=str(dec_run.run_dir), cluster_epochs=30, tol=0.5)
    res = run_training(load_spec(spec), tmp_path / "run", data=str(blobs_dataset))
    cl = [h for h in res.history if h["stage"] == "cluster"]
    assert 1 <= len(cl) < 30
    assert cl[-1]["delta_label"] < 0.5
    pre = [h for h in res.history if h["stage"] == "pretrain"]
    assert len(pre) == 1 and pre[0].get("pretrained_loaded") == 1.0
    # DEC trains only encoder + prototypes: the decoder is still exactly the loaded one
    a, b = distclust.load(dec_run.model_dir).model, distclust.load(res.model_dir).model
    for (name, wa), wb in zip(a.ae.decoder.state_dict().items(), b.ae.decoder.state_dict().values()):
        torch.testing.assert_close(wa, wb, rtol=0, atol=0, msg=name)


def test_pretrained_mismatch_is_a_clear_error(dec_run, blobs_dataset, tmp_path):
    from distclust.errors import DistclustError

    spec = dec_spec("dec", pretrain_epochs=0, pretrained=str(dec_run.model_dir), latent_dim=5)
    with pytest.raises(DistclustError, match="latent_dim"):
        run_training(load_spec(spec), tmp_path / "run", data=str(blobs_dataset))


def test_bad_params_are_refused():
    from distclust.errors import SpecError

    for key, value in [("tol", 1.5), ("update_interval", 0), ("alpha", 0), ("cluster_lr", 0)]:
        with pytest.raises(SpecError, match=key):
            load_spec(dec_spec("dec", **{key: value}))
    with pytest.raises(SpecError, match="gamma"):
        load_spec(dec_spec("idec", gamma=-1))


def test_estimator_fit_predict(ray_cluster):
    X, y = make_blobs()
    est = distclust.Clusterer("dec", n_clusters=4, workers=2, batch_size=64, latent_dim=4, hidden=[32, 32],
                              pretrain_epochs=4, cluster_epochs=2, update_interval=2, kmeans_nredo=2)
    labels = est.fit_predict(X, y)
    assert labels.shape == (len(X),) and est.cluster_centers_.shape == (4, 4)
    assert est.score(X, y)["acc"] > 0.95
    np.testing.assert_array_equal(est.predict(X), labels)
    proba = est.predict_proba(X)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    assert est.transform(X).shape == (len(X), 4)
    assert est.history_[-1]["stage"] == "done" and "acc" in est.history_[-1]
