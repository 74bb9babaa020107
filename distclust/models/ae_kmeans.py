"""Autoencoder + k-means: pretrain an MLP autoencoder on reconstruction, then
cluster the embeddings with FAISS k-means (gathered from every worker)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..spec import require
from .base import ClusterModel, ModelParams, Stage
from .networks import Autoencoder, check_network_params, reconstruction_loss, require_layout, typed_reconstruction_loss

if TYPE_CHECKING:
    from ..engine.context import WorkerContext


@dataclass
class AEParams(ModelParams):
    latent_dim: int = 10
    hidden: list[int] = field(default_factory=lambda: [500, 500, 2000])
    activation: str = "relu"
    recon: str = "mse"                 # mse | bce (features in [0, 1]) | typed (per-column losses of a table)
    pretrain_epochs: int = 50
    pretrain_lr: float = 1e-3
    pretrain_optimizer: str = "adam"   # adam | sgd (DEC-keras: sgd, lr 1, momentum 0.9)
    pretrain_momentum: float = 0.9
    pretrain_lr_decay_every: int = 0   # epochs between lr × pretrain_lr_decay (0 = constant)
    pretrain_lr_decay: float = 0.1
    weight_init: str = "glorot"        # glorot | variance_scaling (DEC-keras' VarianceScaling(1/3, fan_in))
    weight_decay: float = 0.0
    kmeans_niter: int = 100
    kmeans_nredo: int = 5
    kmeans_sample: int = 200_000       # rows gathered over all workers for FAISS k-means
    column_dropout: float = 0.0        # recon: typed — share of table columns hidden from the encoder while
    #                                    pretraining (denoising: the code must carry what columns share)

    def check(self, s: str) -> None:
        super().check(s)
        check_network_params(self, s, "[500, 500, 2000]")
        require(self.recon in ("mse", "bce", "typed"), f"{s}.recon", f"'{s}.recon' is '{self.recon}'",
                "use mse, bce, or typed (tables ingested with --id-column)")
        require(self.pretrain_optimizer in ("adam", "sgd"), f"{s}.pretrain_optimizer",
                f"'{s}.pretrain_optimizer' is '{self.pretrain_optimizer}'", "use adam or sgd")
        require(0 <= self.pretrain_momentum < 1 and self.pretrain_lr_decay_every >= 0 and 0 < self.pretrain_lr_decay <= 1,
                f"{s}.pretrain_momentum", "pretrain_momentum must be in [0, 1), pretrain_lr_decay_every ≥ 0 and "
                "pretrain_lr_decay in (0, 1]", "e.g. pretrain_momentum: 0.9, pretrain_lr_decay_every: 0")
        require(self.weight_init in ("glorot", "variance_scaling"), f"{s}.weight_init",
                f"'{s}.weight_init' is '{self.weight_init}'", "use glorot or variance_scaling")
        require(self.pretrain_epochs >= 0, f"{s}.pretrain_epochs",
                f"'{s}.pretrain_epochs' is {self.pretrain_epochs}", "use 0 or more epochs")
        for key in ("pretrain_lr",):
            require(getattr(self, key) > 0, f"{s}.{key}", f"'{s}.{key}' is {getattr(self, key)}",
                    "use a positive learning rate such as 1e-3")
        require(self.weight_decay >= 0, f"{s}.weight_decay", f"'{s}.weight_decay' is {self.weight_decay}",
                "use 0 or a positive weight decay")
        require(self.kmeans_niter >= 1 and self.kmeans_nredo >= 1, f"{s}.kmeans_niter",
                "k-means needs at least 1 iteration and 1 restart", "set kmeans_niter and kmeans_nredo ≥ 1")
        require(0 <= self.column_dropout < 1, f"{s}.column_dropout", f"'{s}.column_dropout' is {self.column_dropout}",
                "use a share in [0, 1), e.g. 0.3 (0 = off)")
        require(self.kmeans_sample >= self.n_clusters, f"{s}.kmeans_sample",
                f"'{s}.kmeans_sample' ({self.kmeans_sample}) is below n_clusters", "raise kmeans_sample")


def kmeans_prototypes(ctx: "WorkerContext", embed, k: int, params: AEParams) -> tuple[torch.Tensor, float]:
    """FAISS k-means on embeddings gathered from all workers (up to ``kmeans_sample`` rows).

    Rank 0 clusters and broadcasts, so every worker holds identical prototypes.
    """
    from .. import faiss_ops

    z = ctx.gather_sample(lambda b: embed(b["features"]), params.kmeans_sample)
    if len(z) < k:
        from ..errors import DataError

        raise DataError(f"n_clusters={k} but only {len(z)} rows reached k-means", "model.n_clusters",
                        f"use n_clusters ≤ {len(z)}")
    centroids = torch.zeros(k, z.shape[1])
    inertia = torch.zeros(())
    if ctx.rank == 0:
        c, obj = faiss_ops.kmeans(z.cpu().numpy(), k, seed=ctx.seed, niter=params.kmeans_niter,
                                  nredo=params.kmeans_nredo, use_gpu=ctx.device.type == "cuda" or None)
        centroids, inertia = torch.from_numpy(c), torch.tensor(obj / len(z))
    return ctx.broadcast(centroids.to(ctx.device)), float(ctx.broadcast(inertia.to(ctx.device)))


class AEKMeans(ClusterModel):
    """MLP autoencoder pretrained on reconstruction, then FAISS k-means on its embeddings."""

    name = "ae-kmeans"
    Params = AEParams

    def __init__(self, input_dim, params: AEParams, normalizer=None):
        super().__init__(input_dim, params, normalizer)
        self.ae = Autoencoder(input_dim, params.hidden, params.latent_dim, params.activation,
                              init=getattr(params, "weight_init", "glorot"))
        self.register_buffer("centroids", torch.zeros(params.n_clusters, params.latent_dim))
        self.layout = require_layout(self.normalizer, params.recon, "model.recon")

    # the pretraining stage is shared by DEC / IDEC / VaDE-style models
    def pretrain_stage(self) -> Stage:
        p = self.params
        return Stage("pretrain", p.pretrain_epochs, p.pretrain_lr, p.weight_decay, parameters=self.ae.parameters,
                     optimizer=getattr(p, "pretrain_optimizer", "adam"), momentum=getattr(p, "pretrain_momentum", 0.9),
                     lr_decay_every=getattr(p, "pretrain_lr_decay_every", 0), lr_decay=getattr(p, "pretrain_lr_decay", 1.0))

    def kmeans_stage(self) -> Stage:
        def run_kmeans(ctx):
            c, inertia = kmeans_prototypes(ctx, self.embed, self.n_clusters, self.params)
            self.centroids.copy_(c)
            self.is_fitted.fill_(True)
            return {"kmeans_inertia": inertia}

        return Stage("kmeans", 0, 0.0, on_start=run_kmeans)

    def stages(self) -> list[Stage]:
        return [self.pretrain_stage(), self.kmeans_stage()]

    def reconstruction(self, x_hat: torch.Tensor, xn: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Mean reconstruction loss of a batch: per-column typed losses when the data is a table."""
        if self.layout is not None:
            return typed_reconstruction_loss(x_hat, xn, x, self.layout).mean()
        return reconstruction_loss(x_hat, xn, self.params.recon)

    def recon_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xn = self.normalizer(x)
        rate = getattr(self.params, "column_dropout", 0.0)
        if self.layout is not None and rate > 0 and self.training:
            z = self.ae.encoder(self.layout.drop_columns(xn, rate))
            x_hat = self.ae.decoder(z)
        else:
            z, x_hat = self.ae(xn)
        return self.reconstruction(x_hat, xn, x), z

    def forward(self, x, stage):
        loss, _ = self.recon_loss(x)
        return {"loss": loss, "recon": loss.detach()}

    def embed(self, x):
        return self.ae.encoder(self.normalizer(x))

    def prototypes(self):
        return self.centroids
