"""VaDE (Jiang et al. 2017): a VAE whose prior p(z) = Σ_k π_k N(μ_k, diag σ²_k) is a learned GMM.

Stages:

1. ``pretrain``: the autoencoder on reconstruction (AE+k-means' stage; VaDE collapses to one
   cluster without it). With ``pretrained: PATH`` (a distclust artifact holding the same
   ``ae.*`` network, e.g. an ``ae-kmeans`` model trained on the same data) the weights are
   loaded instead and the stage has 0 epochs.
2. ``gmm_init``: embeddings μ̃(x) gathered from every worker (``gmm_sample`` rows, seeded), rank 0
   fits scikit-learn's ``GaussianMixture(covariance_type="diag")`` with the run seed, and
   broadcasts (π, μ_k, σ²_k). ``gmm_init: faiss`` (default) starts its means at FAISS k-means, the
   best inertia of ``gmm_kmeans_restarts`` runs; ``sklearn`` keeps scikit-learn's own single
   k-means start, whose seed alone moved VaDE's start on MNIST from 0.889 to 0.781 ACC (the best of
   10 by inertia: 0.898 / 0.887 / 0.885 for seeds 0-2).
3. ``vade``: maximise the VaDE ELBO (one reparameterised sample per row)

   log p(x|z) − Σ_k γ_k KL(N(μ̃, σ̃²) ‖ N(μ_k, σ²_k)) − KL(γ ‖ π),   γ = p(c | z)

The encoder's mean head is the pretrained encoder's last layer (``embed`` = μ̃); a log-variance
head reads the last hidden layer. ``predict_proba`` = γ at z = μ̃ (rows sum to 1); clusters are the
argmax (``assign_by = "proba"``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

from ..validation import param, require
from .autoencoder import AEParams, AutoencoderModel, require_rows
from .base import Stage
from .distributions import (decoder_mean, kl_normal, log_normal_components, recon_log_likelihood, reparameterize,
                            sample_components)
from .networks import typed_reconstruction_loss

if TYPE_CHECKING:
    from ..engine.context import WorkerContext


@dataclass
class VaDEParams(AEParams):
    recon: str = "bce"                 # bce (Bernoulli, features in [0, 1]) | mse (Gaussian, variance exp(recon_logvar))
    #                                    | typed (a table's per-column likelihoods: Gaussian, Bernoulli, categorical)
    recon_logvar: float = 0.0          # log σ² of the Gaussian decoder (recon: mse), e.g. -4.6 for σ² = 0.01
    gmm_sample: int = 70_000           # rows gathered (all workers) for the GMM initialisation
    gmm_n_init: int = param(1, ge=1)   # gmm_init: sklearn — scikit-learn's restarts (best likelihood)
    # faiss: GMM means start at FAISS k-means (best inertia of gmm_kmeans_restarts) | sklearn: its own k-means
    gmm_init: str = param("faiss", choices=("faiss", "sklearn"))
    gmm_kmeans_restarts: int = param(10, ge=1)
    epochs: int = param(50, ge=0)      # VaDE ELBO epochs
    lr: float = param(2e-3, gt=0)
    # step decay of the ELBO stage's lr: × lr_decay every lr_decay_every epochs, never below lr_floor
    # (VaDE: ×0.9 every 10 epochs, floor 2e-4; VaDE-pytorch: StepLR(10, 0.95)); 0 = constant lr
    lr_decay_every: int = param(0, ge=0)
    lr_decay: float = param(0.95, gt=0, le=1)
    lr_floor: float = param(0.0, ge=0)

    def check(self, s: str) -> None:
        super().check(s)
        require(self.gmm_sample >= self.n_clusters, f"{s}.gmm_sample",
                f"'{s}.gmm_sample' ({self.gmm_sample}) is below n_clusters ({self.n_clusters})", "raise gmm_sample")
        require(self.gmm_init == "sklearn" or self.gmm_n_init == 1, f"{s}.gmm_n_init",
                f"'{s}.gmm_n_init' ({self.gmm_n_init}) restarts scikit-learn's own k-means, but gmm_init is "
                "'faiss' (one GMM fit from the best of gmm_kmeans_restarts FAISS k-means runs)",
                "set gmm_init: sklearn to keep gmm_n_init, or use gmm_kmeans_restarts")


def mixture_elbo_terms(mu: torch.Tensor, logvar: torch.Tensor, z: torch.Tensor, log_pi: torch.Tensor,
                       mu_c: torch.Tensor, logvar_c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row Σ_k γ_k KL(q(z|x) ‖ N(μ_k, σ²_k)), KL(γ ‖ π), and γ (the VaDE ELBO's prior terms)."""
    log_gamma = F.log_softmax(log_pi[None] + log_normal_components(z, mu_c, logvar_c), dim=1)
    gamma = log_gamma.exp()
    kl_z = (gamma * kl_normal(mu[:, None], logvar[:, None], mu_c[None], logvar_c[None])).sum(1)
    kl_c = (gamma * (log_gamma - log_pi[None])).sum(1)
    return kl_z, kl_c, gamma


class MixturePriorVAE(AutoencoderModel):
    """A VAE on the family's autoencoder whose prior p(z) is a Gaussian mixture: the encoder's mean head
    is the autoencoder's last layer (``embed`` = μ̃), a log-variance head reads the last hidden layer.
    Subclasses say what the mixture is (``mixture``) and how it is fitted (their stages)."""

    assign_by = "proba"
    find_unused_parameters = True      # pretraining leaves the log-variance head and the prior out

    def __init__(self, input_dim, params: VaDEParams, normalizer=None):
        super().__init__(input_dim, params, normalizer)
        self.logvar_head = nn.Linear(params.hidden[-1], params.latent_dim)
        nn.init.zeros_(self.logvar_head.weight)
        nn.init.zeros_(self.logvar_head.bias)

    def mixture(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(log π, μ_k, log σ²_k) of the components in use, and their indices among the K columns of
        ``predict_proba`` (None: all K, in order)."""
        raise NotImplementedError

    def prior(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log π, μ_k, log σ²_k) of all K components of the prior."""
        raise NotImplementedError

    @torch.no_grad()
    def generate(self, n_per_cluster: int = 8, seed: int = 0) -> torch.Tensor:
        """z ~ N(μ_k, σ²_k) for each component k, decoded to the decoder's mean, in raw feature space."""
        _, mu, logvar = self.prior()
        z = sample_components(mu, logvar, n_per_cluster, torch.Generator().manual_seed(seed))
        x = decoder_mean(self.ae.decoder(z.reshape(-1, mu.shape[1])), self.params.recon)
        x = x * self.normalizer.scale + self.normalizer.shift
        return x.reshape(mu.shape[0], n_per_cluster, -1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.ae.encoder[:-1](self.normalizer(x))
        return self.ae.encoder[-1](h), self.logvar_head(h).clamp(-12.0, 12.0)

    def elbo_loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        xn = self.normalizer(x)
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar)
        out = self.ae.decoder(z)
        if self.layout is not None:
            rec = typed_reconstruction_loss(out, xn, x, self.layout)
        else:
            rec = -recon_log_likelihood(out, xn, self.params.recon, self.params.recon_logvar)
        log_pi, mu_c, logvar_c, _ = self.mixture()
        kl_z, kl_c, _ = mixture_elbo_terms(mu, logvar, z, log_pi, mu_c, logvar_c)
        loss = (rec + kl_z + kl_c).mean()
        return {"loss": loss, "recon": rec.mean().detach(), "kl_z": kl_z.mean().detach(),
                "kl_c": kl_c.mean().detach()}

    def forward(self, x, stage):
        if stage == "pretrain":
            return self.pretrain_loss(x)
        return self.elbo_loss(x)

    def predict_proba(self, x):
        """γ = p(c | z) at z = μ̃(x); rows sum to 1."""
        mu, _ = self.encode(x)
        log_pi, mu_c, logvar_c, idx = self.mixture()
        g = F.softmax(log_pi[None] + log_normal_components(mu, mu_c, logvar_c), dim=1)
        if idx is None:
            return g
        out = torch.zeros(len(mu), self.n_clusters, dtype=g.dtype, device=g.device)
        out[:, idx] = g
        return out


class VaDE(MixturePriorVAE):
    """Variational Deep Embedding: VAE with a learned Gaussian-mixture prior."""

    name = "vade"
    Params = VaDEParams

    def __init__(self, input_dim, params: VaDEParams, normalizer=None):
        super().__init__(input_dim, params, normalizer)
        K, D = params.n_clusters, params.latent_dim
        self.pi_logits = nn.Parameter(torch.zeros(K))
        self.mu_c = nn.Parameter(torch.zeros(K, D))
        self.logvar_c = nn.Parameter(torch.zeros(K, D))

    def prior(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log π, μ_k, log σ²_k) of the mixture prior."""
        return F.log_softmax(self.pi_logits, 0), self.mu_c, self.logvar_c

    def mixture(self):
        return (*self.prior(), None)

    # -- stages -------------------------------------------------------------------------
    def gmm_init_stage(self) -> Stage:
        def init(ctx: "WorkerContext"):
            p = self.params
            K, D = self.n_clusters, p.latent_dim
            z = ctx.gather_sample(lambda b: self.embed(b["features"]), p.gmm_sample)
            require_rows(len(z), K, "the GMM")
            packed = torch.zeros(K * (1 + 2 * D) + 1, dtype=torch.float64)
            if ctx.rank == 0:
                from sklearn.mixture import GaussianMixture

                zn = z.cpu().double().numpy()
                start = {}
                if p.gmm_init == "faiss":
                    from ..faiss_ops import kmeans

                    start = {"means_init": kmeans(zn.astype("float32"), K, seed=ctx.seed,
                                                  nredo=p.gmm_kmeans_restarts)[0].astype("float64")}
                gmm = GaussianMixture(K, covariance_type="diag", random_state=ctx.seed,
                                      n_init=1 if start else p.gmm_n_init, reg_covar=1e-6, max_iter=200,
                                      **start).fit(zn)
                packed = torch.cat([torch.as_tensor(gmm.weights_), torch.as_tensor(gmm.means_).reshape(-1),
                                    torch.as_tensor(gmm.covariances_).reshape(-1),
                                    torch.tensor([gmm.score(zn)])])
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
        return Stage("vade", p.epochs, p.lr, p.weight_decay, lr_decay_every=p.lr_decay_every, lr_decay=p.lr_decay,
                     lr_floor=p.lr_floor)

    def stages(self) -> list[Stage]:
        return [self.pretrain_stage(), self.gmm_init_stage(), self.vade_stage()]

    def prototypes(self):
        return self.mu_c.detach()
