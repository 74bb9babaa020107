"""DEC (Xie et al. 2016) and IDEC (Guo et al. 2017) on the shared autoencoder.

Stages: ``pretrain`` (the autoencoder of ``ae-kmeans``, or its weights loaded from
``pretrained``) → ``kmeans`` (FAISS k-means on gathered embeddings; the centroids
become the trainable prototypes μ) → ``cluster`` (minimise KL(P‖Q), IDEC adds the
reconstruction loss).

q_ij is the Student's t kernel between embedding z_i and prototype μ_j. The target
p_ij = (q_ij² / f_j) / Σ_j' (q_ij'² / f_j') needs f_j = Σ_i q_ij over the WHOLE
dataset: at every refresh (each ``update_interval`` steps) one global pass sums q
over each worker's shard and all-reduces it. Between refreshes P must stay fixed;
instead of storing one target row per data point, the model keeps a frozen copy of
the encoder and prototypes taken at the refresh (plus the global f) and recomputes
each batch's p from them: exactly DEC's P with O(model) memory, for any N. All of it
lives in the state_dict, so checkpoints resume mid-stage.

Stopping rule: the same global pass counts the points whose argmax changes between
the previous frozen model and the current one (all-reduced); below ``tol`` the stage
ends after the current epoch (``ctx.request_stop``).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from ..validation import param
from .autoencoder import AutoencoderModel, KMeansParams, kmeans_prototypes
from .base import Stage

if TYPE_CHECKING:
    from ..engine.context import WorkerContext


@dataclass
class DECParams(KMeansParams):
    alpha: float = param(1.0, gt=0)    # Student's t degrees of freedom
    # optimiser steps between target refreshes (each step = workers × batch rows)
    update_interval: int = param(140, ge=1)
    # stop when fewer than this fraction of points change cluster
    tol: float = param(0.001, ge=0, lt=1, fix="use a fraction in [0, 1), e.g. 0.001 (0 = never stop early)")
    cluster_epochs: int = param(50, ge=0)   # at most; the tolerance rule usually ends the stage earlier
    cluster_lr: float = param(1e-4, gt=0)
    cluster_optimizer: str = param("adam", choices=("adam", "sgd"))   # DEC-keras: sgd, lr 0.01, momentum 0.9
    cluster_momentum: float = param(0.9, ge=0, lt=1)


@dataclass
class IDECParams(DECParams):
    LOSS_WEIGHTING: ClassVar[tuple[str, ...]] = ("gamma",)
    gamma: float = param(0.1, ge=0)    # weight of the clustering (KL) loss against reconstruction, as in IDEC


def student_t_log_q(z: torch.Tensor, mu: torch.Tensor, alpha: float) -> torch.Tensor:
    """log q_ij: Student's t kernel (1 + ‖z_i − μ_j‖² / α)^(−(α+1)/2), normalised over j."""
    d2 = ((z.unsqueeze(1) - mu.unsqueeze(0)) ** 2).sum(-1)
    logits = -(alpha + 1.0) / 2.0 * torch.log1p(d2 / alpha)
    return torch.log_softmax(logits, dim=1)


def target_from_q(log_q: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """DEC's target p_ij = (q_ij² / f_j) / Σ_j' (q_ij'² / f_j')."""
    return torch.softmax(2.0 * log_q - torch.log(f.clamp_min(1e-12)).to(log_q.dtype), dim=1)


class DEC(AutoencoderModel):
    """Deep Embedded Clustering: KL(P‖Q) on encoder + prototypes, from a pretrained autoencoder."""

    name = "dec"
    Params = DECParams
    find_unused_parameters = True       # the decoder (and μ during pretraining) get no gradient
    use_reconstruction = False

    def __init__(self, input_dim, params: DECParams, normalizer=None):
        super().__init__(input_dim, params, normalizer)
        k, d = params.n_clusters, params.latent_dim
        self.mu = nn.Parameter(torch.zeros(k, d))
        self.register_buffer("centroids", torch.zeros(k, d))   # the k-means prototypes μ started from
        # the frozen model that defines P until the next refresh
        self.target_encoder = copy.deepcopy(self.ae.encoder).requires_grad_(False)
        self.register_buffer("target_mu", torch.zeros(k, d))
        self.register_buffer("target_f", torch.ones(k))
        self.register_buffer("has_target", torch.zeros((), dtype=torch.bool))
        self.register_buffer("refreshes", torch.zeros((), dtype=torch.long))

    # -- stages -------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        p = self.params
        pre = self.pretrain_stage()

        def init(ctx):
            c, inertia = kmeans_prototypes(ctx, self.embed, self.n_clusters, p)
            self.centroids.copy_(c)
            with torch.no_grad():
                self.mu.copy_(c)
            self.has_target.fill_(False)
            self.is_fitted.fill_(True)
            return {"kmeans_inertia": inertia}

        def on_step(ctx, step):
            if not bool(self.has_target) or step % p.update_interval == 0:
                return self.refresh_target(ctx)
            return None

        return [pre, Stage("kmeans", 0, 0.0, on_start=init),
                Stage("cluster", p.cluster_epochs, p.cluster_lr, parameters=self.cluster_parameters,
                      on_step=on_step, optimizer=p.cluster_optimizer, momentum=p.cluster_momentum)]

    def cluster_parameters(self) -> list[nn.Parameter]:
        if self.use_reconstruction:
            return [*self.ae.parameters(), self.mu]
        return [*self.ae.encoder.parameters(), self.mu]

    # -- the target distribution ------------------------------------------------------
    def log_q(self, x: torch.Tensor) -> torch.Tensor:
        return student_t_log_q(self.embed(x), self.mu, self.params.alpha)

    @torch.no_grad()
    def target(self, x: torch.Tensor) -> torch.Tensor:
        """p for raw rows ``x`` from the frozen model of the last refresh."""
        z = self.target_encoder(self.normalizer(x))
        return target_from_q(student_t_log_q(z, self.target_mu, self.params.alpha), self.target_f)

    @torch.no_grad()
    def refresh_target(self, ctx: "WorkerContext") -> dict:
        """One global pass: f_j = Σ_i q_ij over all workers, and the labels changed since the last refresh."""
        had = bool(self.has_target)

        def stats(batch):
            x = batch["features"]
            log_q = self.log_q(x)
            out = {"f": log_q.exp().sum(0), "n": torch.tensor(float(x.shape[0]), device=x.device)}
            if had:
                old = student_t_log_q(self.target_encoder(self.normalizer(x)), self.target_mu, self.params.alpha)
                out["changed"] = (old.argmax(1) != log_q.argmax(1)).sum().float()
            return out

        g = ctx.global_pass(stats)
        self.target_encoder.load_state_dict(self.ae.encoder.state_dict())
        self.target_mu.copy_(self.mu.detach())
        self.target_f.copy_(g["f"].to(self.target_f))
        self.has_target.fill_(True)
        self.refreshes += 1
        out = {"target_refreshes": float(self.refreshes), "f_min_frac": float(g["f"].min() / g["n"])}
        if had:
            delta = float(g["changed"] / g["n"].clamp_min(1))
            out["delta_label"] = delta
            if delta < self.params.tol:
                ctx.request_stop()
        return out

    # -- losses -------------------------------------------------------------------
    def forward(self, x, stage):
        if stage != "cluster":
            return self.pretrain_loss(x)
        p = self.target(x)
        if self.use_reconstruction:
            xn = self.normalizer(x)
            z, x_hat = self.ae(xn)
            log_q = student_t_log_q(z, self.mu, self.params.alpha)
            recon = self.reconstruction(x_hat, xn, x)
        else:
            log_q = self.log_q(x)
            recon = None
        kl = (torch.xlogy(p, p) - p * log_q).sum(1).mean()
        if recon is None:
            return {"loss": kl, "kl": kl.detach()}
        return {"loss": recon + self.params.gamma * kl, "kl": kl.detach(), "recon": recon.detach()}

    # -- prediction -------------------------------------------------------------------
    def prototypes(self):
        return self.mu

    def predict_proba(self, x):
        return self.log_q(x).exp()


class IDEC(DEC):
    """Improved DEC: DEC's KL term weighted by ``gamma`` plus the autoencoder's reconstruction loss."""

    name = "idec"
    Params = IDECParams
    use_reconstruction = True
