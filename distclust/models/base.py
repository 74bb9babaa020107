"""The model interface: a model is an ``nn.Module`` plus a short list of stages.

The engine (``distclust.engine``) knows nothing about any method. It runs each
``Stage`` in order: an optional ``on_start`` hook (typically a global pass over
the whole dataset with an all-reduce, e.g. FAISS k-means on the embeddings),
``epochs`` epochs of ``forward(x, stage) -> {"loss": ..., other scalars}``
under DDP, with optional ``on_step`` / ``on_epoch_end`` hooks. Everything a
model learns lives in its ``state_dict`` (parameters and buffers), so
checkpoints and artifacts need nothing model-specific.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable

import torch
from torch import nn

from ..validation import param

if TYPE_CHECKING:
    from ..engine.context import WorkerContext


@dataclass
class ModelParams:
    """Hyper-parameters shared by every model; subclasses add their own fields."""

    n_clusters: int = param(10, ge=1, fix="use 1 or more clusters (and no more than the number of rows)")
    # keys (prefixes) that change how the training loss is weighted (annealed KL weights, loss weights):
    # trials that differ in them must not be compared on "loss"; UNWEIGHTED_METRIC is what to use instead
    LOSS_WEIGHTING: ClassVar[tuple[str, ...]] = ()
    UNWEIGHTED_METRIC: ClassVar[str | None] = None

    def check(self, s: str) -> None:
        """Rules that tie several fields together (one field's own limits are declared with ``param``)."""

    def check_training(self, s: str) -> None:
        """Checks that only training needs (e.g. that a ``pretrained`` folder exists). A saved model is
        loaded with ``check`` alone, so a model folder copied anywhere still loads."""

    def resolved(self) -> "ModelParams":
        """A copy with paths made absolute where the spec is read (workers run in other folders)."""
        return self


@dataclass
class Stage:
    """One phase of training (e.g. pretrain, cluster)."""

    name: str
    epochs: int
    lr: float
    weight_decay: float = 0.0
    parameters: Callable[[], Iterable[nn.Parameter]] | None = None   # default: all parameters
    on_start: Callable[["WorkerContext"], dict | None] | None = None
    on_step: Callable[["WorkerContext", int], dict | None] | None = None        # before step i of the stage
    on_epoch_end: Callable[["WorkerContext", int], dict | None] | None = None
    optimizer: str = "adam"    # adam | sgd (with momentum, as DEC-keras pretrains)
    momentum: float = 0.9      # sgd only
    lr_decay_every: int = 0    # multiply the lr by lr_decay every this many epochs (0 = constant lr)
    lr_decay: float = 1.0
    lr_floor: float = 0.0      # the decayed lr never drops below this
    lr_cosine: bool = False    # cosine decay from lr to lr/100 over the stage's epochs (instead of steps)
    monitor: str = "loss"      # per-epoch metric (lower is better) that early stopping watches
    min_epochs: int = 0        # early stopping is not checked before this many epochs (e.g. end of an anneal)


class Normalizer(nn.Module):
    """``(x - shift) / scale`` with buffers, so the artifact carries its own normalisation."""

    def __init__(self, dim: int, pipeline: dict | None = None):
        super().__init__()
        self.register_buffer("shift", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        # the table's feature pipeline (data/features.py) when the data came from a mixed-type table:
        # its ``blocks`` drive the type-aware reconstruction loss; the artifact stores it in config.json
        self.pipeline = pipeline

    @property
    def blocks(self) -> list[dict] | None:
        return self.pipeline["blocks"] if self.pipeline else None

    @classmethod
    def from_stats(cls, stats, mode: str) -> "Normalizer":
        import numpy as np

        dim = len(stats.mean)
        norm = cls(dim, getattr(stats, "pipeline", None))
        mean, std = np.asarray(stats.mean), np.asarray(stats.std)
        lo, hi = np.asarray(stats.min), np.asarray(stats.max)
        if mode == "standard":
            shift, scale = mean, np.where(std > 1e-12, std, 1.0)
        elif mode == "minmax":
            shift, scale = lo, np.where(hi - lo > 1e-12, hi - lo, 1.0)
        elif mode == "global-minmax":
            rng = float(hi.max() - lo.min())
            shift, scale = np.full(dim, lo.min()), np.full(dim, rng if rng > 1e-12 else 1.0)
        else:
            shift, scale = np.zeros(dim), np.ones(dim)
        norm.shift.copy_(torch.as_tensor(shift, dtype=torch.float32))
        norm.scale.copy_(torch.as_tensor(scale, dtype=torch.float32))
        return norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class ClusterModel(nn.Module):
    """Base class of every distclust model.

    Subclasses set ``name`` and ``Params``, build their networks in ``__init__``,
    and implement ``stages``, ``forward`` and ``embed``. Cluster assignment is
    either nearest prototype in embedding space (``assign_by = "prototype"``,
    served by FAISS) or argmax of ``predict_proba`` (``assign_by = "proba"``).
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type] = ModelParams
    assign_by: ClassVar[str] = "prototype"
    # True when some stage leaves parameters out of its loss (e.g. DEC's decoder): DDP must know
    find_unused_parameters: ClassVar[bool] = False

    def __init__(self, input_dim: int, params: Any, normalizer: Normalizer | None = None):
        super().__init__()
        self.input_dim = int(input_dim)
        self.params = params
        self.normalizer = normalizer if normalizer is not None else Normalizer(input_dim)
        # set by a stage once the model can assign clusters (saved in state_dict)
        self.register_buffer("is_fitted", torch.zeros((), dtype=torch.bool))

    # -- required -------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, stage: str) -> dict[str, torch.Tensor]:
        """Loss of one batch of RAW features for ``stage``: a dict with 'loss' (and scalars to log)."""
        raise NotImplementedError

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Latent representation of raw features (``transform``)."""
        raise NotImplementedError

    # -- optional -------------------------------------------------------------------
    def prototypes(self) -> torch.Tensor | None:
        """(K, latent) prototypes for nearest-prototype assignment."""
        return None

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor | None:
        """(N, K) soft assignments, when the model defines them."""
        return None

    def generate(self, n_per_cluster: int = 8, seed: int = 0) -> torch.Tensor | None:
        """(K, n, input_dim) samples in RAW feature space, ``n_per_cluster`` drawn from each cluster's
        generative component (seeded), for generative models; None for the others."""
        return None

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Hard clusters in torch (used for metrics during training; FAISS serves artifacts)."""
        if self.assign_by == "proba":
            return self.predict_proba(x).argmax(1)
        z, mu = self.embed(x), self.prototypes()
        return torch.cdist(z, mu).argmin(1)

    @property
    def n_clusters(self) -> int:
        return int(self.params.n_clusters)

    def fitted(self) -> bool:
        return bool(self.is_fitted.item())
