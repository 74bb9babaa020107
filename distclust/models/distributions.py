"""Densities, KLs, relaxations and schedules shared by the variational models (GMVAE family, VaDE,
vae-dpgmm); their networks live in ``networks.py``.

No ``ClusterModel`` lives here: only functions, with a stable API.
Shapes: ``(..., D)`` tensors; every log-density / KL / log-likelihood sums over the
last dimension and returns ``(...)`` (one value per row), so callers take the batch
mean themselves. Densities are in nats.

- ``reparameterize(mu, logvar, eps=None, generator=None)``, ``sample_components(mu, logvar, n, generator)``
- ``log_normal(x, mu, logvar)``, ``log_normal_components(z, mus, logvars)`` (N, K)
- ``kl_normal(mu_q, logvar_q, mu_p, logvar_p)``
- ``bernoulli_log_likelihood(logits, x)``, ``gaussian_log_likelihood(mean, x, logvar)``,
  ``recon_log_likelihood(out, x, kind)`` with kind ``bernoulli|bce`` or ``gaussian|mse``
- ``categorical_kl(logits, prior_logits=None)``: KL(Cat(softmax(logits)) ‖ prior), uniform by default
- ``sample_gumbel``, ``gumbel_softmax(logits, tau, hard=False)`` (Concrete sample,
  straight-through one-hot when ``hard``), ``sample_exp_concrete`` / ``log_exp_concrete_density``
  (the relaxed KL of Maddison et al. 2017, in log space for stability)
- ``schedule(kind, start, end, warmup_steps, total_steps, ...)`` → ``f(step) -> float``
  (annealing of KL weights and temperatures), ``SCHEDULES``
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch.nn import functional as F

LOG_2PI = math.log(2 * math.pi)
SCHEDULES = ("constant", "linear", "cosine", "step", "exp")
RECON_KINDS = ("bernoulli", "bce", "gaussian", "mse")


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """``mu + exp(logvar / 2) * eps`` with ``eps ~ N(0, I)`` (pass ``eps`` for a fixed draw)."""
    if eps is None:
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


# --------------------------------------------------------------------------- densities and KLs
def sample_components(mu: torch.Tensor, logvar: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """(K, n, D): ``n`` seeded draws from each diagonal Gaussian N(mu_k, exp(logvar_k)) of a (K, D) mixture."""
    eps = torch.randn(mu.shape[0], n, mu.shape[1], generator=generator).to(mu.device)
    return mu.unsqueeze(1) + torch.exp(0.5 * logvar).unsqueeze(1) * eps


def log_normal(x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(x; mu, diag(exp(logvar))) summed over the last dim (broadcasting)."""
    return -0.5 * (LOG_2PI + logvar + (x - mu) ** 2 * torch.exp(-logvar)).sum(-1)


def log_normal_components(z: torch.Tensor, mus: torch.Tensor, logvars: torch.Tensor) -> torch.Tensor:
    """(N, K): log N(z_n; mu_k, diag(exp(logvar_k))) for z (N, D), mus / logvars (K, D)."""
    return log_normal(z.unsqueeze(1), mus.unsqueeze(0), logvars.unsqueeze(0))


def kl_normal(mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor) -> torch.Tensor:
    """KL(N(mu_q, var_q) ‖ N(mu_p, var_p)) of diagonal Gaussians, summed over the last dim."""
    return 0.5 * (logvar_p - logvar_q + (torch.exp(logvar_q) + (mu_q - mu_p) ** 2) * torch.exp(-logvar_p)
                  - 1.0).sum(-1)


def bernoulli_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log Bern(x; sigmoid(logits)) summed over features; x is clamped to [0, 1] (grey levels allowed)."""
    return -F.binary_cross_entropy_with_logits(logits, x.clamp(0, 1).expand_as(logits), reduction="none").sum(-1)


def gaussian_log_likelihood(mean: torch.Tensor, x: torch.Tensor, logvar: float | torch.Tensor = 0.0) -> torch.Tensor:
    """log N(x; mean, exp(logvar)) summed over features (fixed or learned variance)."""
    logvar = torch.as_tensor(logvar, dtype=mean.dtype, device=mean.device)
    return -0.5 * (LOG_2PI + logvar + (x - mean) ** 2 * torch.exp(-logvar)).sum(-1)


def recon_log_likelihood(out: torch.Tensor, x: torch.Tensor, kind: str = "bernoulli",
                         logvar: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Per-row log p(x | z) of a decoder output: logits (``bernoulli``/``bce``) or means (``gaussian``/``mse``)."""
    if kind in ("bernoulli", "bce"):
        return bernoulli_log_likelihood(out, x)
    if kind in ("gaussian", "mse"):
        return gaussian_log_likelihood(out, x, logvar)
    raise ValueError(f"unknown reconstruction kind '{kind}' (use one of {RECON_KINDS})")


def decoder_mean(out: torch.Tensor, kind: str = "bernoulli") -> torch.Tensor:
    """The mean of p(x | z) from a decoder output (sigmoid of logits for Bernoulli)."""
    return torch.sigmoid(out) if kind in ("bernoulli", "bce") else out


def categorical_kl(logits: torch.Tensor, prior_logits: torch.Tensor | None = None) -> torch.Tensor:
    """KL(Cat(softmax(logits)) ‖ Cat(softmax(prior_logits))) per row; the prior is uniform when None."""
    logq = F.log_softmax(logits, -1)
    if prior_logits is None:
        logp = torch.full_like(logq, -math.log(logq.shape[-1]))
    else:
        logp = F.log_softmax(prior_logits, -1).expand_as(logq)
    return (logq.exp() * (logq - logp)).sum(-1)


# --------------------------------------------------------------------------- Gumbel-Softmax / Concrete
def sample_gumbel(shape, device=None, dtype=torch.float32, generator: torch.Generator | None = None,
                  eps: float = 1e-10) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, device=device, dtype=dtype)
    return -torch.log(-torch.log(u + eps) + eps)


def gumbel_softmax(logits: torch.Tensor, tau: float, hard: bool = False, gumbel: torch.Tensor | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """One Concrete(logits, tau) sample per row: ``softmax((logits + g) / tau)``.

    ``hard=True`` returns the one-hot argmax in the forward pass with the soft
    sample's gradient (straight-through). Pass ``gumbel`` for a fixed noise draw.
    """
    if gumbel is None:
        gumbel = sample_gumbel(logits.shape, logits.device, logits.dtype, generator)
    y = F.softmax((logits + gumbel) / tau, -1)
    if not hard:
        return y
    one_hot = F.one_hot(y.argmax(-1), y.shape[-1]).to(y.dtype)
    return (one_hot - y).detach() + y


def sample_exp_concrete(logits: torch.Tensor, tau: float, gumbel: torch.Tensor | None = None,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """log of a Concrete sample (ExpConcrete, Maddison et al. 2017): ``log_softmax((logits + g) / tau)``."""
    if gumbel is None:
        gumbel = sample_gumbel(logits.shape, logits.device, logits.dtype, generator)
    return F.log_softmax((logits + gumbel) / tau, -1)


def log_exp_concrete_density(log_y: torch.Tensor, logits: torch.Tensor, tau: float) -> torch.Tensor:
    """log density of ExpConcrete(logits, tau) at ``log_y`` (per row).

    ``log (K-1)! + (K-1) log tau + Σ_k (l_k - tau·x_k) - K · logsumexp_k(l_k - tau·x_k)``
    with ``l = log_softmax(logits)``. The relaxed KL(q(y|x) ‖ p(y)) is the Monte-Carlo
    estimate ``log q(log_y) - log p(log_y)`` at a sample from q.
    """
    k = log_y.shape[-1]
    lg = F.log_softmax(logits, -1).expand_as(log_y)
    t = lg - tau * log_y
    return (math.lgamma(k) + (k - 1) * math.log(tau) + t.sum(-1) - k * torch.logsumexp(t, -1))


# --------------------------------------------------------------------------- annealing schedules
def schedule(kind: str, start: float = 0.0, end: float = 1.0, warmup_steps: float = 0,
             total_steps: float | None = None, *, levels: int = 4, rate: float | None = None
             ) -> Callable[[float], float]:
    """An annealing schedule: a function of the step (any unit: steps, or fractional epochs).

    The value is ``start`` during the warm-up (``step < warmup_steps``), moves from
    ``start`` to ``end`` between ``warmup_steps`` and ``total_steps``, and is ``end``
    from ``total_steps`` on:

    - ``constant``: ``end`` at every step (no annealing);
    - ``linear``: straight line;
    - ``cosine``: half cosine (slow, fast, slow);
    - ``step``: a staircase of ``levels`` equal jumps; the first jump comes one
      level-length after the warm-up, the last one exactly at ``total_steps``;
    - ``exp``: ``start · exp(-rate · (step - warmup_steps))``, bounded by ``end``
      (Arias' temperature ``max(min, initial · exp(-rate · epoch))``). Without
      ``rate`` it is chosen so the value reaches ``end`` at ``total_steps``.

    ``total_steps=None`` means ``total_steps = warmup_steps`` (a hard switch after the warm-up).
    """
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule '{kind}' (use one of {', '.join(SCHEDULES)})")
    start, end, w = float(start), float(end), float(warmup_steps)
    total = w if total_steps is None else float(total_steps)
    if w < 0 or total < w:
        raise ValueError(f"schedule needs 0 ≤ warmup_steps ≤ total_steps (got {warmup_steps}, {total_steps})")
    if levels < 1:
        raise ValueError(f"schedule 'step' needs levels ≥ 1 (got {levels})")
    span = total - w

    if kind == "constant":
        return lambda step: end

    if kind == "exp":
        if rate is None:
            if start <= 0 or end <= 0:
                raise ValueError("schedule 'exp' without a rate needs positive start and end")
            r = math.log(start / end) / span if span > 0 else math.inf
        else:
            r = float(rate)
        lo, hi = min(start, end), max(start, end)

        def exp_fn(step: float) -> float:
            t = max(float(step) - w, 0.0)
            if t == 0.0:
                return start
            v = start * math.exp(-r * t) if math.isfinite(r) else end
            return min(max(v, lo), hi)

        return exp_fn

    def ramp(step: float) -> float:
        step = float(step)
        if step < w:
            return start
        if step >= total or span <= 0:
            return end
        f = (step - w) / span
        if kind == "cosine":
            f = 0.5 * (1.0 - math.cos(math.pi * f))
        elif kind == "step":
            f = math.floor(f * levels + 1e-9) / levels
        return start + (end - start) * f

    return ramp
