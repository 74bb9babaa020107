"""A scikit-learn style front end: ``Clusterer(model="dec", n_clusters=10).fit(X)``.

``fit`` writes ``X`` (and ``y``, if given, for training-time metrics) to a temporary
.npz, trains it through the same Ray Train path as ``distclust train`` (ingest to
sharded Parquet, ``workers`` DDP workers), loads the artifact and serves
``predict`` / ``predict_proba`` / ``transform`` from it::

    from distclust import Clusterer
    est = Clusterer("dec", n_clusters=10, workers=2, pretrain_epochs=50).fit(X)
    labels = est.predict(X)

Model keys (``latent_dim``, ``pretrain_epochs``, ``tol`` …) are passed as keyword
arguments and checked exactly as in a job spec.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError, DistclustError


class Clusterer:
    """Fit any registered distclust model on an in-memory array with Ray Train.

    Parameters: ``model`` (registered name), ``n_clusters``, ``workers`` (Ray Train
    workers; 0 = the same training loop in this process, without Ray), ``cpus_per_worker``, ``batch_size``, ``seed``, ``normalize`` (data
    normalisation mode), ``out_dir`` (keep the run there; default: a temporary
    directory removed after loading), ``quiet``; every other keyword is a model key.
    """

    def __init__(self, model: str = "dec", n_clusters: int = 10, workers: int = 2, cpus_per_worker: float = 1.0,
                 batch_size: int = 256, seed: int = 0, normalize: str = "standard", out_dir: str | None = None,
                 quiet: bool = True, **params: Any):
        self.model = model
        self.n_clusters = n_clusters
        self.workers = workers
        self.cpus_per_worker = cpus_per_worker
        self.batch_size = batch_size
        self.seed = seed
        self.normalize = normalize
        self.out_dir = out_dir
        self.quiet = quiet
        self.params = params

    def spec_dict(self) -> dict:
        return {"name": f"py-{self.model}", "data": {"normalize": self.normalize, "shards": max(2 * self.workers, 2)},
                "model": {"name": self.model, "n_clusters": self.n_clusters, **self.params},
                "train": {"batch_size": self.batch_size, "seed": self.seed, "quiet": self.quiet},
                "scaling": {"num_workers": max(self.workers, 1), "cpus_per_worker": self.cpus_per_worker}}

    # -- fitting -----------------------------------------------------------------------
    def fit(self, X, y=None) -> "Clusterer":
        from .artifact import load
        from .engine.trainer import run_training
        from .spec import load_spec

        X = np.asarray(X)
        if X.ndim != 2 or len(X) == 0:
            raise DataError(f"expected a non-empty 2-D array (rows × features), got shape {X.shape}", "fit(X)",
                            "pass an array of shape (n_rows, n_features)")
        spec = load_spec(self.spec_dict())  # bad keys fail here, before any data is written
        tmp = Path(tempfile.mkdtemp(prefix="distclust-fit-"))
        try:
            src = tmp / "data.npz"
            arrays = {"X": X.astype(np.float32, copy=False)}
            if y is not None:
                arrays["y"] = np.asarray(y)
            np.savez(src, **arrays)
            run_dir = Path(self.out_dir) if self.out_dir else tmp / "run"
            if self.workers == 0:   # the same loop in this process, no Ray
                from .engine.inprocess import train_inprocess

                res = train_inprocess(spec, X=arrays["X"], y=arrays.get("y"), out_dir=run_dir)
            else:
                res = run_training(spec, run_dir, data=str(src))
            self.model_ = load(res.model_dir)
            self.history_ = res.history
            self.model_dir_ = res.model_dir if self.out_dir else None
            self.train_time_s_ = res.wall_s
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.n_features_in_ = self.model_.n_features_in_
        self.n_clusters_ = self.model_.n_clusters_
        self.cluster_centers_ = self.model_.cluster_centers_
        self.labels_ = self.model_.predict(X)
        return self

    def _fitted(self):
        if not hasattr(self, "model_"):
            raise DistclustError("this Clusterer is not fitted yet", "Clusterer", "call fit(X) first")
        return self.model_

    # -- prediction --------------------------------------------------------------------
    def predict(self, X) -> np.ndarray:
        return self._fitted().predict(X)

    def predict_proba(self, X) -> np.ndarray:
        return self._fitted().predict_proba(X)

    def transform(self, X) -> np.ndarray:
        return self._fitted().transform(X)

    def fit_predict(self, X, y=None) -> np.ndarray:
        return self.fit(X, y).labels_

    def score(self, X, y) -> dict[str, float]:
        """ACC / NMI / ARI of the clusters of ``X`` against labels ``y``."""
        return self._fitted().score_metrics(X, y)

    def get_params(self, deep: bool = True) -> dict:
        return {"model": self.model, "n_clusters": self.n_clusters, "workers": self.workers,
                "cpus_per_worker": self.cpus_per_worker, "batch_size": self.batch_size, "seed": self.seed,
                "normalize": self.normalize, "out_dir": self.out_dir, "quiet": self.quiet, **self.params}

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.params.items())
        return f"Clusterer({self.model!r}, n_clusters={self.n_clusters}, workers={self.workers}{extra})"
