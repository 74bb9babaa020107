"""The Gaussian-mixture VAE family: one generative model, three ways to train it.

Generative model (all three)::

    y ~ Cat(1/K)                       (uniform prior over K clusters)
    z | y ~ N(mu_y, diag(sigma_y^2))   (learned per-component means / log-variances)
    x | z ~ Bernoulli(sigmoid(dec(z)))  or  N(dec(z), exp(recon_logvar))

Inference networks (all three): ``h = trunk(x)``, ``q(y|x) = softmax(qy(h))``,
``q(z|x,y) = N(mu(h, y), sigma(h, y)^2)`` (an MLP on ``[h, y]``, y one-hot or relaxed).
``encoder: shared`` makes ``trunk`` an MLP both heads read; ``encoder: separate`` (Arias)
makes ``trunk`` the identity and gives each head its own MLP on x.

- ``gmvae`` — marginalised (Dilokthanakul et al. 2016 / Rui Shu style): the ELBO sums
  over all K values of y for every row,
  ``Σ_y q(y|x) [E log p(x|z_y) - KL(q(z|x,y) ‖ p(z|y))] - KL(q(y|x) ‖ p(y))``,
  so the z-encoder head and the decoder run K times per row: cost linear in K.
- ``gmvae-gumbel`` — Arias' Gumbel-Softmax GMVAE: ``L = w_rec L_R + w_cat L_C + w_gauss L_G``
  (reconstruction; KL(q(y|x) ‖ Uniform); the Monte-Carlo Gaussian KL
  ``log q(z|x,y) - log p(z|y)`` at the sample), y a Gumbel-Softmax sample (soft, or hard
  straight-through) with the temperature annealed ``max(min, initial · exp(-decay · epoch))``.
- ``concrete-gmvae`` — Collier & Urdiales 2019: ONE reparameterised Concrete sample of y per
  row, so the Monte-Carlo ELBO runs the decoder once per row whatever K is (O(1) in K
  network work; only the K-wide heads grow). The weight on KL(q(y|x) ‖ p(y)) is annealed
  0 → 1 (``kl_schedule`` linear / cosine / step / constant, ``kl_warmup_epochs`` held at
  ``kl_start``, then ``kl_anneal_epochs`` to ``kl_end``), which keeps q(y|x) from
  collapsing onto the prior early on; the temperature is annealed too. ``y_kl: relaxed``
  uses the Concrete densities' Monte-Carlo KL (Maddison et al.) instead of the analytic
  categorical one.

Clusters are ``argmax q(y|x)`` (``assign_by = "proba"``); ``embed`` is the mean of
q(z|x, y*) at the most likely cluster y* (O(1) in K), ``component_means()`` the mu_y.
Annealing schedules are in epochs (fractional: the step within the stage divided by
the steps per epoch), and their current values are logged per epoch (``temperature``,
``kl_weight``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from ..validation import param, require
from .base import ClusterModel, ModelParams, Stage
from .distributions import (SCHEDULES, categorical_kl, decoder_mean, gumbel_softmax, kl_normal,
                            log_exp_concrete_density, log_normal, recon_log_likelihood, reparameterize,
                            sample_components, sample_exp_concrete, schedule)
from .networks import VARIANCES, GaussianEncoder, NetworkParams, mlp, variance_to_logvar

RECON = ("bernoulli", "gaussian")
ENCODERS = ("shared", "separate")


# --------------------------------------------------------------------------- parameters
@dataclass
class GMVAEParams(NetworkParams, ModelParams):
    n_clusters: int = param(10, ge=2, fix="a mixture needs 2 or more components, e.g. 10")
    hidden: list[int] = field(default_factory=lambda: [512, 256])   # encoder trunk; decoder mirrors it
    # bernoulli (features in [0, 1], e.g. global-minmax) | gaussian
    recon: str = param("bernoulli", choices=RECON,
                       fix="use bernoulli (features scaled to [0, 1], data.normalize: global-minmax) or gaussian")
    recon_logvar: float = 0.0         # log-variance of the Gaussian decoder (recon: gaussian)
    prior_scale: float = param(1.0, gt=0)   # std of the random init of the component means mu_y
    # shared: q(y|x) and q(z|x,y) share an MLP trunk on x; separate: each its own MLP on x (Arias),
    # q(z|x,y) on [x, y]
    encoder: str = param("shared", choices=ENCODERS)
    # how q(z|x,y) and p(z|y) output variances: exp (log-variances; p(z|y) log-variances start at 0, no
    # biases) or softplus (Arias' GMVAE: σ² = softplus(·), and p(z|y) = Linear(y) with biases, both maps
    # Xavier-initialised, so σ²_y starts near 0.69 and differs per component and dimension)
    variance: str = param("exp", choices=VARIANCES)
    epochs: int = param(30, ge=1)
    lr: float = param(1e-3, gt=0)
    weight_decay: float = param(0.0, ge=0)


@dataclass
class RelaxedParams(GMVAEParams):
    """Temperature annealing of the relaxed (Gumbel-Softmax / Concrete) sample of y, in epochs."""

    LOSS_WEIGHTING: ClassVar[tuple[str, ...]] = ("w_", "temperature")

    temperature_schedule: str = param("exp", choices=SCHEDULES)
    temperature_start: float = param(1.0, gt=0)
    temperature_end: float = param(0.5, gt=0)        # the minimum temperature
    # exp: rate per epoch (Arias' decay_temp_rate); 0 → derived from anneal
    temperature_decay: float = param(0.013876, ge=0)
    temperature_warmup_epochs: float = param(0.0, ge=0)
    temperature_anneal_epochs: float = param(0.0, ge=0)  # linear/cosine/step: epochs from start to end after the warm-up
    hard: bool = False                  # straight-through one-hot samples

    def check(self, s: str) -> None:
        super().check(s)
        require(not (self.temperature_schedule == "exp" and self.temperature_decay == 0
                     and self.temperature_anneal_epochs == 0), f"{s}.temperature_decay",
                "an exp temperature schedule needs temperature_decay > 0 or temperature_anneal_epochs > 0",
                "set temperature_decay (per epoch) or temperature_anneal_epochs")

    def temperature_fn(self):
        w = self.temperature_warmup_epochs
        return schedule(self.temperature_schedule, self.temperature_start, self.temperature_end, w,
                        w + self.temperature_anneal_epochs,
                        rate=(self.temperature_decay or None) if self.temperature_schedule == "exp" else None)


@dataclass
class GumbelParams(RelaxedParams):
    w_rec: float = param(1.0, ge=0)
    w_cat: float = param(1.0, ge=0)
    w_gauss: float = param(1.0, ge=0)


@dataclass
class ConcreteParams(RelaxedParams):
    LOSS_WEIGHTING: ClassVar[tuple[str, ...]] = ("w_", "temperature", "kl_")
    UNWEIGHTED_METRIC: ClassVar[str | None] = "neg_elbo"   # the bound with KL weight 1, whatever the schedule
    # linear | cosine | step | constant | exp (weight on KL(q(y|x) ‖ p(y)))
    kl_schedule: str = param("linear", choices=SCHEDULES)
    kl_start: float = param(0.0, ge=0, fix="anneal from 0 to 1: kl_start: 0, kl_end: 1")
    kl_end: float = param(1.0, ge=0, fix="anneal from 0 to 1: kl_start: 0, kl_end: 1")
    kl_warmup_epochs: float = param(0.0, ge=0)       # held at kl_start
    kl_anneal_epochs: float = param(10.0, ge=0)      # then moved to kl_end over this many epochs
    kl_levels: int = param(4, ge=1)                  # kl_schedule: step — number of equal jumps
    # analytic (categorical KL) | relaxed (Concrete densities, MC)
    y_kl: str = param("analytic", choices=("analytic", "relaxed"))
    # y_kl: relaxed — temperature of the prior Concrete (0: same as q's)
    prior_temperature: float = param(0.0, ge=0, fix="use 0 (same as q) or a positive temperature")

    def check(self, s: str) -> None:
        super().check(s)
        require(not (self.kl_schedule == "exp" and (self.kl_start <= 0 or self.kl_end <= 0)), f"{s}.kl_schedule",
                "an exp KL schedule needs positive kl_start and kl_end", "use linear, cosine or step to start at 0")

    def kl_weight_fn(self):
        w = self.kl_warmup_epochs
        return schedule(self.kl_schedule, self.kl_start, self.kl_end, w, w + self.kl_anneal_epochs,
                        levels=self.kl_levels)


# --------------------------------------------------------------------------- models
class GMVAE(ClusterModel):
    """Marginalised GMVAE: the ELBO sums over every cluster for every row (cost linear in K)."""

    name = "gmvae"
    Params = GMVAEParams
    assign_by = "proba"

    def __init__(self, input_dim, params: GMVAEParams, normalizer=None):
        super().__init__(input_dim, params, normalizer)
        p, k, h = params, params.n_clusters, list(params.hidden)
        if p.encoder == "shared":   # h = trunk(x) feeds both heads
            self.trunk = mlp([input_dim, *h], p.activation, last_activation=True)
            self.qy = nn.Linear(h[-1], k)                              # q(y|x) logits
            self.qz = GaussianEncoder(h[-1] + k, [h[-1]], p.latent_dim, p.activation, p.variance)  # on [h, y]
        else:                       # h = x; each head is a full MLP
            self.trunk = nn.Identity()
            self.qy = mlp([input_dim, *h, k], p.activation)
            self.qz = GaussianEncoder(input_dim + k, h, p.latent_dim, p.activation, p.variance)
        arias = p.variance == "softplus"
        self.pz_mu = nn.Linear(k, p.latent_dim, bias=arias)            # p(z|y): mu_y = weight[:, y] (+ bias)
        self.pz_logvar = nn.Linear(k, p.latent_dim, bias=arias)
        self.decoder = mlp([p.latent_dim, *h[::-1], input_dim], p.activation)
        with torch.no_grad():
            self.pz_mu.weight.normal_(0.0, p.prior_scale)
            if arias:   # Xavier-normal weights, zero biases, as every Linear in Arias' code
                nn.init.xavier_normal_(self.pz_logvar.weight)
                nn.init.zeros_(self.pz_mu.bias)
                nn.init.zeros_(self.pz_logvar.bias)
            else:
                self.pz_logvar.weight.zero_()
        # annealing clock: the global step where the training stage began and its steps per epoch
        self.register_buffer("anneal_origin", torch.zeros((), dtype=torch.long))
        self.register_buffer("anneal_steps_per_epoch", torch.ones((), dtype=torch.long))
        self.train_step = 0

    # -- pieces -----------------------------------------------------------------------
    def encode_y(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, logits of q(y|x)) for RAW features."""
        h = self.trunk(self.normalizer(x))
        return h, self.qy(h)

    def q_z(self, h: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of q(z|x,y) for y one-hot or relaxed (any leading shape)."""
        return self.qz(torch.cat([h, y], -1))

    def q_z_every_y(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of q(z|x,y) for every one-hot y, each (K, N, latent): the z-head on K·N rows of
        ``[h, y]``. Splitting its first layer (``W_h h`` once per row, plus the column ``W_y[:, y]``)
        gives the same bound 1.08-1.19x faster (bench/gmvae_marginal_split.py) but changes float
        order, which moved the digits job's seeds 0-2 from 0.811 to 0.742 mean ACC; not shipped until
        that is re-measured on more seeds (docs/benchmarks/gmvae.md)."""
        k, n = self.n_clusters, h.shape[0]
        ys = torch.eye(k, device=h.device, dtype=h.dtype).unsqueeze(1).expand(k, n, k)   # (K, N, K) one-hot
        return self.q_z(h.unsqueeze(0).expand(k, n, h.shape[-1]), ys)

    def p_z(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of p(z|y) for y one-hot or relaxed (a convex mix of the mu_y)."""
        return self.pz_mu(y), variance_to_logvar(self.pz_logvar(y), self.params.variance)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def recon_ll(self, out: torch.Tensor, xn: torch.Tensor) -> torch.Tensor:
        return recon_log_likelihood(out, xn, self.params.recon, self.params.recon_logvar)

    def component_means(self) -> torch.Tensor:
        return self.p_z(torch.eye(self.n_clusters, device=self.pz_mu.weight.device, dtype=self.pz_mu.weight.dtype))[0]

    def component_logvars(self) -> torch.Tensor:
        return self.p_z(torch.eye(self.n_clusters, device=self.pz_mu.weight.device, dtype=self.pz_mu.weight.dtype))[1]

    def anneal_epoch(self) -> float:
        """Fractional epochs since the training stage began (the unit of every schedule)."""
        step = int(getattr(self, "train_step", 0)) - int(self.anneal_origin)
        return max(step, 0) / max(int(self.anneal_steps_per_epoch), 1)

    # -- the marginalised ELBO (also the test-split bound for every variant) -------------
    def marginal_elbo(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-row terms of ``Σ_y q(y|x)[log p(x|z_y) - KL(q(z|x,y) ‖ p(z|y))] - KL(q(y|x) ‖ p(y))``.

        One reparameterised z_y per (row, y); ``eps`` (K, N, latent) fixes the noise.
        Runs the z-head and the decoder on K·N rows.
        """
        xn = self.normalizer(x)
        h, logits = self.encode_y(x)
        k, n = self.n_clusters, x.shape[0]
        eye = torch.eye(k, device=x.device, dtype=h.dtype)
        mu_q, lv_q = self.q_z_every_y(h)                            # (K, N, latent)
        mu_p, lv_p = self.p_z(eye)                                  # (K, latent)
        z = reparameterize(mu_q, lv_q, eps)                         # (K, N, latent)
        out = self.decode(z.reshape(k * n, -1)).reshape(k, n, -1)
        rec = self.recon_ll(out, xn.unsqueeze(0))                   # (K, N)
        kl_z = kl_normal(mu_q, lv_q, mu_p.unsqueeze(1), lv_p.unsqueeze(1))   # (K, N)
        q = F.softmax(logits, -1).t()                               # (K, N)
        kl_y = categorical_kl(logits)
        recon, klz = (q * rec).sum(0), (q * kl_z).sum(0)
        return {"elbo": recon - klz - kl_y, "recon": recon, "kl_z": klz, "kl_y": kl_y, "logits": logits}

    @torch.no_grad()
    def elbo(self, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """Per-row marginalised ELBO (nats; a lower bound on log p(x) of the normalised features)."""
        g = torch.Generator(device=x.device).manual_seed(seed)
        eps = torch.randn(self.n_clusters, x.shape[0], self.params.latent_dim, generator=g, device=x.device)
        return self.marginal_elbo(x, eps)["elbo"]

    # -- training -------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        p = self.params

        def start(ctx):
            self.anneal_origin.fill_(int(ctx.global_step))
            self.anneal_steps_per_epoch.fill_(max(int(ctx.steps_per_epoch), 1))
            return None

        def epoch_end(ctx, epoch):
            self.is_fitted.fill_(True)   # argmax q(y|x) is defined from the first epoch on
            return None

        return [Stage("train", p.epochs, p.lr, p.weight_decay, on_start=start, on_epoch_end=epoch_end,
                      monitor=self.monitor, min_epochs=self.settle_epochs())]

    # early stopping watches this per-epoch metric (lower is better) once settle_epochs() have run
    monitor = "loss"

    def settle_epochs(self) -> int:
        return 0

    def forward(self, x, stage):
        t = self.marginal_elbo(x)
        loss = -t["elbo"].mean()
        return {"loss": loss, "elbo": -loss.detach(), "recon": t["recon"].mean().detach(),
                "kl_z": t["kl_z"].mean().detach(), "kl_y": t["kl_y"].mean().detach()}

    # -- inference ------------------------------------------------------------------
    def predict_proba(self, x):
        return F.softmax(self.encode_y(x)[1], -1)

    def embed(self, x):
        h, logits = self.encode_y(x)
        y = F.one_hot(logits.argmax(-1), self.n_clusters).to(h.dtype)
        return self.q_z(h, y)[0]

    @torch.no_grad()
    def generate(self, n_per_component: int = 8, seed: int = 0, mean: bool = True) -> torch.Tensor:
        """(K, n, input_dim) samples in RAW feature space: z ~ p(z|y), x = decoder mean (or a sample)."""
        g = torch.Generator().manual_seed(seed)
        k, n = self.n_clusters, n_per_component
        mu, lv = self.component_means(), self.component_logvars()
        z = sample_components(mu, lv, n, g)
        xm = decoder_mean(self.decode(z.reshape(k * n, -1)), self.params.recon)
        if not mean and self.params.recon == "bernoulli":
            xm = torch.bernoulli(xm, generator=g)
        xm = xm.reshape(k, n, -1)
        return xm * self.normalizer.scale + self.normalizer.shift


class _RelaxedGMVAE(GMVAE):
    """Shared by the single-sample variants: temperature schedule and one relaxed y per row."""

    name = ""   # not a registered model itself

    def __init__(self, input_dim, params: RelaxedParams, normalizer=None):
        super().__init__(input_dim, params, normalizer)
        self._temperature = params.temperature_fn()

    def temperature(self) -> float:
        return float(self._temperature(self.anneal_epoch()))


class GumbelGMVAE(_RelaxedGMVAE):
    """Arias' Gumbel-Softmax GMVAE: L = w_rec·L_R + w_cat·KL(q(y|x) ‖ U) + w_gauss·(log q(z|x,y) − log p(z|y))."""

    name = "gmvae-gumbel"
    Params = GumbelParams

    def forward(self, x, stage):
        p = self.params
        xn = self.normalizer(x)
        h, logits = self.encode_y(x)
        tau = self.temperature()
        y = gumbel_softmax(logits, tau, hard=p.hard)
        mu_q, lv_q = self.q_z(h, y)
        z = reparameterize(mu_q, lv_q)
        mu_p, lv_p = self.p_z(y)
        rec = self.recon_ll(self.decode(z), xn)
        l_g = log_normal(z, mu_q, lv_q) - log_normal(z, mu_p, lv_p)
        l_c = categorical_kl(logits)
        loss = (p.w_rec * -rec + p.w_cat * l_c + p.w_gauss * l_g).mean()
        return {"loss": loss, "recon": rec.mean().detach(), "kl_z": l_g.mean().detach(),
                "kl_y": l_c.mean().detach(), "temperature": torch.tensor(tau, device=x.device)}


class ConcreteGMVAE(_RelaxedGMVAE):
    """Collier & Urdiales' Concrete GMVAE: one Concrete sample of y per row (O(1) in K), KL(y) weight annealed."""

    name = "concrete-gmvae"
    Params = ConcreteParams

    def __init__(self, input_dim, params: ConcreteParams, normalizer=None):
        super().__init__(input_dim, params, normalizer)
        self._kl_weight = params.kl_weight_fn()

    def kl_weight(self) -> float:
        return float(self._kl_weight(self.anneal_epoch()))

    # the training loss changes with the KL weight; the unweighted bound does not
    monitor = "neg_elbo"

    def settle_epochs(self) -> int:
        """Early stopping waits for the KL weight to reach its final value."""
        return int(math.ceil(self.params.kl_warmup_epochs + self.params.kl_anneal_epochs))

    def forward(self, x, stage):
        p = self.params
        xn = self.normalizer(x)
        h, logits = self.encode_y(x)
        tau, beta = self.temperature(), self.kl_weight()
        if p.y_kl == "relaxed":
            log_y = sample_exp_concrete(logits, tau)
            y = log_y.exp()
            prior_tau = p.prior_temperature or tau
            kl_y = log_exp_concrete_density(log_y, logits, tau) - \
                log_exp_concrete_density(log_y, torch.zeros_like(logits), prior_tau)
            if p.hard:
                y = (F.one_hot(y.argmax(-1), y.shape[-1]).to(y.dtype) - y).detach() + y
        else:
            y = gumbel_softmax(logits, tau, hard=p.hard)
            kl_y = categorical_kl(logits)
        mu_q, lv_q = self.q_z(h, y)
        z = reparameterize(mu_q, lv_q)
        mu_p, lv_p = self.p_z(y)
        rec = self.recon_ll(self.decode(z), xn)
        kl_z = kl_normal(mu_q, lv_q, mu_p, lv_p)
        loss = (-rec + kl_z + beta * kl_y).mean()
        return {"loss": loss, "neg_elbo": (kl_z + kl_y - rec).mean().detach(), "recon": rec.mean().detach(),
                "kl_z": kl_z.mean().detach(), "kl_y": kl_y.mean().detach(),
                "temperature": torch.tensor(tau, device=x.device), "kl_weight": torch.tensor(beta, device=x.device)}
