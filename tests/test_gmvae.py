"""GMVAE family: the marginalised ELBO against a brute-force sum, O(1)-in-K cost of the
Concrete loss (tensor sizes, not timings), annealing schedules, and each variant end to
end on a real local Ray (train → artifact → assign)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch.nn import functional as F

from conftest import ROOT, tiny_spec

import distclust
from distclust.errors import SpecError
from distclust.models import get_model_class
from distclust.models.distributions import schedule
from distclust.spec import load_spec

VARIANTS = ["gmvae", "gmvae-gumbel", "concrete-gmvae"]


def _spec(name):
    """tiny_spec for a GMVAE variant (without the autoencoder keys it does not have)."""
    raw = tiny_spec(name)
    for key in ("pretrain_epochs", "kmeans_nredo"):
        raw["model"].pop(key)
    return raw


def _model(name, k=3, d=6, latent=2, **over):
    cls = get_model_class(name)
    torch.manual_seed(0)
    return cls(d, cls.Params(n_clusters=k, latent_dim=latent, hidden=[8, 5], **over))


# --------------------------------------------------------------------------- the marginalised ELBO
@pytest.mark.parametrize("encoder", ["shared", "separate"])
def test_marginal_elbo_equals_brute_force_sum_over_y(encoder):
    k, d, latent, n = 3, 6, 2, 5
    m = _model("gmvae", k, d, latent, encoder=encoder).double()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, d, generator=g, dtype=torch.float64)
    eps = torch.randn(k, n, latent, generator=g, dtype=torch.float64)
    got = m.marginal_elbo(x, eps)

    with torch.no_grad():
        h = m.trunk(x)                                   # normalizer is the identity here
        q = F.softmax(m.qy(h), -1)
        expected = torch.zeros(n, dtype=torch.float64)
        for i in range(n):
            total = 0.0
            for y in range(k):
                onehot = torch.zeros(k, dtype=torch.float64)
                onehot[y] = 1.0
                mu_q, lv_q = m.qz(torch.cat([h[i], onehot]))
                z = mu_q + torch.exp(lv_q / 2) * eps[y, i]
                p = torch.sigmoid(m.decoder(z))
                log_px = float((x[i] * torch.log(p) + (1 - x[i]) * torch.log(1 - p)).sum())
                mu_p, lv_p = m.pz_mu.weight[:, y], m.pz_logvar.weight[:, y]
                kl_z = 0.0
                for j in range(latent):   # KL of two 1-D Gaussians, written out
                    vq, vp = math.exp(lv_q[j]), math.exp(lv_p[j])
                    kl_z += 0.5 * (math.log(vp / vq) + (vq + (mu_q[j] - mu_p[j]) ** 2) / vp - 1)
                total += float(q[i, y]) * (log_px - kl_z)
            kl_y = sum(float(q[i, y]) * math.log(float(q[i, y]) * k) for y in range(k))
            expected[i] = total - kl_y
    np.testing.assert_allclose(got["elbo"].detach().numpy(), expected.numpy(), rtol=1e-9, atol=1e-9)
    # and the training loss is its negative batch mean
    m.train_step = 0
    torch.manual_seed(3)
    assert torch.isfinite(m(x, "train")["loss"])


def test_softplus_variances_are_arias_parameterisation():
    """variance: softplus reads the networks' outputs as σ² = softplus(a) (jariasf/GMVAE) for q(z|x,y)
    and p(z|y), with biases on p(z|y); exp reads them as log σ² with p(z|y)'s log σ² starting at 0."""
    m = _model("gmvae-gumbel", variance="softplus").double()
    x = torch.rand(4, 6, dtype=torch.float64)
    with torch.no_grad():
        a = m.pz_logvar.weight.t() + m.pz_logvar.bias          # (K, latent) pre-activations
        np.testing.assert_allclose(m.component_logvars().exp().numpy(), F.softplus(a).numpy() + 1e-8, rtol=1e-9)
        assert m.component_logvars().std() > 0                  # Xavier weights: σ²_y differ per y and dim
        h = m.trunk(x)
        y = torch.eye(3, dtype=torch.float64)[[0, 1, 2, 0]]
        lin = m.qz.head.logvar(m.qz.trunk(torch.cat([h, y], -1)))
        np.testing.assert_allclose(m.q_z(h, y)[1].exp().numpy(), F.softplus(lin).numpy() + 1e-8, rtol=1e-9)
    m.pz_mu.bias.data.fill_(0.5)                                # the mean's bias moves every component
    np.testing.assert_allclose(m.component_means().detach().numpy(),
                               (m.pz_mu.weight.t() + 0.5).detach().numpy())
    torch.manual_seed(0)
    assert torch.isfinite(m(x, "train")["loss"]) and torch.isfinite(m.marginal_elbo(x)["elbo"]).all()
    e = _model("gmvae-gumbel")
    assert e.pz_logvar.bias is None and float(e.component_logvars().detach().abs().max()) == 0.0


# --------------------------------------------------------------------------- cost in K
def _decoder_calls(model, x):
    rows = []
    hook = model.decoder.register_forward_hook(lambda mod, inp, out: rows.append(tuple(inp[0].shape)))
    try:
        model.train_step = 0
        model(x, "train")["loss"].backward()
    finally:
        hook.remove()
    return rows


@pytest.mark.parametrize("name", ["concrete-gmvae", "gmvae-gumbel"])
def test_single_sample_loss_cost_does_not_grow_with_k(name):
    x = torch.rand(16, 6)
    calls = {k: _decoder_calls(_model(name, k), x) for k in (2, 10, 200)}
    # one decoder call on (batch, latent) whatever K is
    assert calls[2] == calls[10] == calls[200] == [(16, 2)]
    # the z-encoder's hidden layer also sees batch rows only
    m = _model(name, 200)
    seen = []
    hk = m.qz.trunk.register_forward_hook(lambda mod, inp, out: seen.append(out.shape[0]))
    m(x, "train")
    hk.remove()
    assert seen == [16]


def test_marginalised_loss_cost_grows_linearly_with_k():
    x = torch.rand(16, 6)
    for k in (2, 10, 200):
        assert _decoder_calls(_model("gmvae", k), x) == [(16 * k, 2)]


# --------------------------------------------------------------------------- annealing
def test_schedules_produce_the_configured_values():
    lin = schedule("linear", 0.0, 1.0, warmup_steps=10, total_steps=30)
    assert [lin(s) for s in (0, 9, 10, 15, 20, 30, 100)] == pytest.approx([0, 0, 0, 0.25, 0.5, 1, 1])
    cos = schedule("cosine", 0.0, 1.0, warmup_steps=0, total_steps=10)
    assert [cos(s) for s in (0, 5, 10)] == pytest.approx([0, 0.5, 1])
    assert cos(2.5) == pytest.approx(0.5 * (1 - math.cos(math.pi / 4)))
    step = schedule("step", 0.0, 1.0, warmup_steps=2, total_steps=6, levels=4)
    assert [step(s) for s in (0, 2, 2.9, 3, 4, 5.5, 6, 9)] == pytest.approx([0, 0, 0, 0.25, 0.5, 0.75, 1, 1])
    assert schedule("constant", 0.0, 1.0, 5, 10)(0) == 1.0
    tau = schedule("exp", 1.0, 0.5, rate=0.1)           # Arias: max(min, initial · exp(-rate · epoch))
    assert [tau(e) for e in (0, 3, 100)] == pytest.approx([1.0, math.exp(-0.3), 0.5])
    tau2 = schedule("exp", 2.0, 0.5, 0, 10)             # rate derived: reaches the end at total_steps
    assert tau2(5) == pytest.approx(1.0) and tau2(10) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="schedule"):
        schedule("sigmoid", 0, 1, 0, 1)
    with pytest.raises(ValueError, match="warmup_steps"):
        schedule("linear", 0, 1, 10, 5)


def test_concrete_model_logs_annealed_weights_at_given_steps():
    m = _model("concrete-gmvae", kl_schedule="linear", kl_warmup_epochs=1, kl_anneal_epochs=2,
               temperature_schedule="exp", temperature_start=1.0, temperature_end=0.5, temperature_decay=0.2)
    m.anneal_origin.fill_(100)            # the training stage began at global step 100
    m.anneal_steps_per_epoch.fill_(10)
    x = torch.rand(4, 6)
    for step, kl_w, epoch in [(100, 0.0, 0.0), (110, 0.0, 1.0), (120, 0.5, 2.0), (125, 0.75, 2.5), (200, 1.0, 10.0)]:
        m.train_step = step
        out = m(x, "train")
        assert float(out["kl_weight"]) == pytest.approx(kl_w), step
        assert float(out["temperature"]) == pytest.approx(max(0.5, math.exp(-0.2 * epoch)), rel=1e-6), step
    c = _model("concrete-gmvae", kl_schedule="cosine", kl_warmup_epochs=0, kl_anneal_epochs=4)
    c.anneal_steps_per_epoch.fill_(1)
    c.train_step = 2
    assert float(c(x, "train")["kl_weight"]) == pytest.approx(0.5)
    g = _model("gmvae-gumbel", temperature_schedule="linear", temperature_start=2.0, temperature_end=1.0,
               temperature_anneal_epochs=4)
    g.train_step = 3
    assert float(g(x, "train")["temperature"]) == pytest.approx(1.25)


def test_relaxed_kl_and_hard_samples_work():
    m = _model("concrete-gmvae", y_kl="relaxed", hard=True)
    m.train_step = 0
    out = m(torch.rand(8, 6), "train")
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and m.qy.weight.grad.abs().sum() > 0


def test_separate_encoders_read_x_and_train():
    """encoder: separate (Arias): q(y|x) and q(z|x,y) are each a full MLP on x; the ELBO is unchanged in form."""
    m = _model("gmvae", encoder="separate")
    x = torch.rand(7, 6)
    assert isinstance(m.trunk, torch.nn.Identity) and m.qz.trunk[0].in_features == 6 + 3
    out = m(x, "train")
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and m.qy[0].weight.grad.abs().sum() > 0
    raw = _spec("gmvae")
    raw["model"]["encoder"] = "split"
    with pytest.raises(SpecError, match="encoder"):
        load_spec(raw)


def test_bad_annealing_keys_are_spec_errors():
    raw = _spec("concrete-gmvae")
    raw["model"]["kl_schedule"] = "sigmoid"
    with pytest.raises(SpecError, match="kl_schedule"):
        load_spec(raw)
    raw["model"]["kl_schedule"] = "linear"
    raw["model"]["temperature_start"] = 0
    with pytest.raises(SpecError, match="temperature"):
        load_spec(raw)


@pytest.mark.parametrize("name", VARIANTS)
def test_job_files_load(name):
    for prefix in ("digits", "mnist"):
        spec = load_spec(ROOT / "jobs" / f"{prefix}-{name}.yaml")
        assert spec.model_name == name


def test_generate_one_row_of_images_per_component(tmp_path):
    from PIL import Image

    from distclust.report.plots import sample_grid_png

    m = _model("gmvae", k=4, d=16)
    s = m.generate(3, seed=0)
    assert s.shape == (4, 3, 16) and float(s.min()) >= 0 and float(s.max()) <= 1
    sample_grid_png(m, tmp_path / "g.png", n_per_component=3)
    assert Image.open(tmp_path / "g.png").size == (3 * 5 + 1, 4 * 5 + 1)


# --------------------------------------------------------------------------- end to end, the one loop
@pytest.mark.parametrize("name", VARIANTS)
def test_variant_trains_saves_loads_and_assigns(ray_cluster, blobs_dataset, blobs_npz, tmp_path, name):
    """Concrete trains on 2 Ray Train workers (DDP, 2 epochs to see the annealed weight move); the other
    two run the same loop in one process (a Ray Train start costs ~15 s of the suite's CPU each; the
    Ray path of the loop is the engine tests' subject). Assignment goes through Ray for all three."""
    from distclust.assign import run_assign
    from distclust.engine.inprocess import train_inprocess
    from distclust.engine.trainer import run_training

    raw = _spec(name)
    raw["model"].update({"recon": "gaussian", "epochs": 1, "hidden": [16]})
    raw["train"]["eval_every"] = 1
    if name == "concrete-gmvae":
        raw["model"].update({"epochs": 2, "kl_anneal_epochs": 2})
        res = run_training(load_spec(raw), tmp_path / "run", data=str(blobs_dataset))
    else:
        res = train_inprocess(load_spec(raw), data=str(blobs_dataset), out_dir=tmp_path / "run", quiet=True)
    train = [h for h in res.history if h["stage"] == "train"]
    assert len(train) == raw["model"]["epochs"] and all(math.isfinite(h["loss"]) for h in train)
    if name != "gmvae":
        assert "temperature" in train[0]
    if name == "concrete-gmvae":   # per-epoch mean of the annealed weight: 0→1 over 2 epochs
        assert 0.0 < train[0]["kl_weight"] < train[1]["kl_weight"] < 1.0
    X = np.load(blobs_npz)["X"]
    fm = distclust.load(res.model_dir)
    p = fm.predict_proba(X)
    assert p.shape == (len(X), 4) and np.allclose(p.sum(1), 1, atol=1e-5)
    np.testing.assert_array_equal(fm.predict(X), p.argmax(1))
    assert fm.transform(X).shape == (len(X), 4)
    s = run_assign(res.model_dir, blobs_dataset, tmp_path / "assign", rows_per_unit=200, progress=False)
    t = pq.read_table(tmp_path / "assign").to_pandas().sort_values("id")
    assert s["rows"] == len(X)
    np.testing.assert_array_equal(t["cluster"].to_numpy(), fm.predict(X))
    assert Path(res.model_dir, "weights.pt").is_file()
