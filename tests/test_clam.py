"""ClAM and deep ClAM: the dynamics, assignment, masked training, and both models end to end on Ray."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from conftest import make_blobs, tiny_spec

import distclust
from distclust.artifact import save_artifact
from distclust.engine.trainer import run_training
from distclust.errors import SpecError
from distclust.metrics import cluster_scores
from distclust.models.clam import ClAM, ClamParams, clam_step, energy, run_dynamics
from distclust.spec import load_spec


@pytest.mark.integration   # trains in-process: seconds, not the fast tier
@pytest.mark.parametrize("beta", [0.05, 1.0, 20.0])
@pytest.mark.parametrize("clamped", [False, True])
def test_energy_decreases_at_every_step_for_small_alpha(beta, clamped):
    g = torch.Generator().manual_seed(0)
    rho = torch.randn(6, 8, generator=g, dtype=torch.float64) * 3
    v = torch.randn(200, 8, generator=g, dtype=torch.float64) * 4
    free = (torch.rand(v.shape, generator=g) < 0.3).double() if clamped else None
    e = energy(v, rho, beta)
    moved = torch.zeros(len(v), dtype=torch.bool)
    for _ in range(50):
        v_next = clam_step(v, rho, beta, alpha=0.1, free=free)
        e_next = energy(v_next, rho, beta)
        assert (e_next <= e + 1e-9).all(), (e_next - e).max()
        moved |= e_next < e - 1e-9
        if clamped:  # visible entries never move
            assert torch.equal(v_next[free == 0], v[free == 0])
        v, e = v_next, e_next
    assert moved.float().mean() > 0.9  # the energy really went down, not just stayed put


def _random_clam(beta, alpha=0.5, steps=20, k=8, d=16, seed=0):
    torch.manual_seed(seed)
    m = ClAM(d, ClamParams(n_clusters=k, beta=beta, alpha=alpha, steps=steps))
    m.memories.data.copy_(torch.randn(k, d) * 2)
    m.is_fitted.fill_(True)
    return m, torch.randn(2000, d) * 2


def test_large_beta_assignment_equals_nearest_prototype():
    m, x = _random_clam(beta=1e4)
    np.testing.assert_array_equal(m.predict_dynamics(x).numpy(), m.predict_nearest(x).numpy())
    # ... while at a tiny beta the dynamics pull every point to the memories' mean, so they differ
    m_small, _ = _random_clam(beta=1e-4, alpha=1.0)
    dyn, near = m_small.predict_dynamics(x).numpy(), m_small.predict_nearest(x).numpy()
    assert len(set(dyn.tolist())) < len(set(near.tolist())) and (dyn != near).mean() > 0.3


@pytest.mark.integration   # trains in-process: seconds, not the fast tier
def test_large_beta_faiss_artifact_equals_dynamics_artifact(tmp_path):
    """assign: prototype (FAISS IndexFlatL2 on embed) serves ClAM's rule exactly when beta is large."""
    m, x = _random_clam(beta=1e4)
    save_artifact(m, tmp_path / "dyn")
    m.params.assign = "prototype"
    m_proto = ClAM(16, m.params)
    m_proto.load_state_dict(m.state_dict())
    save_artifact(m_proto, tmp_path / "proto")
    a, b = distclust.load(tmp_path / "dyn"), distclust.load(tmp_path / "proto")
    assert a.config["assign_by"] == "proba" and b.config["assign_by"] == "prototype"
    np.testing.assert_array_equal(a.predict(x.numpy()), b.predict(x.numpy()))
    np.testing.assert_array_equal(a.predict(x.numpy()), m.predict_dynamics(x).numpy())


@pytest.mark.integration   # trains in-process: seconds, not the fast tier
def test_masked_training_improves_over_random_initialisation():
    X, y = make_blobs()
    X = (X - X.mean(0)) / X.std(0)
    Xt = torch.from_numpy(X)
    accs0, accs1 = [], []
    for seed in range(3):
        torch.manual_seed(seed)
        m = ClAM(16, ClamParams(n_clusters=4, beta=1.0, alpha=0.5, steps=10, mask_prob=0.2, lr=0.05))
        m.memories.data.copy_(Xt[torch.randperm(len(Xt), generator=torch.Generator().manual_seed(seed))[:4]])
        with torch.no_grad():
            e0 = m.completion_error(Xt, torch.Generator().manual_seed(99)).item()
        accs0.append(cluster_scores(m.predict_dynamics(Xt).numpy(), y)["acc"])
        opt = torch.optim.Adam([m.memories], lr=0.05)
        for _ in range(8):
            perm = torch.randperm(len(Xt))
            for i in range(0, len(Xt), 64):
                loss = m(Xt[perm[i:i + 64]], "clam")["loss"]
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            e1 = m.completion_error(Xt, torch.Generator().manual_seed(99)).item()
        accs1.append(cluster_scores(m.predict_dynamics(Xt).numpy(), y)["acc"])
        assert e1 < 0.7 * e0, (seed, e0, e1)   # the same masks are completed far better
    assert np.mean(accs1) > np.mean(accs0) + 0.02, (accs0, accs1)   # and the clusters with them


def test_bad_parameters_are_refused():
    for key, value in (("alpha", 2.5), ("beta", 0), ("mask_prob", 1.0), ("init", "kmeans++"), ("assign", "x")):
        with pytest.raises(SpecError, match=key):
            load_spec(_spec("clam", **{key: value}))
    load_spec(_spec("deep-clam", init="kmeans"))  # deep ClAM may seed from k-means on the latent
    load_spec(_spec("clam", init="kmeans"))       # and ClAM from k-means on its features
    with pytest.raises(SpecError, match="kmeans_nredo"):
        load_spec(_spec("clam", init="kmeans", kmeans_nredo=0))


@pytest.mark.integration   # trains in-process: seconds
def test_kmeans_start_is_a_kmeans_solution_that_training_refines(blobs_dataset, blobs_npz, tmp_path):
    """init: kmeans seeds the memories at FAISS k-means of the init sample (here all rows): the init stage
    already separates the blobs, and masked training keeps the clusters while lowering the completion error."""
    from distclust.engine.inprocess import train_inprocess

    res = train_inprocess(load_spec(_spec("clam", init="kmeans", kmeans_nredo=3)), data=str(blobs_dataset),
                          out_dir=tmp_path / "run", quiet=True)
    init = next(h for h in res.history if h["stage"] == "init")
    assert init["acc"] > 0.95 and "init_completion" not in init, init
    clam = [h for h in res.history if h["stage"] == "clam"]
    assert clam[-1]["completion"] < clam[0]["completion"]
    d = np.load(blobs_npz)
    assert distclust.load(res.model_dir).score_metrics(d["X"], d["y"])["acc"] > 0.95


def test_dynamics_is_differentiable_in_the_memories():
    rho = torch.randn(3, 4, requires_grad=True)
    v = run_dynamics(torch.randn(5, 4), rho, 1.0, 0.5, 5)
    v.sum().backward()
    assert rho.grad is not None and rho.grad.abs().sum() > 0


# --------------------------------------------------------------------------- end to end on Ray
def _spec(model, **over):
    raw = tiny_spec(model)
    m = {"name": model, "n_clusters": 4, "beta": 1.0, "steps": 5, "alpha": 0.5, "mask_prob": 0.2, "epochs": 4}
    if model == "clam":
        m["lr"] = 0.05
    else:
        m.update(latent_dim=4, hidden=[32, 32], pretrain_epochs=3, lr=1e-3)
    m.update(over)
    raw["model"] = m
    return raw


@pytest.fixture(scope="module", params=["clam", "deep-clam"])
def trained(request, ray_cluster, blobs_dataset, tmp_path_factory):
    """deep-clam through Ray Train (2 workers, DDP); clam through the same loop in this process (a Ray
    Train start is ~15 s of the suite's CPU; the engine tests cover the Ray path of the loop)."""
    from distclust.engine.inprocess import train_inprocess

    out = tmp_path_factory.mktemp(request.param)
    spec = load_spec(_spec(request.param))
    if request.param == "clam":
        return request.param, train_inprocess(spec, data=str(blobs_dataset), out_dir=out, quiet=True)
    return request.param, run_training(spec, out, data=str(blobs_dataset))


def test_trains_end_to_end_and_clusters_blobs(trained, blobs_npz):
    name, res = trained
    d = np.load(blobs_npz)
    model = distclust.load(res.model_dir)
    assert model.config["model"] == name and model.config["assign_by"] == "proba"
    assert model.cluster_centers_.shape == (4, 16 if name == "clam" else 4)
    stages = [h["stage"] for h in res.history]
    assert stages.count("clam") == 4 and "init" in stages and stages[-1] == "done"
    init = next(h for h in res.history if h["stage"] == "init")
    assert "acc" in init and "init_spread" in init
    clam = [h for h in res.history if h["stage"] == "clam"]
    assert clam[-1]["completion"] < clam[0]["completion"]
    scores = model.score_metrics(d["X"], d["y"])
    assert scores["acc"] >= init["acc"] - 0.02 and scores["acc"] > 0.7, (init, scores)
    # the artifact reloads to the same memories and clusters
    again = distclust.load(res.model_dir)
    np.testing.assert_array_equal(again.cluster_centers_, model.cluster_centers_)
    np.testing.assert_array_equal(again.predict(d["X"]), model.predict(d["X"]))
    assert model.predict_proba(d["X"][:10]).shape == (10, 4)


def test_assign_equals_predict(trained, blobs_dataset, blobs_npz, tmp_path):
    from distclust.assign import run_assign

    _, res = trained
    s = run_assign(res.model_dir, blobs_dataset, tmp_path / "assign", rows_per_unit=200, progress=False)
    t = pq.read_table(tmp_path / "assign").to_pandas().sort_values("id")
    X = np.load(blobs_npz)["X"]
    assert s["rows"] == len(X) == len(t)
    np.testing.assert_array_equal(t["cluster"].to_numpy(), distclust.load(res.model_dir).predict(X))
