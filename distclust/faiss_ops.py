"""FAISS k-means and nearest-prototype search, on CPU or GPU.

One module serves both k-means initialisation (training) and assignment. Two
deliberate departures from FAISS defaults (measured in docs/architecture.md):
k-means++ seeding on the training sample, because FAISS's random seeding is much
worse on clustered data; and the number of training points set explicitly
(``max_points``) instead of FAISS's silent 256·k subsample.
"""
from __future__ import annotations

import numpy as np

try:
    import faiss
except ImportError:  # a machine without FAISS (e.g. a bare GPU image): torch does the same exact maths
    faiss = None


def gpu_available() -> bool:
    return faiss is not None and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0


def _torch_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _torch_lloyd(x: np.ndarray, init: np.ndarray, niter: int) -> tuple[np.ndarray, float]:
    """Lloyd iterations in torch (the no-FAISS path): exact, like IndexFlatL2 + FAISS's update."""
    import torch

    dev = _torch_device()
    X, C = torch.from_numpy(x).to(dev), torch.from_numpy(init).to(dev)
    for _ in range(max(1, niter)):
        lab = torch.cdist(X, C).argmin(1)
        sums = torch.zeros_like(C).index_add_(0, lab, X)
        cnt = torch.bincount(lab, minlength=len(C)).unsqueeze(1)
        C = torch.where(cnt > 0, sums / cnt.clamp_min(1), C)
    d2 = torch.cdist(X, C).min(1).values.pow(2).sum()
    return C.cpu().numpy().astype(np.float32), float(d2)


GPU_FIX = ("on GPU nodes install FAISS with GPU support in place of faiss-cpu (both provide the 'faiss' module): "
           "pip uninstall -y faiss-cpu && pip install faiss-gpu-cu12 (deploy/install-gpu.sh, docs/cluster.md)")


def resolve_gpu(use_gpu: bool | None) -> bool:
    """Whether FAISS runs on a GPU: None = when it can; True on a FAISS without GPU support warns once
    (naming the fix) and runs on the CPU, which gives the same results, more slowly."""
    if use_gpu is None:
        return gpu_available()
    if use_gpu and not gpu_available():
        import warnings

        warnings.warn("FAISS has no GPU support here (faiss-cpu is installed, or shadows faiss-gpu); k-means "
                      f"and assignment run on the CPU. Fix: {GPU_FIX}", RuntimeWarning, stacklevel=3)
        return False
    return bool(use_gpu)


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
    use_gpu = resolve_gpu(use_gpu)
    best, best_obj = None, np.inf
    for r in range(max(1, nredo)):
        init = kmeanspp_init(x, k, rng)
        if faiss is None:
            c, obj = _torch_lloyd(x, init, niter)
            if obj < best_obj:
                best, best_obj = c, obj
            continue
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
        self.index = None
        if faiss is None:
            self._protos = p
            return
        index = faiss.IndexFlatL2(self.d)
        if resolve_gpu(use_gpu):
            index = faiss.index_cpu_to_all_gpus(index)
        index.add(p)
        self.index = index

    def search(self, x, n: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(labels, squared distances) of the ``n`` nearest prototypes; shapes (N,) when n == 1."""
        if self.index is None:
            import torch

            dev = _torch_device()
            d2 = torch.cdist(torch.from_numpy(_as_f32(x)).to(dev), torch.from_numpy(self._protos).to(dev)).pow(2)
            dist, lab = (t.cpu().numpy() for t in torch.topk(d2, n, dim=1, largest=False))
            dist = dist.astype(np.float32)
        else:
            dist, lab = self.index.search(_as_f32(x), n)
        if n == 1:
            return lab[:, 0].astype(np.int64), dist[:, 0]
        return lab.astype(np.int64), dist
