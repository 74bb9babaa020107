"""Encoders and decoders shared by every model (one place, as in ClustPy)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def check_network_params(p, s: str, example: str = "[500, 500, 2000]") -> None:
    """Validate the ``latent_dim`` / ``hidden`` / ``activation`` keys every MLP-based model has."""
    from ..spec import require

    require(p.latent_dim >= 1, f"{s}.latent_dim", f"'{s}.latent_dim' is {p.latent_dim}",
            "use a latent size of 1 or more, e.g. 10")
    require(len(p.hidden) >= 1 and all(h >= 1 for h in p.hidden), f"{s}.hidden", f"'{s}.hidden' is {p.hidden}",
            f"use one or more positive layer widths, e.g. {example}")
    require(p.activation in ACTIVATIONS, f"{s}.activation", f"'{s}.activation' is '{p.activation}'",
            f"use one of {', '.join(ACTIVATIONS)}")


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
