"""Model artifacts: a directory that ``distclust.load`` turns into a predictor.

Layout::

    config.json      model name and parameters, input dim, normalisation mode, spec,
                     data summary, library versions, artifact format version
    weights.pt       the model's state_dict (weights, prototypes, normaliser buffers)
    prototypes.npy   (K, latent) prototypes for FAISS assignment, when the model has them
    history.json     per-epoch metrics of the training run
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .errors import ArtifactError, DataError

ARTIFACT_FORMAT = 1


def library_versions() -> dict[str, str]:
    import importlib

    out = {"distclust": __version__, "torch": torch.__version__, "numpy": np.__version__}
    for name, mod in (("ray", "ray"), ("faiss", "faiss"), ("pyarrow", "pyarrow"), ("scikit-learn", "sklearn")):
        try:   # the in-process path also runs where Ray or FAISS are not installed (a bare GPU image)
            out[name] = getattr(importlib.import_module(mod), "__version__", "?")
        except ImportError:
            out[name] = "absent"
    return out


def save_artifact(model, out_dir: str | os.PathLike, spec=None, data_info: dict | None = None,
                  history: list | None = None, extra: dict | None = None) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from dataclasses import asdict

    cfg = {
        "format": ARTIFACT_FORMAT,
        "model": model.name,
        "params": asdict(model.params),
        "input_dim": model.input_dim,
        "n_clusters": model.n_clusters,
        "assign_by": model.assign_by,
        "spec": spec.to_dict() if spec is not None else None,
        "data": data_info or {},
        # the fitted feature pipeline of a mixed-type table: assign and predict take raw tables
        "features": getattr(model.normalizer, "pipeline", None),
        "versions": library_versions(),
        **(extra or {}),
    }
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out / "weights.pt")
    protos = model.prototypes()
    if protos is not None:
        np.save(out / "prototypes.npy", protos.detach().cpu().numpy().astype(np.float32))
    (out / "history.json").write_text(json.dumps(history or [], indent=1, default=float))
    (out / "config.json").write_text(json.dumps(cfg, indent=1, default=str))
    return out


def copy_artifact(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy an artifact directory into place atomically (tmp + rename)."""
    dst = Path(dst)
    tmp = dst.parent / f".{dst.name}.tmp-{uuid.uuid4().hex[:8]}"
    shutil.copytree(src, tmp)
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(tmp, dst)
    return dst


class FittedModel:
    """A trained model loaded from an artifact, scikit-learn style.

    ``predict`` / ``transform`` / ``predict_proba`` take raw features (the
    artifact applies its own normalisation) as a NumPy array or tensor; a model
    trained on an ingested table also takes the raw table (pandas or Arrow) and
    encodes it with the pipeline fitted at ingest (``pipeline``).
    """

    def __init__(self, model, config: dict, path: Path | None = None, device: str = "cpu"):
        self.model = model.eval()
        self.config = config
        self.path = path
        self.device = torch.device(device)
        self.n_clusters_ = int(config["n_clusters"])
        self.n_features_in_ = int(config["input_dim"])
        self._index = None
        feats = config.get("features")
        if feats:
            from .data.features import FeaturePipeline

            self.pipeline = FeaturePipeline.from_dict(feats)
        else:
            self.pipeline = None
        protos = model.prototypes()
        self.cluster_centers_ = None if protos is None else protos.detach().cpu().numpy().astype(np.float32)

    # -- helpers -------------------------------------------------------------------
    def _check(self, X) -> np.ndarray:
        if self.pipeline is not None and _is_table(X):
            return self.pipeline.transform(X, "predict input")
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2:
            raise DataError(f"expected a 2-D array (rows × features), got shape {X.shape}", "predict input",
                            "pass an array of shape (n_rows, n_features)")
        if X.shape[1] != self.n_features_in_:
            raise DataError(f"the data has {X.shape[1]} features but the model was trained on {self.n_features_in_}",
                            str(self.path or "model"), "pass data with the same features as the training data")
        if not np.isfinite(X).all():
            r = int(np.argwhere(~np.isfinite(X))[0][0])
            raise DataError(f"row {r} holds NaN or inf", "predict input", "impute or drop non-finite values")
        return X

    def _batches(self, X: np.ndarray, batch_size: int = 8192):
        with torch.inference_mode():
            for s in range(0, len(X), batch_size):
                yield torch.from_numpy(np.array(X[s:s + batch_size], copy=True)).to(self.device)

    @property
    def index(self):
        if self._index is None and self.cluster_centers_ is not None:
            from .faiss_ops import NearestPrototype

            self._index = NearestPrototype(self.cluster_centers_, use_gpu=self.device.type == "cuda")
        return self._index

    # -- scikit-learn API ----------------------------------------------------------
    def transform(self, X) -> np.ndarray:
        return self._embed(self._check(X))

    def normalize(self, X) -> np.ndarray:
        """The features as the model sees them (its training normalisation applied)."""
        n = self.model.normalizer
        X = self._check(X)
        return ((X - n.shift.cpu().numpy()) / n.scale.cpu().numpy()).astype(np.float32)

    def _embed(self, X: np.ndarray) -> np.ndarray:
        return np.concatenate([self.model.embed(b).cpu().numpy() for b in self._batches(X)]) if len(X) else \
            np.zeros((0, 0), np.float32)

    def predict_proba(self, X) -> np.ndarray:
        X = self._check(X)
        out = [self.model.predict_proba(b) for b in self._batches(X)]
        if out and out[0] is None:
            raise ArtifactError(f"model '{self.config['model']}' has no soft assignments", str(self.path),
                                "use predict, or a model with predict_proba (e.g. dec, gmvae)")
        return np.concatenate([o.cpu().numpy() for o in out])

    def assign(self, X) -> tuple[np.ndarray, np.ndarray]:
        """(clusters, distance) — distance to the nearest prototype (or 1 − max probability)."""
        X = self._check(X)
        if self.config["assign_by"] == "proba":
            p = self.predict_proba(X)
            return p.argmax(1).astype(np.int64), (1.0 - p.max(1)).astype(np.float32)
        labels, d2 = self.index.search(self._embed(X))
        return labels, np.sqrt(np.maximum(d2, 0)).astype(np.float32)

    def predict(self, X) -> np.ndarray:
        return self.assign(X)[0]

    def score_metrics(self, X, y) -> dict[str, float]:
        from .metrics import cluster_scores

        return cluster_scores(self.predict(X), np.asarray(y))

    @property
    def history(self) -> list[dict]:
        p = self.path and Path(self.path, "history.json")
        return json.loads(p.read_text()) if p and p.is_file() else []

    def __repr__(self) -> str:
        return f"FittedModel({self.config['model']}, n_clusters={self.n_clusters_}, path={self.path})"


def _is_table(X) -> bool:
    import pyarrow as pa

    return isinstance(X, (pa.Table, pa.RecordBatch)) or type(X).__name__ == "DataFrame"


# buffers that models saved before they stopped holding them: VaDE, vae-dpgmm and manifold extended
# AE+k-means and carried its unused ``centroids`` until they became leaves of the autoencoder base
RETIRED_KEYS = ("centroids",)


def artifact_dir(path: str | os.PathLike) -> Path:
    """The model directory ``path`` names: itself, or ``path/model`` when it is a run directory."""
    path = Path(path).expanduser()
    if not (path / "config.json").is_file() and (path / "model" / "config.json").is_file():
        return path / "model"
    return path


def load(path: str | os.PathLike, device: str = "cpu") -> FittedModel:
    """Load an artifact directory (``RUN_DIR/model``, or the run directory itself) for prediction."""
    from .models import Normalizer, get_model_class
    from .validation import build

    path = artifact_dir(path)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise ArtifactError(f"'{path}' is not a distclust model (no config.json)", str(path),
                            "pass the model directory printed by 'distclust train' (RUN_DIR/model)")
    try:
        cfg: dict[str, Any] = json.loads(cfg_path.read_text())
    except ValueError as e:
        raise ArtifactError(f"config.json is not valid JSON ({e})", str(cfg_path), "re-train or re-copy the model")
    fmt = cfg.get("format")
    if fmt != ARTIFACT_FORMAT:
        made_by = cfg.get("versions", {}).get("distclust", "unknown")
        raise ArtifactError(f"artifact format {fmt} (made by distclust {made_by}) is not supported by distclust "
                            f"{__version__}, which reads format {ARTIFACT_FORMAT}", str(path),
                            f"load it with distclust {made_by}, or re-train the model with this version")
    cls = get_model_class(cfg["model"])
    params = build(cls.Params, cfg["params"], "model")
    model = cls(cfg["input_dim"], params, Normalizer(cfg["input_dim"], cfg.get("features")))
    try:
        state = torch.load(path / "weights.pt", map_location=device, weights_only=True)
        own = model.state_dict()
        for key in RETIRED_KEYS:   # saved by an earlier version, no longer part of this model
            if key in state and key not in own:
                state.pop(key)
        model.load_state_dict(state)
    except (RuntimeError, FileNotFoundError, OSError) as e:
        raise ArtifactError(f"the weights do not load ({type(e).__name__}: {str(e).splitlines()[0]})", str(path),
                            "re-copy the model directory completely, or re-train it") from None
    return FittedModel(model.to(device), cfg, path, device)
