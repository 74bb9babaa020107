"""Post-hoc Dirichlet-process mixture on the embeddings of any trained distclust model
(``distclust dpgmm MODEL DATA``): how many clusters does the embedding hold?

The data are streamed through ``FittedModel.transform`` once, the embeddings spilled to a
memory-mapped file in a work folder, and every variational iteration streams that file in batches
(sufficient statistics summed; never all embeddings in memory).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DataError
from .models.dp_mixture import DPGMMResult, fit_dpgmm

def embed_to_memmap(model_dir, data, out_dir, batch_rows: int = 8192, device: str = "cpu"):
    """Stream ``data`` (any source ``distclust ingest`` reads) through the artifact's ``transform`` in
    batches into ``out_dir/z.npy`` (memory-mapped) and ``labels.npy``; returns (z memmap, labels or None)."""
    import distclust
    from .data.sources import open_source

    model = distclust.load(model_dir, device=device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels, n, dim = [], 0, None
    zfile = out / "z.f32"
    with open(zfile, "wb") as f:
        for chunk in open_source(data, chunk_rows=batch_rows):
            z = model.transform(chunk.X).astype(np.float32)
            dim = z.shape[1]
            f.write(z.tobytes())
            n += len(z)
            if chunk.labels is not None and chunk.labels.dtype != object:
                labels.append(chunk.labels.astype(np.int64))
    if n == 0 or dim is None:
        raise DataError(f"'{data}' holds no rows", str(data), "pass the data the model was trained on")
    z = np.memmap(zfile, dtype=np.float32, mode="r", shape=(n, dim))
    y = np.concatenate(labels) if labels and sum(map(len, labels)) == n else None
    return z, y


def fit_dpgmm_artifact(model_dir, data, work_dir, k_max: int = 30, batch_rows: int = 8192,
                       **kw) -> tuple[DPGMMResult, np.memmap, np.ndarray | None]:
    """Post-hoc DP mixture on the embeddings of any trained distclust artifact. The embeddings are
    spilled to ``work_dir`` (the caller owns it: the returned memmap lives there)."""
    z, y = embed_to_memmap(model_dir, data, Path(work_dir), batch_rows=batch_rows)
    res = fit_dpgmm(lambda: (z[s:s + batch_rows] for s in range(0, len(z), batch_rows)), k_max,
                    batch_rows=batch_rows, **kw)
    return res, z, y


def merged_clusters(res: DPGMMResult, z, sample: int = 20_000, seed: int = 0) -> int:
    """The kept components merged into clusters by Hennig's DEMP (``dp_mixture.demp_merge``), with
    the posteriors of a seeded sample of at most ``sample`` rows of ``z`` (a memmap is fine)."""
    idx = np.arange(len(z)) if len(z) <= sample else np.sort(np.random.default_rng(seed).choice(len(z), sample,
                                                                                                  replace=False))
    return res.merged_count(np.asarray(z[idx], dtype=np.float64))


def label_report(res: DPGMMResult, z, y, batch_rows: int = 65536) -> dict:
    """ACC (Hungarian and many-to-one), NMI, ARI, completeness of the DP clustering against labels."""
    from . import metrics as M

    pred = np.concatenate([res.predict(z[s:s + batch_rows]) for s in range(0, len(z), batch_rows)])
    m = M.contingency(pred, np.asarray(y), n_pred=res.mixture.k_max)
    out = M.scores(m)
    out["completeness"] = M.completeness_from_contingency(m)
    out["clusters_used"] = int((m.sum(1) > 0).sum())
    return out
