"""Scoring one trial's model on a sample of the data: label-free criteria, labels' metrics beside."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .spec import LABEL_METRICS

def score_model(model_dir: str | Path, X: np.ndarray, y: np.ndarray | None, seed: int = 0,
                space: str = "embedding", space_model: str | Path | None = None) -> dict[str, float]:
    """Label-free criteria on a sample, plus label metrics when y is given. The partition is the
    model's; silhouette, Davies-Bouldin and BIC are computed in ``space``: the model's own
    embedding, the embedding of ``space_model`` (``pretrained``), or the normalised features."""
    from sklearn.metrics import davies_bouldin_score, silhouette_score
    from sklearn.mixture import GaussianMixture

    from ..artifact import load
    from ..metrics import cluster_scores

    model = load(model_dir)
    lab = model.predict(X)
    if space == "pretrained":
        Z = load(space_model).transform(X)
    elif space == "features":
        Z = model.normalize(X)
    else:
        Z = model.transform(X)
    out: dict[str, float] = {"clusters_used": float(len(np.unique(lab)))}
    if 1 < len(np.unique(lab)) < len(lab):
        out["silhouette"] = float(silhouette_score(Z, lab))
        out["davies_bouldin"] = float(davies_bouldin_score(Z, lab))
    else:  # a single cluster cannot be scored: rank it last
        out["silhouette"], out["davies_bouldin"] = -1.0, float("inf")
    gmm = GaussianMixture(model.n_clusters_, covariance_type="diag", random_state=seed, reg_covar=1e-4)
    out["bic"] = float(gmm.fit(Z).bic(Z))
    if y is not None:
        out.update({k: v for k, v in cluster_scores(lab, y).items() if k in LABEL_METRICS})
    return out
