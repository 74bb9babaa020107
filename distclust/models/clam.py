"""ClAM: clustering with dense associative memories (Saha, Krotov, Zaki, Ram, ICML 2023).

K memories ρ_1..ρ_K live in the clustering space (normalised input for ``clam``,
the autoencoder latent for ``deep-clam``). A point v evolves for T steps by

    v ← v + α Σ_μ (ρ_μ − v) softmax_μ(−β ‖ρ_μ − v‖²)

which is gradient descent with step α/2 on the energy
E(v) = −(1/β) log Σ_μ exp(−β ‖ρ_μ − v‖²). E is 2-smooth (its Hessian is 2I minus a
PSD matrix), so every step with 0 < α < 2 decreases E; α = 1 is the CCCP step
v ← Σ_μ p_μ ρ_μ. The cluster of a point is the memory nearest to where T steps of
the dynamics take it.

Training is self-supervised pattern completion (the paper's Algorithm 1): each
entry of a point is hidden with probability ``mask_prob`` (x⁰ = m ⊙ x), the hidden
entries evolve under the dynamics while the visible ones stay clamped, and Adam
minimises the error on the hidden entries, ‖m̄ ⊙ (x − x^T)‖². The memories start
from a seeded random sample of the data (``init: sample``, gathered over all
workers) or from a seeded N(mean, std) draw (``init: normal``); ``init: kmeans``
starts them at FAISS k-means (best of ``kmeans_nredo``) so that training refines a k-means solution.

``deep-clam`` puts the memories in the latent space of the spine's MLP
autoencoder (``AEParams``, same pretraining stage as ``ae-kmeans``), then trains
encoder, decoder and memories jointly on reconstruction + pattern completion:
the masked point is encoded, evolves T steps in the latent, and is decoded; the
completion error is taken on the masked input entries (masking happens in input
space because a 10-d latent has no "missing entries"; the loss lives in input
space, so shrinking the latent cannot make it vanish).

Assignment (``assign``): ``dynamics`` (default) runs the T unclamped steps and
takes the nearest memory — served as ``assign_by = "proba"`` with
``predict_proba`` = softmax_μ(−β ‖ρ_μ − x^T‖²), so ``distclust assign`` and
``predict`` run exactly ClAM's rule. ``prototype`` serves FAISS nearest-prototype
on ``embed`` (``prototypes()`` = memories). The two agree when β is large:
then each step moves v straight towards its nearest memory, and a Voronoi cell
is convex, so the nearest memory never changes (tests/test_clam.py shows
equality); at moderate β the dynamics can carry a point across a boundary.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..validation import param, require
from .autoencoder import AutoencoderModel, KMeansParams, kmeans_prototypes, require_rows
from .base import ClusterModel, ModelParams, Stage

if TYPE_CHECKING:
    from ..engine.context import WorkerContext

INIT_CHOICES = ("sample", "normal")
ASSIGN_CHOICES = ("dynamics", "prototype")


# --------------------------------------------------------------------------- the dynamics
def sq_dists(v: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """(B, K) squared Euclidean distances ‖ρ_μ − v‖² (matmul form, clamped at 0)."""
    d2 = (v * v).sum(1, keepdim=True) - 2.0 * v @ rho.t() + (rho * rho).sum(1)[None, :]
    return d2.clamp_min(0.0)


def energy(v: torch.Tensor, rho: torch.Tensor, beta: float) -> torch.Tensor:
    """E(v) = −(1/β) log Σ_μ exp(−β ‖ρ_μ − v‖²), one value per row."""
    return -torch.logsumexp(-beta * sq_dists(v, rho), dim=1) / beta


def clam_step(v: torch.Tensor, rho: torch.Tensor, beta: float, alpha: float,
              free: torch.Tensor | None = None) -> torch.Tensor:
    """One step v + α Σ_μ (ρ_μ − v) softmax_μ(−β‖ρ_μ − v‖²); only entries where ``free`` is 1 move."""
    p = torch.softmax(-beta * sq_dists(v, rho), dim=1)   # (B, K)
    update = p @ rho - v                                  # Σ_μ p_μ (ρ_μ − v), as Σ_μ p_μ = 1
    if free is not None:
        update = update * free
    return v + alpha * update


def run_dynamics(v: torch.Tensor, rho: torch.Tensor, beta: float, alpha: float, steps: int,
                 free: torch.Tensor | None = None) -> torch.Tensor:
    for _ in range(steps):
        v = clam_step(v, rho, beta, alpha, free)
    return v


# --------------------------------------------------------------------------- parameters
@dataclass
class ClamDynamics:
    """The associative memory's keys, shared by ``clam`` and ``deep-clam`` (listed before their base)."""

    # inverse temperature of the softmax over memories
    beta: float = param(1.0, gt=0, fix="use a positive inverse temperature, of the order of 1 / (typical squared "
                                       "distance between points)")
    steps: int = param(10, ge=1)     # T: dynamics steps (training and assignment)
    # dt/τ: step size
    alpha: float = param(0.5, gt=0, lt=2, fix="use a step 0 < alpha < 2 (the energy decreases at every step "
                                              "there); 0.1 to 1 is usual")
    mask_prob: float = param(0.2, gt=0, lt=1)   # probability that an entry is hidden in pattern completion
    lr: float = param(0.01, gt=0)    # Adam learning rate
    epochs: int = param(30, ge=0)
    # sample (random data points) | normal (seeded N(mean, std) of a sample)
    init: str = param("sample", choices=INIT_CHOICES)
    # dynamics (T steps, then nearest memory) | prototype (FAISS nearest memory)
    assign: str = param("dynamics", choices=ASSIGN_CHOICES)


@dataclass
class ClamParams(ClamDynamics, ModelParams):
    init_sample: int = 20_000  # rows gathered over all workers for the seeding and its statistics
    # sample | normal | kmeans (FAISS k-means++ and Lloyd on the init sample: ClAM then refines k-means)
    init: str = param("sample", choices=INIT_CHOICES + ("kmeans",))
    kmeans_niter: int = param(100, ge=1)   # init: kmeans only
    kmeans_nredo: int = param(10, ge=1)    # init: kmeans only: restarts, the lowest inertia kept

    @property
    def kmeans_sample(self) -> int:  # what kmeans_prototypes gathers: the init sample
        return self.init_sample

    def check(self, s: str) -> None:
        super().check(s)
        require(self.init_sample >= self.n_clusters, f"{s}.init_sample",
                f"'{s}.init_sample' ({self.init_sample}) is below n_clusters", "raise init_sample")


@dataclass
class DeepClamParams(ClamDynamics, KMeansParams):
    lr: float = 1e-4            # Adam learning rate of the joint stage (encoder, decoder, memories)
    clam_weight: float = param(1.0, ge=0)   # loss = reconstruction + clam_weight · masked completion
    # sample | normal | kmeans (FAISS k-means on the latent, kmeans_* keys)
    init: str = param("sample", choices=INIT_CHOICES + ("kmeans",))


# --------------------------------------------------------------------------- shared model code
class _ClamMixin:
    """Memories, dynamics, seeding and assignment shared by ``clam`` and ``deep-clam``."""

    def _setup_clam(self, dim: int) -> None:
        self.memories = nn.Parameter(torch.zeros(self.params.n_clusters, dim))
        # ClAM's rule runs the dynamics: argmax of predict_proba is the nearest memory at x^T
        self.assign_by = "proba" if self.params.assign == "dynamics" else "prototype"

    def _space(self, x: torch.Tensor) -> torch.Tensor:  # the clustering space (== embed)
        raise NotImplementedError

    def init_stage(self) -> Stage:
        def seed_memories(ctx: "WorkerContext"):
            p, k = self.params, self.n_clusters
            if p.init == "kmeans":
                c, _ = kmeans_prototypes(ctx, self._space, k, p)
            else:
                z = ctx.gather_sample(lambda b: self._space(b["features"]), max(getattr(p, "init_sample", 0),
                                                                                 getattr(p, "kmeans_sample", 0), k))
                require_rows(len(z), k, "the seeding")
                g = torch.Generator().manual_seed(int(ctx.seed) + 1)
                if p.init == "sample":
                    c = z[torch.randperm(len(z), generator=g)[:k].to(z.device)]
                else:
                    eps = torch.randn(k, z.shape[1], generator=g).to(z.device)
                    c = z.mean(0) + eps * z.std(0)
            # every rank computed the same seeding from the same gathered sample; broadcast anyway
            self.memories.data.copy_(ctx.broadcast(c.to(self.memories.device).contiguous()))
            self.is_fitted.fill_(True)
            with torch.no_grad():
                out = {"init_spread": float(torch.cdist(self.memories, self.memories).mean())}
                if p.init != "kmeans":
                    out["init_completion"] = float(self.completion_error(z))
            return out

        return Stage("init", 0, 0.0, on_start=seed_memories)

    def completion_error(self, v: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Masked pattern completion in the clustering space: mean squared error on the hidden entries."""
        p = self.params
        u = torch.rand(v.shape, generator=generator, device="cpu" if generator is not None else v.device)
        hidden = (u.to(v.device) < p.mask_prob).to(v.dtype)
        vt = run_dynamics(v * (1 - hidden), self.memories, p.beta, p.alpha, p.steps, free=hidden)
        return (hidden * (v - vt) ** 2).sum() / hidden.sum().clamp_min(1.0)

    def fixed_points(self, x: torch.Tensor) -> torch.Tensor:
        p = self.params
        return run_dynamics(self._space(x), self.memories, p.beta, p.alpha, p.steps)

    def embed(self, x):
        return self._space(x)

    def prototypes(self):
        return self.memories

    @torch.no_grad()
    def predict_proba(self, x):
        """softmax_μ(−β ‖ρ_μ − x^T‖²) at the end of the dynamics; argmax = ClAM's cluster."""
        return torch.softmax(-self.params.beta * sq_dists(self.fixed_points(x), self.memories), dim=1)

    @torch.no_grad()
    def predict_dynamics(self, x):
        return sq_dists(self.fixed_points(x), self.memories).argmin(1)

    @torch.no_grad()
    def predict_nearest(self, x):
        return sq_dists(self._space(x), self.memories).argmin(1)


class ClAM(_ClamMixin, ClusterModel):
    """ClAM on raw (normalised) features: memories in input space, trained by masked pattern completion."""

    name = "clam"
    Params = ClamParams

    def __init__(self, input_dim, params: ClamParams, normalizer=None):
        super().__init__(input_dim, params, normalizer)
        self._setup_clam(input_dim)

    def _space(self, x):
        return self.normalizer(x)

    def stages(self) -> list[Stage]:
        p = self.params
        return [self.init_stage(), Stage("clam", p.epochs, p.lr, parameters=lambda: [self.memories])]

    def forward(self, x, stage):
        loss = self.completion_error(self._space(x))
        return {"loss": loss, "completion": loss.detach()}


class DeepClAM(_ClamMixin, AutoencoderModel):
    """ClAM in the latent of the spine's autoencoder, trained jointly with reconstruction."""

    name = "deep-clam"
    Params = DeepClamParams
    find_unused_parameters = True   # the pretrain stage leaves the memories out of its loss

    def __init__(self, input_dim, params: DeepClamParams, normalizer=None):
        super().__init__(input_dim, params, normalizer)
        self._setup_clam(params.latent_dim)

    def _space(self, x):
        return self.ae.encoder(self.normalizer(x))

    def stages(self) -> list[Stage]:
        p = self.params
        joint = Stage("clam", p.epochs, p.lr, p.weight_decay)
        return [self.pretrain_stage(), self.init_stage(), joint]

    def forward(self, x, stage):
        if stage == "pretrain":
            return self.pretrain_loss(x)
        p = self.params
        xn = self.normalizer(x)
        _, x_hat = self.ae(xn)
        recon = self.reconstruction(x_hat, xn, x)
        hidden = (torch.rand_like(xn) < p.mask_prob).to(xn.dtype)
        zt = run_dynamics(self.ae.encoder(xn * (1 - hidden)), self.memories, p.beta, p.alpha, p.steps)
        x_comp = self.ae.decoder(zt)
        if p.recon == "bce":
            err = nn.functional.binary_cross_entropy_with_logits(x_comp, xn.clamp(0, 1), reduction="none")
        else:
            err = (x_comp - xn) ** 2
        completion = (hidden * err).sum() / hidden.sum().clamp_min(1.0)
        loss = recon + p.clam_weight * completion
        return {"loss": loss, "recon": recon.detach(), "completion": completion.detach()}
