"""VAE with a Dirichlet-process Gaussian-mixture prior on the latent space (``vae-dpgmm``).

The number of clusters is found, not given: ``n_clusters`` is the truncation K_max (an upper
bound). The seed's GMVAE + DP-GMM alternation (refit the DP mixture on the latent after each epoch,
copy its means/variances into the prior) oscillated. Here the prior is the variational posterior of
a truncated DP mixture (``models/dp_mixture.py``) updated in a stable way:

* **exact, distributed statistics**: after each epoch, ``dp_iters`` variational iterations, each a
  ``ctx.global_pass`` over every worker's shard computing (N_k, Σ r z, Σ r z²) of the encoder
  means μ̃(x), summed by all-reduce — the same statistics a single process would get; no
  embedding leaves its worker;
* **damping**: the statistics are mixed into the previous ones, (1−ρ)·old + ρ·new (the
  posterior's natural parameters are linear in them, so this is a convex combination of natural
  parameters), so the prior moves smoothly while the encoder moves;
* **pruning**: a component whose N_k falls under ``dp_prune`` × rows is switched off for good
  (no weight in the prior, no responsibility), so emptied components cannot flicker back.

Stages: ``pretrain`` (autoencoder, or ``pretrained: PATH``), ``dp_init`` (the variational fit
to convergence on a seeded gathered sample of ``dp_sample`` rows — the one sampled step, on rank
0 and broadcast — then the data priors from an exact global moment pass and ``dp_init_iters``
exact all-reduced iterations over every row), ``vae`` (ELBO with the DP prior, whose
expected weights, means and diagonal variances enter the VaDE-style bound; refit each epoch).
Per epoch the history gets ``dp_active`` (weight above ``dp_threshold``), ``dp_components``
(not pruned), and — when the data has labels — the engine's ACC / NMI / many-to-one ACC plus
``completeness``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .. import metrics as M
from .dp_mixture import DPMixture, fit_dpgmm
from ..validation import param, require
from .base import Stage
from .vade import MixturePriorVAE, VaDEParams

if TYPE_CHECKING:
    from ..engine.context import WorkerContext


@dataclass
class DPGMMParams(VaDEParams):
    # K_max: truncation of the Dirichlet process
    n_clusters: int = param(30, ge=2, fix="use an upper bound K_max of 2 or more components, e.g. 30")
    dp_covariance: str = param("diag", choices=("diag", "full"))   # the VAE prior always uses the diagonal
    # stick-breaking concentration; null = 1 / K_max (sklearn's default)
    dp_alpha: float | None = param(None, gt=0, fix="use a positive concentration, or null for 1/K_max")
    # prior within-cluster variance / data variance; null = sklearn's prior
    dp_cluster_scale: float | None = param(None, gt=0, fix="use a positive fraction of the latent variance such "
                                                           "as 0.3, or null for sklearn's prior")
    dp_dof: float | None = None        # strength of that prior in pseudo-rows; null = latent_dim
    dp_sample: int = 20_000            # rows gathered (all workers) for the initial fit (rank 0, then broadcast)
    dp_sample_iters: int = param(300, ge=1)   # max variational iterations of that initial fit on the sample
    dp_init_iters: int = param(3, ge=1)       # then exact (all-reduced) iterations over every row
    dp_iters: int = param(2, ge=1)            # exact variational iterations after each epoch
    dp_damping: float = param(0.5, gt=0, le=1, fix="use a weight in (0, 1]; 1 = no damping")   # ρ: new statistics' weight
    # prune components with N_k < dp_prune × rows
    dp_prune: float = param(0.002, ge=0, lt=0.5, fix="use a small fraction such as 0.002 (0 = never prune)")
    dp_threshold: float = param(0.01, ge=0, lt=1)   # weight above which a component counts as active (reports)
    dp_posterior_var: bool = False     # add q's variance σ̃² to Σ r z² (E_q[z²]) instead of μ̃² only

    def check(self, s: str) -> None:
        super().check(s)
        require(self.dp_dof is None or self.dp_dof > self.latent_dim - 1, f"{s}.dp_dof",
                f"'{s}.dp_dof' is {self.dp_dof} for a {self.latent_dim}-d latent",
                f"use more than {self.latent_dim - 1} pseudo-rows (e.g. 300), or null")
        require(self.dp_sample >= self.n_clusters, f"{s}.dp_sample",
                f"'{s}.dp_sample' ({self.dp_sample}) is below K_max ({self.n_clusters})", "raise dp_sample")


class VAEDPGMM(MixturePriorVAE):
    """VAE whose prior is a truncated DP Gaussian mixture refitted from all-reduced statistics."""

    name = "vae-dpgmm"
    Params = DPGMMParams

    def __init__(self, input_dim, params: DPGMMParams, normalizer=None):
        super().__init__(input_dim, params, normalizer)
        p = params
        self.dp = DPMixture(p.n_clusters, p.latent_dim, p.dp_covariance, weight_concentration=p.dp_alpha,
                            dof_prior=p.dp_dof, cluster_scale=p.dp_cluster_scale)

    # -- prior --------------------------------------------------------------------------
    def prior(self):
        """(log π, μ_k, log σ²_k) over ALL K_max components (pruned ones have log π = −inf)."""
        w = self.dp.weights()
        return (torch.log(w).float(), self.dp.means.float(), torch.log(self.dp.component_variances()).float())

    def mixture(self):
        """The components not pruned, their weights renormalised."""
        idx = self.dp.active.nonzero().squeeze(1)
        log_pi, mu_c, logvar_c = self.prior()
        log_pi = log_pi[idx]
        return log_pi - torch.logsumexp(log_pi, 0), mu_c[idx], logvar_c[idx], idx

    def prototypes(self):
        return self.dp.means.float()

    # -- DP updates from all-reduced statistics --------------------------------------------
    def _stats_fn(self, batch):
        mu, logvar = self.encode(batch["features"])
        st = self.dp.stats(mu)
        if self.params.dp_posterior_var and self.dp.covariance_type == "diag":
            r = self.dp.responsibilities(mu)
            st["S2"] = st["S2"] + r.T @ torch.exp(logvar).double()
        return st

    def dp_iteration(self, ctx: "WorkerContext", damping: float, prune: bool) -> dict[str, float]:
        st = ctx.global_pass(self._stats_fn)
        n = float(st["N"].sum())
        old = self.dp.stat_N.clone()
        self.dp.m_step(st, damping=damping, prune_below=self.params.dp_prune * n if prune else 0.0)
        return {"dp_loglik": float(st["loglik"]) / max(n, 1.0),
                "dp_dN": float((self.dp.stat_N - old).abs().max()) / max(n, 1.0)}

    def dp_report(self, ctx: "WorkerContext") -> dict[str, float]:
        p = self.params
        out = {"dp_active": float(self.dp.n_active(p.dp_threshold)),
               "dp_components": float(self.dp.active.sum())}
        if ctx.n_classes:  # completeness (the engine's label metrics give ACC / NMI / many-to-one)
            K, C = self.n_clusters, int(ctx.n_classes)

            def count(batch):
                pred = self.predict(batch["features"]).long()
                return {"cont": torch.bincount(pred * C + batch["label"].long().clamp(0, C - 1),
                                               minlength=K * C).reshape(K, C)}

            cont = ctx.global_pass(count)["cont"].cpu().numpy().astype(np.int64)
            out["completeness"] = M.completeness_from_contingency(cont)
        return out

    def dp_init_stage(self) -> Stage:
        def init(ctx: "WorkerContext"):
            p = self.params
            # 1. the variational fit to convergence on a gathered sample of dp_sample rows (rank 0,
            #    broadcast): cheap; 2. dp_init_iters exact iterations over all rows (all-reduced)
            sample = ctx.gather_sample(lambda b: self.embed(b["features"]), p.dp_sample)
            if ctx.rank == 0:
                res = fit_dpgmm(sample.cpu().double().numpy(), self.n_clusters, p.dp_covariance,
                                weight_concentration=p.dp_alpha, seed=ctx.seed, init_sample=p.dp_sample,
                                max_iter=p.dp_sample_iters, cluster_scale=p.dp_cluster_scale, dof_prior=p.dp_dof)
                self.dp.load_state_dict(res.mixture.state_dict())
            for name, buf in self.dp.named_buffers():
                got = ctx.broadcast(buf.to(torch.float64)).to(buf.dtype)
                buf.copy_(got)
            self.dp.set_data_prior(**ctx.global_pass(lambda b: self.dp.moment_stats(self.embed(b["features"]))))
            m = {}
            for _ in range(p.dp_init_iters):
                m = self.dp_iteration(ctx, damping=1.0, prune=False)
            self.dp_iteration(ctx, damping=1.0, prune=True)   # switch off what the DP emptied
            self.is_fitted.fill_(True)
            return {"dp_sample_rows": float(len(sample)), **m, **self.dp_report(ctx)}

        return Stage("dp_init", 0, 0.0, on_start=init)

    def vae_stage(self) -> Stage:
        p = self.params

        def refit(ctx: "WorkerContext", epoch: int):
            m = {}
            for _ in range(p.dp_iters):
                m = self.dp_iteration(ctx, damping=p.dp_damping, prune=True)
            return {**m, **self.dp_report(ctx)}

        return Stage("vae", p.epochs, p.lr, p.weight_decay, on_epoch_end=refit)

    def stages(self) -> list[Stage]:
        return [self.pretrain_stage(), self.dp_init_stage(), self.vae_stage()]
