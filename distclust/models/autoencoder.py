"""The autoencoder family's base: the network, its pretraining stage, and the one way to load a
pretrained autoencoder. Every autoencoder-based model (``ae-kmeans``, ``dec``/``idec``, ``vade``,
``vae-dpgmm``, ``deep-clam``, ``manifold``) extends ``AutoencoderModel`` as a leaf, the way
scikit-learn's ``BaseMixture`` carries its mixtures; none extends another model.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import ArtifactError, DataError
from ..validation import param, require
from .base import ClusterModel, ModelParams, Stage
from .networks import (INITS, Autoencoder, NetworkParams, reconstruction_loss, require_layout,
                       typed_reconstruction_loss)

if TYPE_CHECKING:
    from ..engine.context import WorkerContext

_NETWORK_KEYS = ("latent_dim", "hidden", "activation")
_FIX = "pass RUN_DIR/model of a run with the same autoencoder (hidden, latent_dim, activation) on the same data"


@dataclass
class AEParams(NetworkParams, ModelParams):
    """The autoencoder and its pretraining, shared by every autoencoder-based model."""

    # mse | bce (features in [0, 1]) | typed (per-column losses of a table)
    recon: str = param("mse", choices=("mse", "bce", "typed"),
                       fix="use mse, bce (features scaled to [0, 1], e.g. normalize: global-minmax), or typed "
                           "(tables ingested with --id-column)")
    pretrain_epochs: int = param(50, ge=0)
    pretrain_lr: float = param(1e-3, gt=0)
    pretrain_optimizer: str = param("adam", choices=("adam", "sgd"))   # DEC-keras: sgd, lr 1, momentum 0.9
    pretrain_momentum: float = param(0.9, ge=0, lt=1)
    pretrain_lr_decay_every: int = param(0, ge=0)   # epochs between lr × pretrain_lr_decay (0 = constant)
    pretrain_lr_decay: float = param(0.1, gt=0, le=1)
    # glorot | variance_scaling (DEC-keras' VarianceScaling(1/3, fan_in))
    weight_init: str = param("glorot", choices=INITS)
    weight_decay: float = param(0.0, ge=0)
    # recon: typed — share of table columns hidden from the encoder while pretraining (denoising: the
    # code must carry what columns share); 0 = off
    column_dropout: float = param(0.0, ge=0, lt=1)
    pretrained: str | None = None      # a model (or run) dir with the same autoencoder: load it, skip pretraining

    def check_training(self, s: str) -> None:
        if self.pretrained:
            from ..artifact import artifact_dir

            require(Path(artifact_dir(self.pretrained), "weights.pt").is_file(), f"{s}.pretrained",
                    f"'{s}.pretrained' ({self.pretrained}) is not a distclust model directory (no weights.pt)",
                    f"{_FIX}, or leave pretrained out to pretrain")

    def resolved(self) -> "AEParams":
        import dataclasses

        if not self.pretrained:
            return self
        from ..artifact import artifact_dir

        # absolute where the spec is read, so workers (any cwd) find it; a run dir means its model
        return dataclasses.replace(self, pretrained=str(artifact_dir(self.pretrained).resolve()))


@dataclass
class KMeansParams(AEParams):
    """AEParams plus the FAISS k-means that seeds prototypes on the embedding."""

    kmeans_niter: int = param(100, ge=1)
    kmeans_nredo: int = param(5, ge=1)
    kmeans_sample: int = 200_000       # rows gathered over all workers for FAISS k-means

    def check(self, s: str) -> None:
        super().check(s)
        require(self.kmeans_sample >= self.n_clusters, f"{s}.kmeans_sample",
                f"'{s}.kmeans_sample' ({self.kmeans_sample}) is below n_clusters", "raise kmeans_sample")


def require_rows(n: int, k: int, step: str) -> None:
    """Fewer gathered rows than clusters: the data is too small for ``n_clusters``."""
    if n < k:
        raise DataError(f"n_clusters={k} but only {n} rows reached {step}", "model.n_clusters",
                        f"use n_clusters ≤ {n}")


def kmeans_prototypes(ctx: "WorkerContext", embed, k: int, params: KMeansParams) -> tuple[torch.Tensor, float]:
    """FAISS k-means on embeddings gathered from all workers (up to ``kmeans_sample`` rows).

    Rank 0 clusters and broadcasts, so every worker holds identical prototypes.
    """
    from .. import faiss_ops

    z = ctx.gather_sample(lambda b: embed(b["features"]), params.kmeans_sample)
    require_rows(len(z), k, "k-means")
    centroids = torch.zeros(k, z.shape[1])
    inertia = torch.zeros(())
    if ctx.rank == 0:
        c, obj = faiss_ops.kmeans(z.cpu().numpy(), k, seed=ctx.seed, niter=params.kmeans_niter,
                                  nredo=params.kmeans_nredo, use_gpu=ctx.device.type == "cuda" or None)
        centroids, inertia = torch.from_numpy(c), torch.tensor(obj / len(z))
    return ctx.broadcast(centroids.to(ctx.device)), float(ctx.broadcast(inertia.to(ctx.device)))


def load_pretrained_autoencoder(model: "AutoencoderModel", path: str) -> None:
    """Copy the ``ae.*`` weights of a saved model into ``model.ae``. The network shape, the number of
    features and the input normalisation must all match, or the error says which does not."""
    from ..artifact import artifact_dir

    root = artifact_dir(path)
    if not (root / "config.json").is_file() or not (root / "weights.pt").is_file():
        raise ArtifactError(f"'{path}' is not a distclust model (no config.json / weights.pt)", "model.pretrained",
                            _FIX)
    cfg = json.loads((root / "config.json").read_text())
    theirs = cfg.get("params", {})
    for key in _NETWORK_KEYS:
        if key in theirs and theirs[key] != getattr(model.params, key):
            raise ArtifactError(f"the pretrained model has {key}={theirs[key]} but this job has "
                                f"{key}={getattr(model.params, key)}", "model.pretrained",
                                f"set model.{key}: {theirs[key]}, or {_FIX}")
    if int(cfg.get("input_dim", -1)) != model.input_dim:
        raise ArtifactError(f"the pretrained model takes {cfg.get('input_dim')} features, the data has "
                            f"{model.input_dim}", "model.pretrained", _FIX)
    state = torch.load(root / "weights.pt", map_location="cpu", weights_only=True)
    ae = {k[len("ae."):]: v for k, v in state.items() if k.startswith("ae.")}
    if not ae:
        raise ArtifactError(f"'{path}' holds no autoencoder (no 'ae.*' weights)", "model.pretrained", _FIX)
    for buf in ("shift", "scale"):
        theirs_b, mine_b = state.get(f"normalizer.{buf}"), getattr(model.normalizer, buf)
        if theirs_b is None or not torch.allclose(theirs_b.to(mine_b), mine_b, rtol=1e-4, atol=1e-6):
            raise ArtifactError("the pretrained autoencoder was trained with a different input normalisation "
                                "(data.normalize or the data itself differ)", "model.pretrained",
                                "train on the same data with the same data.normalize as the pretrained model")
    try:
        model.ae.load_state_dict(ae)
    except RuntimeError as e:
        raise ArtifactError(f"the pretrained autoencoder does not fit this model ({str(e).splitlines()[0]})",
                            "model.pretrained", _FIX) from None


class AutoencoderModel(ClusterModel):
    """Base of the autoencoder family: ``self.ae``, the table layout, the pretraining stage (or the
    loading of ``pretrained``), reconstruction losses and the encoder embedding."""

    Params = AEParams

    def __init__(self, input_dim, params: AEParams, normalizer=None):
        super().__init__(input_dim, params, normalizer)
        self.ae = Autoencoder(input_dim, params.hidden, params.latent_dim, params.activation, init=params.weight_init)
        self.layout = require_layout(self.normalizer, params.recon, "model.recon")

    def pretrain_stage(self) -> Stage:
        """Reconstruction pretraining; with ``pretrained`` the weights are loaded and no epoch runs."""
        p = self.params
        if p.pretrained:
            def load(ctx):
                load_pretrained_autoencoder(self, p.pretrained)
                return {"pretrained_loaded": 1.0}

            return Stage("pretrain", 0, p.pretrain_lr, on_start=load)
        return Stage("pretrain", p.pretrain_epochs, p.pretrain_lr, p.weight_decay, parameters=self.ae.parameters,
                     optimizer=p.pretrain_optimizer, momentum=p.pretrain_momentum,
                     lr_decay_every=p.pretrain_lr_decay_every, lr_decay=p.pretrain_lr_decay)

    def reconstruction(self, x_hat: torch.Tensor, xn: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Mean reconstruction loss of a batch: per-column typed losses when the data is a table."""
        if self.layout is not None:
            return typed_reconstruction_loss(x_hat, xn, x, self.layout).mean()
        return reconstruction_loss(x_hat, xn, self.params.recon)

    def recon_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean reconstruction loss, embedding) of raw rows; typed tables may hide columns (denoising)."""
        xn = self.normalizer(x)
        rate = self.params.column_dropout
        if self.layout is not None and rate > 0 and self.training:
            z = self.ae.encoder(self.layout.drop_columns(xn, rate))
            x_hat = self.ae.decoder(z)
        else:
            z, x_hat = self.ae(xn)
        return self.reconstruction(x_hat, xn, x), z

    def pretrain_loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        loss, _ = self.recon_loss(x)
        return {"loss": loss, "recon": loss.detach()}

    def forward(self, x, stage):
        return self.pretrain_loss(x)

    def embed(self, x):
        return self.ae.encoder(self.normalizer(x))
