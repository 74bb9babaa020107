"""Encoders and decoders shared by every model (one place, as in ClustPy)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..validation import param

ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


@dataclass
class NetworkParams:
    """The keys of every MLP-based model's networks (a model's Params lists it before ``ModelParams``)."""

    latent_dim: int = param(10, ge=1)
    hidden: list[int] = param(factory=lambda: [500, 500, 2000], ge=1, min_items=1)   # encoder; decoder mirrors it
    activation: str = param("relu", choices=tuple(ACTIVATIONS))


def mlp(dims: Sequence[int], activation: str = "relu", last_activation: bool = False,
        batch_norm: bool = False) -> nn.Sequential:
    """Linear layers through ``dims`` with activations between (and after the last if asked)."""
    act = ACTIVATIONS[activation]
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2 or last_activation:
            if batch_norm:
                layers.append(nn.BatchNorm1d(dims[i + 1]))
            layers.append(act())
    seq = nn.Sequential(*layers)
    for m in seq.modules():
        if isinstance(m, nn.Linear):  # Glorot-uniform, as DEC/IDEC's reference code
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return seq


INITS = ("glorot", "variance_scaling")


def variance_scaling_(module: nn.Module, scale: float = 1.0 / 3.0) -> None:
    """Keras' VarianceScaling(scale, mode='fan_in', distribution='uniform') on every Linear, zero biases:
    DEC-keras' initialisation for its SGD(lr=1, momentum=0.9) pretraining."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            limit = (3.0 * scale / m.in_features) ** 0.5
            nn.init.uniform_(m.weight, -limit, limit)
            nn.init.zeros_(m.bias)


class Autoencoder(nn.Module):
    """Symmetric MLP autoencoder: d → hidden… → latent → …hidden → d (DEC default d-500-500-2000-10)."""

    def __init__(self, input_dim: int, hidden: Sequence[int], latent_dim: int, activation: str = "relu",
                 init: str = "glorot"):
        super().__init__()
        dims = [input_dim, *hidden, latent_dim]
        self.encoder = mlp(dims, activation)
        self.decoder = mlp(dims[::-1], activation)
        if init == "variance_scaling":
            variance_scaling_(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        return z, self.decoder(z)


def reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Mean over the batch of the per-row reconstruction error (MSE per feature, or BCE on logits)."""
    if kind == "bce":
        return nn.functional.binary_cross_entropy_with_logits(x_hat, x.clamp(0, 1), reduction="none").sum(1).mean()
    return ((x_hat - x) ** 2).mean()


class BlockLayout(nn.Module):
    """Where each column of a mixed-type table sits in the feature vector (from ``pipeline["blocks"]``).

    Built once per model as non-persistent buffers (they move with ``.to(device)`` and stay out
    of ``state_dict``: the layout itself is saved with the pipeline in the artifact's config).
    Categorical blocks are padded into one (n_blocks, max_width) index matrix, so one
    ``log_softmax`` serves every column whatever its number of levels.
    """

    def __init__(self, blocks: Sequence[dict]):
        super().__init__()
        num = [b["start"] for b in blocks if b["kind"] == "numeric"]
        ind = [b["start"] for b in blocks if b["kind"] == "indicator"]
        cat = [(b["start"], b["end"]) for b in blocks if b["kind"] == "categorical"]
        width = max((e - s for s, e in cat), default=1)
        idx = torch.zeros(len(cat), width, dtype=torch.long)
        pad = torch.ones(len(cat), width, dtype=torch.bool)
        for i, (s, e) in enumerate(cat):
            idx[i, :e - s] = torch.arange(s, e)
            pad[i, :e - s] = False
        self.register_buffer("numeric", torch.tensor(num, dtype=torch.long), persistent=False)
        self.register_buffer("indicator", torch.tensor(ind, dtype=torch.long), persistent=False)
        self.register_buffer("cat_index", idx, persistent=False)
        self.register_buffer("cat_pad", pad, persistent=False)
        # which table column each feature belongs to (a number and its missing indicator share one)
        names = list(dict.fromkeys(b.get("column", i) for i, b in enumerate(blocks)))
        col = torch.zeros(max((b["end"] for b in blocks), default=0), dtype=torch.long)
        for i, b in enumerate(blocks):
            col[b["start"]:b["end"]] = names.index(b.get("column", i))
        self.n_columns = len(names)
        self.register_buffer("column", col, persistent=False)

    def drop_columns(self, x: torch.Tensor, rate: float) -> torch.Tensor:
        """``x`` with a random ``rate`` of each row's table columns zeroed (whole blocks: a one-hot
        block or a number with its indicator), so an encoder must infer them from the others."""
        keep = (torch.rand(x.shape[0], self.n_columns, device=x.device) >= rate).to(x.dtype)
        return x * keep[:, self.column]


def typed_reconstruction_loss(x_hat: torch.Tensor, x_norm: torch.Tensor, x_raw: torch.Tensor,
                              layout: BlockLayout) -> torch.Tensor:
    """Per-row negative log-likelihood of a mixed-type row, one term per column:

    numeric → Gaussian with unit variance, ½(x̂ − x)² on the (normalised) value; missing
    indicators → Bernoulli (BCE on logits); categorical / hashed blocks → cross-entropy of a
    softmax over the block (target: the hot slot of the raw one-hot). A one-hot block is thus
    one categorical outcome, not a bag of independent pixels.
    """
    loss = x_hat.new_zeros(x_hat.shape[0])
    if layout.numeric.numel():
        loss = loss + 0.5 * ((x_hat[:, layout.numeric] - x_norm[:, layout.numeric]) ** 2).sum(1)
    if layout.indicator.numel():
        loss = loss + nn.functional.binary_cross_entropy_with_logits(
            x_hat[:, layout.indicator], x_raw[:, layout.indicator].clamp(0, 1), reduction="none").sum(1)
    if layout.cat_index.numel():
        logits = x_hat[:, layout.cat_index].masked_fill(layout.cat_pad, float("-inf"))   # (N, B, W)
        target = x_raw[:, layout.cat_index].masked_fill(layout.cat_pad, float("-inf")).argmax(-1)
        logp = torch.log_softmax(logits, -1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
        loss = loss - logp.sum(1)
    return loss


def require_layout(normalizer, recon: str, where: str) -> BlockLayout | None:
    """The block layout for ``recon: typed`` (None otherwise); a clear error when the data has none."""
    if recon != "typed":
        return None
    blocks = getattr(normalizer, "blocks", None)
    if not blocks:
        from ..errors import DataError

        raise DataError("recon: typed needs the column layout of a table ingested with column roles, "
                        "but this data has none", where,
                        "ingest the table with 'distclust ingest TABLE OUT --id-column NAME', or use recon: mse")
    return BlockLayout(blocks)


VARIANCES = ("exp", "softplus")


def variance_to_logvar(a: torch.Tensor, variance: str = "exp") -> torch.Tensor:
    """A network output ``a`` as a log-variance: ``exp`` reads it as log σ² (clamped to [-12, 12]);
    ``softplus`` as σ² = softplus(a) (Arias' GMVAE), whose σ² grows linearly, not exponentially, in
    ``a`` above 0 and starts at 0.69 for a = 0."""
    if variance == "softplus":
        return torch.log(F.softplus(a) + 1e-8).clamp(-12.0, 12.0)
    return a.clamp(-12.0, 12.0)


class GaussianHead(nn.Module):
    """Two linear maps ``h → (mu, logvar)`` of a diagonal Gaussian (``variance``: how the second
    map's output becomes a variance, see :func:`variance_to_logvar`)."""

    def __init__(self, in_dim: int, latent_dim: int, variance: str = "exp"):
        super().__init__()
        self.mu = nn.Linear(in_dim, latent_dim)
        self.logvar = nn.Linear(in_dim, latent_dim)
        self.variance = variance
        for m in (self.mu, self.logvar):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mu(h), variance_to_logvar(self.logvar(h), self.variance)


class GaussianEncoder(nn.Module):
    """``x → mlp(input_dim, *hidden) → (mu, logvar)`` (activation after the last hidden layer)."""

    def __init__(self, input_dim: int, hidden: Sequence[int], latent_dim: int, activation: str = "relu",
                 variance: str = "exp"):
        super().__init__()
        hidden = list(hidden)
        self.trunk = mlp([input_dim, *hidden], activation, last_activation=True) if hidden else nn.Identity()
        self.head = GaussianHead(hidden[-1] if hidden else input_dim, latent_dim, variance)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.trunk(x))
