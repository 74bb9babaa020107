"""VaDE (Jiang et al. 2017): a VAE whose prior p(z) = Σ_k π_k N(μ_k, diag σ²_k) is a learned GMM.

Stages:

1. ``pretrain``: the autoencoder on reconstruction (AE+k-means' stage; VaDE collapses to one
   cluster without it). With ``pretrained: PATH`` (a distclust artifact holding the same
   ``ae.*`` network, e.g. an ``ae-kmeans`` model trained on the same data) the weights are
   loaded instead and the stage has 0 epochs.
2. ``gmm_init``: embeddings μ̃(x) gathered from every worker (``gmm_sample`` rows, seeded), rank 0
   fits scikit-learn's ``GaussianMixture(covariance_type="diag")`` with the run seed, and
   broadcasts (π, μ_k, σ²_k).
3. ``vade``: maximise the VaDE ELBO (one reparameterised sample per row)

   log p(x|z) − Σ_k γ_k KL(N(μ̃, σ̃²) ‖ N(μ_k, σ²_k)) − KL(γ ‖ π),   γ = p(c | z)

The encoder's mean head is the pretrained encoder's last layer (``embed`` = μ̃); a log-variance
head reads the last hidden layer. ``predict_proba`` = γ at z = μ̃ (rows sum to 1); clusters are the
argmax (``assign_by = "proba"``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ArtifactError
from ..spec import require
from .ae_kmeans import AEKMeans
from .base import ModelParams, Stage
from .networks import check_network_params, typed_reconstruction_loss
from .vae_parts import kl_normal, log_normal_components, recon_log_likelihood, reparameterize

if TYPE_CHECKING:
    from ..engine.context import WorkerContext


@dataclass
class VaDEParams(ModelParams):
    latent_dim: int = 10
    hidden: list[int] = field(default_factory=lambda: [500, 500, 2000])
    activation: str = "relu"
    recon: str = "bce"                 # bce (Bernoulli, features in [0, 1]) | mse (Gaussian, variance exp(recon_logvar))
    #                                    | typed (a table's per-column likelihoods: Gaussian, Bernoulli, categorical)
    recon_logvar: float = 0.0          # log σ² of the Gaussian decoder (recon: mse), e.g. -4.6 for σ² = 0.01
    pretrain_epochs: int = 50
    pretrain_lr: float = 1e-3
    weight_decay: float = 0.0
    pretrained: str | None = None      # artifact dir with the same autoencoder: load it, skip pretraining
    gmm_sample: int = 70_000           # rows gathered (all workers) for the GMM initialisation
    column_dropout: float = 0.0        # recon: typed — share of table columns hidden from the encoder in pretraining
    gmm_n_init: int = 1
    epochs: int = 50                   # VaDE ELBO epochs
    lr: float = 2e-3

    def check(self, s: str) -> None:
        super().check(s)
        check_network_params(self, s, "[500, 500, 2000]")
        require(self.recon in ("mse", "bce", "typed"), f"{s}.recon", f"'{s}.recon' is '{self.recon}'",
                "use bce (features scaled to [0, 1], e.g. normalize: global-minmax), mse, or typed "
                "(tables ingested with --id-column)")
        require(self.pretrain_epochs >= 0 and self.epochs >= 0, f"{s}.epochs",
                f"epochs are pretrain_epochs={self.pretrain_epochs}, epochs={self.epochs}", "use 0 or more epochs")
        for key in ("pretrain_lr", "lr"):
            require(getattr(self, key) > 0, f"{s}.{key}", f"'{s}.{key}' is {getattr(self, key)}",
                    "use a positive learning rate such as 1e-3")
        require(self.weight_decay >= 0, f"{s}.weight_decay", f"'{s}.weight_decay' is {self.weight_decay}",
                "use 0 or a positive weight decay")
        require(self.gmm_sample >= self.n_clusters, f"{s}.gmm_sample",
                f"'{s}.gmm_sample' ({self.gmm_sample}) is below n_clusters ({self.n_clusters})", "raise gmm_sample")
        require(0 <= self.column_dropout < 1, f"{s}.column_dropout", f"'{s}.column_dropout' is {self.column_dropout}",
                "use a share in [0, 1), e.g. 0.3 (0 = off)")
        require(self.gmm_n_init >= 1, f"{s}.gmm_n_init", f"'{s}.gmm_n_init' is {self.gmm_n_init}", "use 1 or more")

    def check_training(self, s: str) -> None:
        if self.pretrained is not None:
            from ..artifact import artifact_dir

            where = artifact_dir(self.pretrained)
            require(Path(where, "weights.pt").is_file(), f"{s}.pretrained",
                    f"'{s}.pretrained' ({self.pretrained}) is not a distclust model directory (no weights.pt)",
                    "pass RUN_DIR/model of an ae-kmeans (or same-network) run on the same data, or null to pretrain")

    def resolved(self):
        import dataclasses

        if self.pretrained is None:
            return self
        from ..artifact import artifact_dir

        # absolute where the spec is read, so workers (any cwd) find it; a run dir means its model
        return dataclasses.replace(self, pretrained=str(artifact_dir(self.pretrained).resolve()))


def load_pretrained_autoencoder(model: nn.Module, path: str) -> None:
    """Copy ``ae.*`` weights of an artifact into ``model.ae``; the normalisation must match."""
    state = torch.load(Path(path, "weights.pt"), map_location="cpu", weights_only=True)
    ae = {k[3:]: v for k, v in state.items() if k.startswith("ae.")}
    if not ae:
        raise ArtifactError(f"'{path}' holds no autoencoder (no 'ae.*' weights)", "model.pretrained",
                            "pass an ae-kmeans / dec / vade model directory")
    try:
        model.ae.load_state_dict(ae)
    except RuntimeError as e:
        raise ArtifactError(f"the pretrained autoencoder does not fit this model ({str(e).splitlines()[0]})",
                            "model.pretrained", "use the same hidden, latent_dim and activation as the pretrained "
                            "model, or set pretrained: null") from None
    for key in ("shift", "scale"):
        theirs = state.get(f"normalizer.{key}")
        mine = getattr(model.normalizer, key)
        if theirs is not None and not torch.allclose(theirs.to(mine), mine, rtol=1e-4, atol=1e-6):
            raise ArtifactError("the pretrained model normalised its data differently", "model.pretrained",
                                "train on the same data with the same data.normalize as the pretrained model")


def mixture_elbo_terms(mu: torch.Tensor, logvar: torch.Tensor, z: torch.Tensor, log_pi: torch.Tensor,
                       mu_c: torch.Tensor, logvar_c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row Σ_k γ_k KL(q(z|x) ‖ N(μ_k, σ²_k)), KL(γ ‖ π), and γ (the VaDE ELBO's prior terms)."""
    log_gamma = F.log_softmax(log_pi[None] + log_normal_components(z, mu_c, logvar_c), dim=1)
    gamma = log_gamma.exp()
    kl_z = (gamma * kl_normal(mu[:, None], logvar[:, None], mu_c[None], logvar_c[None])).sum(1)
    kl_c = (gamma * (log_gamma - log_pi[None])).sum(1)
    return kl_z, kl_c, gamma


class VaDE(AEKMeans):
    """Variational Deep Embedding: VAE with a learned Gaussian-mixture prior."""

    name = "vade"
    Params = VaDEParams
    assign_by = "proba"
    find_unused_parameters = True      # pretraining leaves the log-variance head and the prior out

    def __init__(self, input_dim, params: VaDEParams, normalizer=None):
        super().__init__(input_dim, params, normalizer)
        K, D = params.n_clusters, params.latent_dim
        self.logvar_head = nn.Linear(params.hidden[-1], D)
        nn.init.zeros_(self.logvar_head.weight)
        nn.init.zeros_(self.logvar_head.bias)
        self.init_prior_parameters(K, D)

    def init_prior_parameters(self, K: int, D: int) -> None:
        self.pi_logits = nn.Parameter(torch.zeros(K))
        self.mu_c = nn.Parameter(torch.zeros(K, D))
        self.logvar_c = nn.Parameter(torch.zeros(K, D))

    # -- networks -----------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.ae.encoder[:-1](self.normalizer(x))
        return self.ae.encoder[-1](h), self.logvar_head(h).clamp(-12.0, 12.0)

    def prior(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log π, μ_k, log σ²_k) of the mixture prior."""
        return F.log_softmax(self.pi_logits, 0), self.mu_c, self.logvar_c

    def elbo_loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        xn = self.normalizer(x)
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar)
        out = self.ae.decoder(z)
        if self.layout is not None:
            rec = typed_reconstruction_loss(out, xn, x, self.layout)
        else:
            rec = -recon_log_likelihood(out, xn, self.params.recon, self.params.recon_logvar)
        log_pi, mu_c, logvar_c = self.prior()
        kl_z, kl_c, _ = mixture_elbo_terms(mu, logvar, z, log_pi, mu_c, logvar_c)
        loss = (rec + kl_z + kl_c).mean()
        return {"loss": loss, "recon": rec.mean().detach(), "kl_z": kl_z.mean().detach(),
                "kl_c": kl_c.mean().detach()}

    # -- stages -------------------------------------------------------------------------
    def pretrain_stage(self) -> Stage:
        p = self.params
        if p.pretrained is None:
            return super().pretrain_stage()

        def load(ctx):
            load_pretrained_autoencoder(self, p.pretrained)
            return {"pretrained_loaded": 1.0}

        return Stage("pretrain", 0, p.pretrain_lr, on_start=load)

    def gmm_init_stage(self) -> Stage:
        def init(ctx: "WorkerContext"):
            p = self.params
            K, D = self.n_clusters, p.latent_dim
            z = ctx.gather_sample(lambda b: self.embed(b["features"]), p.gmm_sample)
            if len(z) < K:
                from ..errors import DataError

                raise DataError(f"n_clusters={K} but only {len(z)} rows reached the GMM", "model.n_clusters",
                                f"use n_clusters ≤ {len(z)}")
            packed = torch.zeros(K * (1 + 2 * D) + 1, dtype=torch.float64)
            if ctx.rank == 0:
                from sklearn.mixture import GaussianMixture

                gmm = GaussianMixture(K, covariance_type="diag", random_state=ctx.seed, n_init=p.gmm_n_init,
                                      reg_covar=1e-6, max_iter=200).fit(z.cpu().double().numpy())
                packed = torch.cat([torch.as_tensor(gmm.weights_), torch.as_tensor(gmm.means_).reshape(-1),
                                    torch.as_tensor(gmm.covariances_).reshape(-1),
                                    torch.tensor([gmm.score(z.cpu().double().numpy())])])
            packed = ctx.broadcast(packed.to(ctx.device)).cpu()
            w, mu = packed[:K], packed[K:K + K * D].reshape(K, D)
            var = packed[K + K * D:K + 2 * K * D].reshape(K, D)
            with torch.no_grad():
                self.pi_logits.copy_(torch.log(w.clamp_min(1e-8)).float())
                self.mu_c.copy_(mu.float())
                self.logvar_c.copy_(torch.log(var).float())
                # start q(z|x) narrower than the clusters: σ̃² = mean cluster variance / 10
                self.logvar_head.bias.fill_(float(torch.log(var.mean() / 10)))
            self.is_fitted.fill_(True)
            return {"gmm_loglik": float(packed[-1]), "gmm_rows": float(len(z))}

        return Stage("gmm_init", 0, 0.0, on_start=init)

    def vade_stage(self) -> Stage:
        p = self.params
        return Stage("vade", p.epochs, p.lr, p.weight_decay)

    def stages(self) -> list[Stage]:
        return [self.pretrain_stage(), self.gmm_init_stage(), self.vade_stage()]

    def forward(self, x, stage):
        if stage == "pretrain":
            return super().forward(x, stage)
        return self.elbo_loss(x)

    # -- prediction ---------------------------------------------------------------------
    def predict_proba(self, x):
        mu, _ = self.encode(x)
        log_pi, mu_c, logvar_c = self.prior()
        return F.softmax(log_pi[None] + log_normal_components(mu, mu_c, logvar_c), dim=1)

    def prototypes(self):
        return self.mu_c.detach()
