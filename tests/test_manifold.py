"""The manifold model (autoencoder → UMAP → Gaussian mixture, learned head) with real umap-learn on
small generated data: head fidelity, assign == predict, artifacts without umap-learn, the label-free
n_neighbors rule, spec errors."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, tiny_spec

import distclust
from distclust.errors import SpecError
from distclust.spec import load_spec


def rings(n=800, k=4, d=10, seed=0, noise=0.08, gap=4.0):
    """k noisy circles (1-D manifolds) in random 2-D planes of R^d, centres ~gap apart."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n // k)
    X = np.zeros((len(y), d))
    for c in range(k):
        q, _ = np.linalg.qr(rng.normal(size=(d, 2)))
        t = rng.uniform(0, 2 * np.pi, (y == c).sum())
        X[y == c] = 2.0 * np.stack([np.cos(t), np.sin(t)], 1) @ q.T + rng.normal(0, 1, d) * gap / np.sqrt(d)
    return (X + rng.normal(0, noise, X.shape)).astype(np.float32), y.astype(np.int64)


def manifold_spec(**over):
    m = dict(n_neighbors=15, n_components=2, umap_epochs=50, holdout=100, head_epochs=8, head_lr=3e-3)
    m.update(over)
    raw = tiny_spec("manifold", **m)
    raw["model"].pop("kmeans_nredo")   # no k-means in this model
    raw["train"]["eval_every"] = 1
    return raw


def run_in_process(model, X, y, batch_size=64, seed=0):
    """The model's stages in one process (no Ray), as the engine runs them."""
    from distclust.engine.context import WorkerContext

    ctx = WorkerContext.in_memory(model, torch.from_numpy(X), torch.from_numpy(y), torch.device("cpu"), seed,
                                  batch_size)
    logs = {}
    for st in model.stages():
        logs.update((st.on_start(ctx) if st.on_start else None) or {})
        if not st.epochs:
            continue
        opt = torch.optim.Adam(list(st.parameters()) if st.parameters else model.parameters(), lr=st.lr)
        for epoch in range(st.epochs):
            for i, b in enumerate(ctx.epoch_batches(epoch)):
                if st.on_step:
                    st.on_step(ctx, epoch * ctx.steps_per_epoch + i)
                model.train_step = ctx.global_step
                out = model(b["features"], st.name)
                opt.zero_grad()
                out["loss"].backward()
                opt.step()
                ctx.global_step += 1
            if st.on_epoch_end:
                st.on_epoch_end(ctx, epoch)
    return logs


@pytest.fixture(scope="module")
def in_process():
    from distclust.models.registry import get_model_class
    from distclust.validation import build

    X, y = rings()
    cls = get_model_class("manifold")
    p = build(cls.Params, {"n_clusters": 4, "latent_dim": 6, "hidden": [64, 64], "pretrain_epochs": 10,
                           "n_neighbors": 20, "n_components": 2, "umap_epochs": 100, "holdout": 150,
                           "head_epochs": 20, "head_lr": 3e-3, "assign": "nearest"}, "model")
    torch.manual_seed(0)
    model = cls(X.shape[1], p)
    logs = run_in_process(model, X, y)
    return model.eval(), logs, X, y


@pytest.mark.integration   # trains in-process: seconds, not the fast tier
def test_head_reproduces_the_fitted_coordinates(in_process):
    model, logs, X, y = in_process
    f = model._fit
    with torch.no_grad():
        pred = model.head_std(f["z"]) * model.y_scale + model.y_shift
    err = (pred - f["y"]).norm(dim=1)
    spread = (f["y"] - f["y"].mean(0)).norm(dim=1).mean()
    assert float(err.median()) < 0.1 * float(spread), (float(err.median()), float(spread))
    assert logs["head_r2_sample"] > 0.95 and logs["head_agreement_sample"] > 0.97
    # rows the UMAP fit never saw: the head and UMAP.transform put them in the same clusters
    assert logs["holdout_rows"] == 150 and logs["head_umap_agreement"] > 0.9


@pytest.mark.integration   # uses the in-process fit
def test_the_posterior_kl_term_counts_only_when_weighted(in_process):
    """head_resp_weight (off by default) adds the clamped KL between the mixture posteriors at the
    fitted point and at the head's point; at 0 the loss is the two regressions alone."""
    import dataclasses

    model, _, X, _ = in_process
    x, base, w = torch.from_numpy(X[:64]), model.params, 1000.0
    try:
        with torch.no_grad():
            model.params = dataclasses.replace(base, head_resp_weight=0.0)
            off = model(x, "head")
            model.params = dataclasses.replace(base, head_resp_weight=w)
            on = model(x, "head")
    finally:
        model.params = base
    assert "resp_kl" not in off
    assert torch.isclose(off["loss"], off["fit_mse"] + off["knn_mse"])
    assert torch.isclose(on["fit_mse"], off["fit_mse"]) and torch.isclose(on["knn_mse"], off["knn_mse"])
    added = float(on["loss"] - off["loss"])
    assert 0 < added <= w * float(on["resp_kl"]) * (1 + 1e-4) + 1e-6, (added, float(on["resp_kl"]))


@pytest.mark.integration   # trains in-process: seconds, not the fast tier
def test_nearest_mean_artifact_assigns_through_faiss(in_process, tmp_path):
    from distclust.artifact import save_artifact

    model, _, X, y = in_process
    save_artifact(model, tmp_path / "m")
    fm = distclust.load(tmp_path / "m")
    assert fm.config["assign_by"] == "prototype"
    with torch.no_grad():
        expect = torch.cdist(model.embed(torch.from_numpy(X)), model.prototypes()).argmin(1).numpy()
    labels = fm.predict(X)
    assert (labels == expect).mean() > 0.999   # FAISS vs torch distances: ties at most
    assert fm.score_metrics(X, y)["acc"] > 0.95


@pytest.fixture(scope="module")
def ray_run(ray_cluster, blobs_dataset, tmp_path_factory):
    from distclust.engine.trainer import run_training

    return run_training(load_spec(engine_spec()), tmp_path_factory.mktemp("manifold") / "run",
                        data=str(blobs_dataset))


def engine_spec():
    """The engine tests' spec: the label-free rule runs (one candidate, two seeds, its fits dealt to the
    two workers), so the run goes through every stage the jobs use."""
    return manifold_spec(select_n_neighbors=[15], select_seeds=2, select_sample=300)


def test_trains_through_the_engine(ray_run, blobs_npz):
    h = ray_run.history
    stages = [r["stage"] for r in h]
    assert stages.count("pretrain") == 3 and "manifold" in stages and stages.count("head") == 8
    fit = next(r for r in h if r["stage"] == "manifold")
    assert fit["n_neighbors"] == 15 and fit["manifold_rows"] + fit["holdout_rows"] == 600
    agree = next(r for r in h if r["stage"] == "agreement")
    assert agree["head_umap_agreement"] > 0.9
    d = np.load(blobs_npz)
    assert distclust.load(ray_run.model_dir).score_metrics(d["X"], d["y"])["acc"] > 0.95


def test_assign_equals_in_memory_predict(ray_run, blobs_dataset, blobs_npz, tmp_path):
    import pyarrow.parquet as pq

    from distclust.assign import run_assign

    fm = distclust.load(ray_run.model_dir)
    X = np.load(blobs_npz)["X"]
    p = fm.predict_proba(X)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    with torch.no_grad():
        torch_pred = fm.model.predict(torch.from_numpy(X)).numpy()
    np.testing.assert_array_equal(fm.predict(X), torch_pred)
    run_assign(ray_run.model_dir, blobs_dataset, tmp_path / "assign", progress=False)
    t = pq.read_table(tmp_path / "assign").to_pandas().sort_values("id")
    np.testing.assert_array_equal(t["cluster"].to_numpy(), fm.predict(X))


def test_same_seed_gives_the_same_clusters(ray_run, blobs_dataset, blobs_npz, tmp_path):
    """A second run with the same seed (the rule's fits dealt to 2 workers, UMAP, the mixture, the head
    under DDP): the same rule score and bit-identical clusters and component means."""
    from distclust.engine.trainer import run_training

    again = run_training(load_spec(engine_spec()), tmp_path / "run", data=str(blobs_dataset))
    fits = [next(r for r in run.history if r["stage"] == "manifold") for run in (ray_run, again)]
    scores = [{k: v for k, v in f.items() if k.startswith("select_score") or k == "n_neighbors"} for f in fits]
    assert "select_score_nn15" in scores[0] and scores[0] == scores[1]
    X = np.load(blobs_npz)["X"]
    models = [distclust.load(run.model_dir) for run in (ray_run, again)]
    np.testing.assert_array_equal(models[0].predict(X), models[1].predict(X))
    np.testing.assert_array_equal(models[0].model.prototypes().numpy(), models[1].model.prototypes().numpy())


def test_artifact_predicts_without_umap(ray_run, blobs_npz, tmp_path):
    """Prediction never needs UMAP: a process where importing umap (or pynndescent) fails still loads
    the model and gives the same clusters."""
    X = np.load(blobs_npz)["X"]
    np.save(tmp_path / "expect.npy", distclust.load(ray_run.model_dir).predict(X))
    code = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('umap', 'pynndescent'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import numpy as np, distclust
try:
    import umap
    sys.exit('umap import was not blocked')
except ImportError:
    pass
m = distclust.load({str(ray_run.model_dir)!r})
X = np.load({str(blobs_npz)!r})['X']
assert (m.predict(X) == np.load({str(tmp_path / 'expect.npy')!r})).all()
assert not any(k.split('.')[0] in ('umap', 'pynndescent') for k in sys.modules)
print('ok')
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]


@pytest.mark.integration   # trains in-process: seconds, not the fast tier
def test_label_free_n_neighbors_rule_picks_the_true_structure():
    """On rings, 3 neighbours fragments each ring and 20 recovers them; the rule sees it without labels."""
    from sklearn.metrics import adjusted_rand_score

    from distclust.models.manifold import ManifoldParams, select_n_neighbors

    X, y = rings()
    p = ManifoldParams(n_clusters=4, n_components=2, umap_epochs=50, select_seeds=2)
    sel = select_n_neighbors(X, [3, 20], p, seed=0)
    truth = {c: np.mean([adjusted_rand_score(y, v) for (cc, _), v in sel["partitions"].items() if cc == c])
             for c in (3, 20)}
    assert truth[3] < 0.8 and truth[20] > 0.95, truth     # the data really separates the candidates
    assert sel["best"] == 20, sel["scores"]
    assert sel["stability"][20] > sel["stability"][3]


@pytest.mark.parametrize("key,value,match", [
    ("n_neighbors", 1, "n_neighbors"), ("min_dist", 2.0, "min_dist"), ("assign", "umap", "assign"),
    ("manifold_sample", 5, "manifold_sample"), ("head_epochs", 0, "head_epochs"),
    ("select_n_neighbors", [1, 10], "select_n_neighbors"), ("n_components", 0, "n_components"),
    ("head_knn", -1, "head_knn"), ("umap_epochs", 0, "umap_epochs")])
def test_bad_values_are_spec_errors(key, value, match):
    with pytest.raises(SpecError, match=match) as e:
        load_spec(manifold_spec(**{key: value}))
    assert "Fix:" in str(e.value)


def test_bad_pretrained_path_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="pretrained"):
        load_spec(manifold_spec(pretrained=str(tmp_path / "nope")))


def test_report_draws_the_manifold_coloured_by_cluster(ray_run, blobs_dataset):
    """With 2 UMAP components the report draws the head's coordinates as they are (no projection)."""
    from distclust.report import write_report

    text = write_report(ray_run.model_dir.parent, data=str(blobs_dataset), tensorboard=False).read_text()
    assert "latent_projection.png" in text and "identity of the embeddings" in text
    assert (ray_run.model_dir.parent / "report" / "latent_projection.png").stat().st_size > 1000


def test_heartbeat_returns_the_result_and_raises_errors():
    """rank 0's long fit runs in a thread beside short collectives (one process here: no-ops)."""
    from types import SimpleNamespace

    from distclust.models.manifold import run_with_heartbeat

    ctx = SimpleNamespace(world_size=1, device=torch.device("cpu"), all_reduce=lambda t: t)
    assert run_with_heartbeat(ctx, lambda: 41 + 1, poll_s=0.01) == 42
    assert run_with_heartbeat(ctx, None, poll_s=0.01) is None

    def boom():
        raise ValueError("inside the fit")

    with pytest.raises(ValueError, match="inside the fit"):
        run_with_heartbeat(ctx, boom, poll_s=0.01)
