"""The Dirichlet-process mixture: matches scikit-learn, recovers K, streams, and its all-reduced
statistics over 2 Ray workers equal the single-process ones; the vae-dpgmm model end to end."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli, tiny_spec

import distclust
from distclust.models.dp_mixture import DPMixture, demp_merge, fit_dpgmm
from distclust.errors import DataError


def mixture(k=6, d=3, n=1500, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 8, (k, d))
    y = rng.integers(0, k, n)
    X = centers[y] + rng.normal(0, 1, (n, d)) * rng.uniform(0.5, 1.5, (k, d))[y]
    return X, y


def test_dp_fit_recovers_k_and_matches_sklearn():
    from sklearn.mixture import BayesianGaussianMixture

    X, y = mixture()
    res = fit_dpgmm(X, 20, "diag", seed=0)
    assert res.converged and res.n_active == 6, res.summary()
    from distclust.metrics import cluster_scores

    assert cluster_scores(res.predict(X), y)["acc"] > 0.95
    assert res.hard_sizes.sum() == len(X) and (res.hard_sizes[res.active] > 150).all()
    ref = BayesianGaussianMixture(n_components=20, covariance_type="diag", random_state=0, max_iter=500, tol=1e-6,
                                  weight_concentration_prior_type="dirichlet_process").fit(X)
    np.testing.assert_allclose(np.sort(res.weights)[::-1][:6], np.sort(ref.weights_)[::-1][:6], atol=1e-3)


@pytest.mark.integration   # trains in-process: seconds, not the fast tier
def test_cluster_scale_prior_merges_non_gaussian_classes_and_matches_sklearn():
    """Four uniform squares: the default (weak, small) covariance prior splits them into pieces;
    a prior within-cluster variance near the true spread finds 4, with sklearn's weights."""
    from sklearn.mixture import BayesianGaussianMixture

    rng = np.random.default_rng(0)
    centers = np.array([[0, 0], [30, 0], [0, 30], [30, 30]], float)
    y = rng.integers(0, 4, 6000)
    X = centers[y] + rng.uniform(-6, 6, (6000, 2))
    assert fit_dpgmm(X, 20, "diag", seed=0).n_active > 6
    res = fit_dpgmm(X, 20, "diag", seed=0, cluster_scale=0.1, dof_prior=300, tol=1e-6, max_iter=500)
    assert res.n_active == 4
    ref = BayesianGaussianMixture(n_components=20, covariance_type="diag", random_state=0, max_iter=500, tol=1e-6,
                                  weight_concentration_prior_type="dirichlet_process",
                                  covariance_prior=X.var(0, ddof=1) * 0.1 * 300, degrees_of_freedom_prior=300).fit(X)
    np.testing.assert_allclose(np.sort(res.weights)[::-1][:5], np.sort(ref.weights_)[::-1][:5], atol=1e-3)
    with pytest.raises(DataError, match="dof_prior"):
        fit_dpgmm(X, 20, "diag", dof_prior=0.5)


def test_demp_merges_the_pieces_of_a_non_gaussian_cluster_and_keeps_separate_ones():
    """Two Gaussian blobs and one uniform band: the DP mixture fits the band with several components;
    Hennig's DEMP merges them back into one cluster and keeps the blobs apart."""
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal([0, 0], 0.5, (800, 2)), rng.normal([8, 0], 0.5, (800, 2)),
                        rng.uniform([-2, 6], [10, 8], (1600, 2))])
    X = (X - X.mean(0)) / X.std(0)
    res = fit_dpgmm(X, 12, seed=0, max_iter=200, init_sample=len(X))
    assert res.n_active > 3
    assert res.merged_count(X) == 3
    lab = demp_merge(res.active_responsibilities(X))[res.active_responsibilities(X).argmax(1)]
    truth = np.repeat([0, 1, 2], [800, 800, 1600])
    from distclust.metrics import cluster_scores

    assert cluster_scores(lab, truth)["acc"] > 0.99
    Xg = np.concatenate([rng.normal(c, 1.0, (400, 3)) for c in np.eye(3) * 10])   # separate Gaussians
    fit = fit_dpgmm(Xg, 10, "diag", seed=0)
    assert fit.merged_count(Xg) == fit.n_active == 3


def test_demp_merge_on_posteriors():
    """Two components that share their rows half and half merge; a third that owns its rows stays;
    a cut-off above every misclassification probability merges nothing."""
    resp = np.array([[0.5, 0.5, 0.0]] * 50 + [[0.6, 0.4, 0.0]] * 50 + [[0.0, 0.0, 1.0]] * 100)
    assert demp_merge(resp).tolist() == [0, 0, 1]
    assert demp_merge(resp, cutoff=1.01).tolist() == [0, 1, 2]
    with pytest.raises(DataError, match="shape"):
        demp_merge(np.ones(3))


@pytest.mark.integration   # trains in-process: seconds, not the fast tier
def test_full_covariance_and_streaming_equal_in_memory():
    X, _ = mixture(k=4, d=2, n=800, seed=1)
    a = fit_dpgmm(X, 10, "full", seed=0)
    b = fit_dpgmm(lambda: (X[s:s + 97] for s in range(0, len(X), 97)), 10, "full", seed=0)
    assert a.n_active == 4
    np.testing.assert_allclose(a.weights, b.weights, atol=1e-9)
    np.testing.assert_allclose(a.mixture.means.numpy(), b.mixture.means.numpy(), atol=1e-7)


def _fixed_mixture(dim, cov):
    torch.manual_seed(3)
    mix = DPMixture(5, dim, cov)
    mix.means.copy_(torch.randn(5, dim, dtype=torch.float64) * 3)
    mix.wc_a.copy_(torch.linspace(2, 6, 5, dtype=torch.float64))
    mix.wc_b.copy_(torch.linspace(9, 1, 5, dtype=torch.float64))
    return mix


def _stats_loop(config):
    """Every rank: global_pass of DP statistics under a fixed mixture, then one M-step and again."""
    import ray.train

    from distclust.engine.worker import make_context
    from distclust.spec import spec_from_dict

    cfg = config["train_config"]
    ctx_t = ray.train.get_context()
    rank, world = ctx_t.get_world_rank(), ctx_t.get_world_size()
    ctx = make_context(cfg, spec_from_dict(cfg.spec).train, torch.nn.Linear(1, 1), rank, world, torch.device("cpu"))
    out = {}
    for cov in ("diag", "full"):
        mix = _fixed_mixture(16, cov)
        st = ctx.global_pass(lambda b: mix.stats(b["features"]))
        mix.m_step(st)
        st2 = ctx.global_pass(lambda b: mix.stats(b["features"]))
        out.update({f"{cov}_{k}": v.numpy() for k, v in st.items()})
        out.update({f"{cov}_2_{k}": v.numpy() for k, v in st2.items()})
        out[f"{cov}_rank_rows"] = np.array(cfg.rank_rows)
    if rank == 0:
        np.savez(Path(cfg.spec["name"], "stats.npz"), **out)
    ray.train.report({"done": 1})


def test_allreduced_statistics_equal_single_process(ray_cluster, blobs_dataset, blobs_npz, tmp_path):
    import ray.cloudpickle

    from distclust.data import Manifest
    from distclust.engine.trainer import build_trainer, fit_trainer
    from distclust.spec import load_spec

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    raw = tiny_spec()
    raw["name"] = str(tmp_path)
    spec = load_spec(raw)
    fit_trainer(build_trainer(spec, tmp_path, blobs_dataset, Manifest.load(blobs_dataset), quiet=True,
                              loop=_stats_loop))
    got = np.load(tmp_path / "stats.npz")
    assert len(got["diag_rank_rows"]) == 2 and got["diag_rank_rows"].min() > 0   # really two shards
    X = torch.as_tensor(np.load(blobs_npz)["X"], dtype=torch.float64)
    for cov in ("diag", "full"):
        mix = _fixed_mixture(16, cov)
        st = mix.stats(X)
        mix.m_step(st)
        st2 = mix.stats(X)
        for k in ("N", "S1", "S2", "loglik"):
            np.testing.assert_allclose(got[f"{cov}_{k}"], st[k].numpy(), rtol=1e-10, atol=1e-8)
            np.testing.assert_allclose(got[f"{cov}_2_{k}"], st2[k].numpy(), rtol=1e-10, atol=1e-8)
        assert float(st["N"].sum()) == pytest.approx(len(X))


def test_damping_and_pruning():
    X, _ = mixture(k=3, d=2, n=600, seed=2)
    z = torch.as_tensor(X)
    mix = DPMixture(8, 2, "diag")
    mix.set_data_prior(**mix.moment_stats(z))
    mix.m_step(mix.hard_stats(z, z[:8]))
    old = mix.stat_N.clone()
    new = mix.stats(z)
    mix.m_step(new, damping=0.25, prune_below=30.0)
    np.testing.assert_allclose(mix.stat_N.numpy(), (0.75 * old + 0.25 * new["N"]).numpy() * mix.active.numpy())
    pruned = ~mix.active
    assert bool((mix.stat_N[mix.active] >= 30).all())
    assert torch.isinf(mix.expected_log_weights()[pruned]).all() and float(mix.weights()[pruned].sum()) == 0.0


def dp_spec(**over):
    raw = tiny_spec("vae-dpgmm", n_clusters=8, recon="mse", recon_logvar=-1.0, pretrain_epochs=3, epochs=3,
                    lr=1e-3, dp_sample=600, gmm_sample=600, dp_iters=2, dp_damping=0.5, **over)
    raw["model"].pop("kmeans_nredo")
    raw["train"]["eval_every"] = 1
    return raw


def test_vae_dpgmm_trains_saves_assigns(ray_cluster, blobs_dataset, blobs_npz, tmp_path):
    from distclust.assign import run_assign
    from distclust.engine.trainer import run_training
    from distclust.spec import load_spec

    import pyarrow.parquet as pq

    res = run_training(load_spec(dp_spec()), tmp_path / "run", data=str(blobs_dataset))
    d = np.load(blobs_npz)
    model = distclust.load(res.model_dir)
    assert model.config["model"] == "vae-dpgmm" and model.n_clusters_ == 8
    p = model.predict_proba(d["X"])
    assert p.shape == (len(d["X"]), 8)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    pred = model.predict(d["X"])
    np.testing.assert_array_equal(pred, p.argmax(1))
    # the 4 blobs: many-to-one accuracy is high whatever number of components the DP kept
    assert model.score_metrics(d["X"], d["y"])["acc_many_to_one"] > 0.9
    epochs = [h for h in res.history if h["stage"] == "vae"]
    assert len(epochs) == 3 and all("dp_active" in h and "completeness" in h and "acc" in h for h in epochs)
    assert all(1 <= h["dp_active"] <= 8 for h in epochs)
    # K is found, not given: K_max is 8, the data has 4 blobs
    assert abs(epochs[-1]["dp_active"] - 4) <= 1, [h["dp_active"] for h in epochs]
    assert abs(len(np.unique(pred)) - 4) <= 1, np.bincount(pred)
    s = run_assign(res.model_dir, blobs_dataset, tmp_path / "assign", progress=False)
    t = pq.read_table(tmp_path / "assign").to_pandas().sort_values("id")
    assert s["rows"] == len(t) == len(d["X"])
    np.testing.assert_array_equal(t["cluster"].to_numpy(), pred)
    # post-hoc DP on this artifact's embeddings, streamed in small batches
    from distclust.dpgmm_posthoc import fit_dpgmm_artifact, label_report, merged_clusters

    post, z, y = fit_dpgmm_artifact(res.model_dir, blobs_npz, k_max=10, work_dir=tmp_path / "post", batch_rows=128)
    # post hoc with scikit-learn's default prior the DP may split a blob of a learned embedding, never merge two
    assert z.shape == (len(d["X"]), 4) and post.n_active >= 4, post.summary()
    assert label_report(post, z, y)["acc_many_to_one"] > 0.9
    n_merged = merged_clusters(post, z)
    assert 1 <= n_merged <= post.n_active    # merging only joins components (this short VAE's blobs may touch)
    r = run_cli("dpgmm", res.model_dir, blobs_npz, "--k-max", "10", "--json", tmp_path / "dp.json")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "clusters (components merged, DEMP)" in r.stdout
    assert json.loads((tmp_path / "dp.json").read_text())["clusters_merged"] == n_merged
