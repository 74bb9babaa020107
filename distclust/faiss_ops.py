"""FAISS k-means and nearest-prototype search, on CPU or GPU.

One module serves both k-means initialisation (training) and assignment. Two
deliberate departures from FAISS defaults (measured in docs/architecture.md):
k-means++ seeding on the training sample, because FAISS's random seeding is much
worse on clustered data; and the number of training points set explicitly
(``max_points``) instead of FAISS's silent 256·k subsample.
"""
from __future__ import annotations

import numpy as np

import faiss


def gpu_available() -> bool:
    return hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0


def _as_f32(x) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


def kmeanspp_init(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii 2007), distances by FAISS."""
    n = len(x)
    centers = np.empty((k, x.shape[1]), dtype=np.float32)
    centers[0] = x[rng.integers(n)]
    d2 = ((x - centers[0]) ** 2).sum(1).astype(np.float64)
    for j in range(1, k):
        total = d2.sum()
        idx = rng.choice(n, p=d2 / total) if total > 0 else rng.integers(n)
        centers[j] = x[idx]
        d2 = np.minimum(d2, ((x - centers[j]) ** 2).sum(1))
    return centers


def kmeans(x, k: int, seed: int = 0, niter: int = 50, nredo: int = 3, max_points: int | None = None,
           use_gpu: bool | None = None) -> tuple[np.ndarray, float]:
    """Lloyd's k-means with k-means++ seeding; best of ``nredo`` seeds. Returns (centroids, inertia).

    ``max_points``: rows used for training (a seeded uniform sample); None = all rows.
    """
    x = _as_f32(x)
    n, d = x.shape
    if k < 1 or k > n:
        raise ValueError(f"k-means needs 1 <= k <= rows, got k={k} with {n} rows")
    rng = np.random.default_rng(seed)
    if max_points is not None and n > max_points:
        x = x[np.sort(rng.choice(n, max_points, replace=False))]
    use_gpu = gpu_available() if use_gpu is None else use_gpu
    best, best_obj = None, np.inf
    for r in range(max(1, nredo)):
        init = kmeanspp_init(x, k, rng)
        km = faiss.Kmeans(d, k, niter=niter, seed=int(seed) * 1000 + r, gpu=bool(use_gpu),
                          max_points_per_centroid=max(1, (len(x) + k - 1) // k) + 1,
                          min_points_per_centroid=1, verbose=False)
        km.train(x, init_centroids=init)
        obj = float(km.obj[-1]) if len(km.obj) else float("inf")
        if obj < best_obj:
            best, best_obj = km.centroids.copy(), obj
    return best, best_obj


class NearestPrototype:
    """Exact L2 nearest-prototype search (``IndexFlatL2``; on GPU when one is there)."""

    def __init__(self, prototypes, use_gpu: bool | None = None):
        p = _as_f32(prototypes)
        self.k, self.d = p.shape
        index = faiss.IndexFlatL2(self.d)
        use_gpu = gpu_available() if use_gpu is None else use_gpu
        if use_gpu:
            index = faiss.index_cpu_to_all_gpus(index)
        index.add(p)
        self.index = index

    def search(self, x, n: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(labels, squared distances) of the ``n`` nearest prototypes; shapes (N,) when n == 1."""
        dist, lab = self.index.search(_as_f32(x), n)
        if n == 1:
            return lab[:, 0].astype(np.int64), dist[:, 0]
        return lab.astype(np.int64), dist
