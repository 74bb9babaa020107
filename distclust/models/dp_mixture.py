"""Truncated variational Dirichlet-process Gaussian mixture, driven by sufficient statistics.

The model is the one of scikit-learn's ``BayesianGaussianMixture(weight_concentration_prior_type=
"dirichlet_process")`` (Blei & Jordan 2006 stick-breaking, Gaussian-Wishart posterior per
component; same default priors), written so that the M-step needs only the sufficient statistics

    N_k = Σ_n r_nk,   S1_k = Σ_n r_nk z_n,   S2_k = Σ_n r_nk z_n z_nᵀ  (diag: Σ_n r_nk z_n²)

which are sums over rows: each worker computes them on its shard and an all-reduce
(``WorkerContext.global_pass``) gives the exact global statistics, so no process ever needs all
embeddings. One variational iteration = one E-step + statistics pass over the data + one M-step.

Used in three places:

* ``fit_dpgmm(source, k_max)``: fit on an in-memory array or any re-iterable stream of batches
  (``select_k`` counts the components that keep weight);
* ``distclust/dpgmm_posthoc.py`` (``distclust dpgmm MODEL DATA``): post-hoc fit on the embeddings
  of any trained distclust artifact;
* ``models/dpgmm.py``: the prior of a VAE, refitted each epoch from all-reduced statistics with
  damping and pruning.

``DPMixture`` is an ``nn.Module`` whose state lives in float64 buffers, so a model that holds one
carries the mixture in its ``state_dict`` (checkpoints, artifacts).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from ..errors import DataError

COV_TYPES = ("diag", "full")
F64 = torch.float64


def _digamma(x: torch.Tensor) -> torch.Tensor:
    return torch.special.digamma(x)


class DPMixture(nn.Module):
    """Variational posterior of a truncated DP Gaussian mixture with ``k_max`` components."""

    def __init__(self, k_max: int, dim: int, covariance_type: str = "diag", reg_covar: float = 1e-6,
                 weight_concentration: float | None = None, mean_precision_prior: float = 1.0,
                 dof_prior: float | None = None, cluster_scale: float | None = None):
        """``cluster_scale`` (None = scikit-learn's default prior): the prior's within-cluster
        variance as a fraction of the data's variance, held with strength ``dof_prior`` (pseudo-rows).
        The default prior (data covariance / D, strength D) is weak and small, so on a latent whose
        classes are not Gaussian the DP splits every class into pieces; a scale near the expected
        within-class spread (e.g. 0.3) with a strong ``dof_prior`` (e.g. 300) merges them."""
        super().__init__()
        self.cluster_scale = None if cluster_scale is None else float(cluster_scale)
        if covariance_type not in COV_TYPES:
            raise ValueError(f"covariance_type must be one of {COV_TYPES}")
        self.k_max, self.dim, self.covariance_type = int(k_max), int(dim), covariance_type
        self.reg_covar = float(reg_covar)
        K, D = self.k_max, self.dim
        cov_shape = (K, D) if covariance_type == "diag" else (K, D, D)
        # hyper-priors (sklearn defaults; mean / covariance priors set from data statistics)
        self.register_buffer("gamma0", torch.tensor(1.0 / K if weight_concentration is None else weight_concentration,
                                                    dtype=F64))
        self.register_buffer("beta0", torch.tensor(float(mean_precision_prior), dtype=F64))
        self.register_buffer("nu0", torch.tensor(float(D if dof_prior is None else dof_prior), dtype=F64))
        self.register_buffer("m0", torch.zeros(D, dtype=F64))
        self.register_buffer("W0inv", torch.ones(D, dtype=F64) if covariance_type == "diag" else torch.eye(D, dtype=F64))
        # posterior
        self.register_buffer("wc_a", torch.ones(K, dtype=F64))
        self.register_buffer("wc_b", torch.ones(K, dtype=F64))
        self.register_buffer("mean_precision", torch.ones(K, dtype=F64))
        self.register_buffer("means", torch.zeros(K, D, dtype=F64))
        self.register_buffer("dof", torch.full((K,), float(D), dtype=F64))
        self.register_buffer("covariances", torch.ones(cov_shape, dtype=F64) if covariance_type == "diag"
                             else torch.eye(D, dtype=F64).expand(K, D, D).clone())
        # the statistics the posterior was computed from (damping mixes new ones into these)
        self.register_buffer("stat_N", torch.zeros(K, dtype=F64))
        self.register_buffer("stat_S1", torch.zeros(K, D, dtype=F64))
        self.register_buffer("stat_S2", torch.zeros(cov_shape, dtype=F64))
        self.register_buffer("active", torch.ones(K, dtype=torch.bool))   # pruned components are False
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    # -- priors -------------------------------------------------------------------------
    def set_data_prior(self, n: torch.Tensor, s1: torch.Tensor, s2: torch.Tensor) -> None:
        """Mean / covariance priors from global data statistics (sklearn: X.mean, cov or var with ddof=1)."""
        n = n.to(F64).reshape(())
        mean = s1.to(F64) / n
        if self.covariance_type == "diag":
            cov = (s2.to(F64) - n * mean ** 2) / (n - 1).clamp_min(1)
            cov = cov.clamp_min(1e-12)
        else:
            cov = (s2.to(F64) - n * torch.outer(mean, mean)) / (n - 1).clamp_min(1)
        self.m0.copy_(mean)
        # the Wishart's inverse scale: the empty-component covariance is W0inv / nu0
        self.W0inv.copy_(cov if self.cluster_scale is None else cov * self.cluster_scale * self.nu0)

    def moment_stats(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unweighted data statistics (for ``set_data_prior``): sums, so they all-reduce."""
        z = z.to(F64)
        s2 = (z ** 2).sum(0) if self.covariance_type == "diag" else z.T @ z
        return {"n": torch.tensor(float(len(z)), dtype=F64, device=z.device), "s1": z.sum(0), "s2": s2}

    # -- E-step -------------------------------------------------------------------------
    def expected_log_weights(self) -> torch.Tensor:
        a, b = self.wc_a, self.wc_b
        dsum = _digamma(a + b)
        dlb = _digamma(b) - dsum
        out = _digamma(a) - dsum + torch.cat([dlb.new_zeros(1), torch.cumsum(dlb, 0)[:-1]])
        return out.masked_fill(~self.active, -math.inf)

    def weights(self) -> torch.Tensor:
        """Expected mixture weights (as sklearn's ``weights_``), zero on pruned components."""
        a, b = self.wc_a, self.wc_b
        s = a + b
        w = a / s * torch.cat([a.new_ones(1), torch.cumprod(b / s, 0)[:-1]])
        w = w * self.active
        return w / w.sum().clamp_min(1e-300)

    def expected_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """E_q[log N(z | μ_k, Λ_k⁻¹)] for every component: (n, K)."""
        z = z.to(F64)
        D = self.dim
        if self.covariance_type == "diag":
            prec = 1.0 / self.covariances                               # (K, D) = ν W (diag)
            maha = ((z[:, None, :] - self.means[None]) ** 2 * prec[None]).sum(-1)
            logdet_prec = torch.log(prec).sum(1)
        else:
            L = torch.linalg.cholesky(self.covariances)                 # cov = W⁻¹/ν
            diff = (z[:, None, :] - self.means[None]).permute(1, 2, 0)  # (K, D, n)
            sol = torch.linalg.solve_triangular(L, diff, upper=False)
            maha = (sol ** 2).sum(1).T                                  # (n, K)
            logdet_prec = -2 * torch.log(torch.diagonal(L, dim1=1, dim2=2)).sum(1)
        log_gauss = -0.5 * (D * math.log(2 * math.pi) + maha) + 0.5 * logdet_prec[None]
        log_gauss = log_gauss - 0.5 * D * torch.log(self.dof)[None]
        ar = torch.arange(D, dtype=F64, device=z.device)
        log_lambda = D * math.log(2.0) + _digamma(0.5 * (self.dof[:, None] - ar[None])).sum(1)
        return log_gauss + 0.5 * (log_lambda - D / self.mean_precision)[None]

    def log_rho(self, z: torch.Tensor) -> torch.Tensor:
        return self.expected_log_prob(z) + self.expected_log_weights()[None]

    def responsibilities(self, z: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.log_rho(z), dim=1)

    def predict(self, z: torch.Tensor) -> torch.Tensor:
        return self.log_rho(z).argmax(1)

    # -- statistics ---------------------------------------------------------------------
    def stats_from_resp(self, z: torch.Tensor, resp: torch.Tensor) -> dict[str, torch.Tensor]:
        z, resp = z.to(F64), resp.to(F64)
        s2 = resp.T @ (z ** 2) if self.covariance_type == "diag" else torch.einsum("nk,nd,ne->kde", resp, z, z)
        return {"N": resp.sum(0), "S1": resp.T @ z, "S2": s2}

    def stats(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Sufficient statistics of a batch under the current posterior (+ Σ log-normaliser for monitoring)."""
        lr = self.log_rho(z)
        norm = torch.logsumexp(lr, 1, keepdim=True)
        out = self.stats_from_resp(z, torch.exp(lr - norm))
        out["loglik"] = norm.sum()
        return out

    def hard_stats(self, z: torch.Tensor, centers: torch.Tensor) -> dict[str, torch.Tensor]:
        """Statistics of a hard assignment to the nearest of ``centers`` (the k-means initialisation)."""
        z = z.to(F64)
        lab = torch.cdist(z, centers.to(F64)).argmin(1)
        resp = torch.nn.functional.one_hot(lab, self.k_max).to(F64)
        return self.stats_from_resp(z, resp)

    # -- M-step -------------------------------------------------------------------------
    def m_step(self, st: dict[str, torch.Tensor], damping: float = 1.0, prune_below: float = 0.0) -> None:
        """Posterior from statistics; ``damping`` ρ mixes them into the previous ones: (1-ρ)·old + ρ·new.

        The posterior's natural parameters are linear in the statistics, so this is also a convex
        combination of natural parameters. Components whose N_k falls below ``prune_below`` are pruned
        (never used again)."""
        N, S1, S2 = (st[k].to(F64).to(self.stat_N.device) for k in ("N", "S1", "S2"))
        if bool(self.initialised) and damping < 1.0:
            N = (1 - damping) * self.stat_N + damping * N
            S1 = (1 - damping) * self.stat_S1 + damping * S1
            S2 = (1 - damping) * self.stat_S2 + damping * S2
        if prune_below > 0:
            keep = self.active & (N >= prune_below)
            if bool(keep.any()):
                self.active.copy_(keep)
        act = self.active.to(F64)
        N = N * act
        S1, S2 = S1 * act[:, None], S2 * (act[:, None] if S2.dim() == 2 else act[:, None, None])
        self.stat_N.copy_(N)
        self.stat_S1.copy_(S1)
        self.stat_S2.copy_(S2)
        nk = N + 10 * torch.finfo(F64).eps
        xk = S1 / nk[:, None]
        D = self.dim
        # stick-breaking posterior: Beta(1 + N_k, γ + Σ_{j>k} N_j)
        tail = torch.flip(torch.cumsum(torch.flip(nk, [0]), 0), [0])
        self.wc_a.copy_(1.0 + nk)
        self.wc_b.copy_(self.gamma0 + torch.cat([tail[1:], tail.new_zeros(1)]))
        self.mean_precision.copy_(self.beta0 + nk)
        self.means.copy_((self.beta0 * self.m0[None] + nk[:, None] * xk) / self.mean_precision[:, None])
        self.dof.copy_(self.nu0 + nk)
        diff = xk - self.m0[None]
        shrink = nk * self.beta0 / self.mean_precision
        if self.covariance_type == "diag":
            sk = (S2 / nk[:, None] - xk ** 2).clamp_min(0) + self.reg_covar
            cov = self.W0inv[None] + nk[:, None] * sk + shrink[:, None] * diff ** 2
            self.covariances.copy_(cov / self.dof[:, None])
        else:
            sk = S2 / nk[:, None, None] - torch.einsum("kd,ke->kde", xk, xk)
            sk = 0.5 * (sk + sk.transpose(1, 2)) + self.reg_covar * torch.eye(D, dtype=F64, device=sk.device)
            cov = self.W0inv[None] + nk[:, None, None] * sk + shrink[:, None, None] * torch.einsum("kd,ke->kde", diff, diff)
            self.covariances.copy_(cov / self.dof[:, None, None])
        self.initialised.fill_(True)

    # -- summaries ----------------------------------------------------------------------
    def component_variances(self) -> torch.Tensor:
        """(K, D) diagonal of the expected covariance W⁻¹/ν (what a diagonal VAE prior uses)."""
        return self.covariances if self.covariance_type == "diag" else torch.diagonal(self.covariances, dim1=1, dim2=2)

    def n_active(self, threshold: float = 0.01) -> int:
        return int((self.weights() > threshold).sum())


# ------------------------------------------------------------------------------------------ fitting
Source = Callable[[], Iterable[np.ndarray]]


def _as_source(data, batch_rows: int) -> Source:
    if callable(data):
        return data
    arr = data

    def it():
        for s in range(0, len(arr), batch_rows):
            yield np.asarray(arr[s:s + batch_rows])

    return it


def _sum_stats(parts: Iterator[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    acc: dict[str, torch.Tensor] = {}
    for d in parts:
        for k, v in d.items():
            acc[k] = acc[k] + v if k in acc else v.clone()
    return acc


# Hennig (2010), eq. (9): the cut-off he recommends for DEMP (fpc's ``mergenormals`` default)
DEMP_CUTOFF = 0.025


def demp_merge(resp: np.ndarray, cutoff: float = DEMP_CUTOFF) -> np.ndarray:
    """Merge mixture components into clusters by Hennig's DEMP ("directly estimated misclassification
    probabilities", Hennig 2010, *Methods for merging Gaussian mixture components*).

    A DP or Gaussian mixture fits one non-Gaussian cluster with several components; counting
    components then overestimates the clusters (17-36 on learned embeddings). For a pair (i, j) the
    probability that a row from component j is classified to i when only i and j compete is
    estimated from the posteriors, ``sum(resp[:, j] over rows with resp_i > resp_j) / (n pi_j)``;
    the pair with the largest max over both directions is merged (posteriors and weights added) while
    that probability is at least ``cutoff``. ``resp``: (n, K) posteriors. Returns each component's
    cluster index, 0..C-1."""
    T = np.asarray(resp, dtype=np.float64)
    if T.ndim != 2 or T.shape[1] == 0:
        raise DataError(f"responsibilities have shape {T.shape}", "demp_merge", "pass an (n, K) array with K >= 1")
    T = T.copy()
    members = [[k] for k in range(T.shape[1])]
    while T.shape[1] > 1:
        k = T.shape[1]
        pro = np.maximum(T.sum(0), 1e-300)
        mis = np.zeros((k, k))
        step = max(1, (1 << 22) // (k * k))                               # rows per chunk: bounded memory
        for a in range(0, len(T), step):
            c = T[a:a + step]
            mis += np.einsum("nij,nj->ij", c[:, :, None] > c[:, None, :], c)   # row goes to i rather than j
        mis /= pro[None, :]                                               # P(classified i | from j)
        np.fill_diagonal(mis, 0.0)
        sym = np.maximum(mis, mis.T)
        i, j = np.unravel_index(int(np.argmax(sym)), sym.shape)
        if sym[i, j] < cutoff:
            break
        i, j = min(i, j), max(i, j)
        T[:, i] += T[:, j]
        T = np.delete(T, j, axis=1)
        members[i] += members.pop(j)
    out = np.empty(sum(len(m) for m in members), dtype=np.int64)
    for c, m in enumerate(members):
        out[m] = c
    return out


@dataclass
class DPGMMResult:
    mixture: DPMixture
    weights: np.ndarray            # (K_max,) expected weights
    sizes: np.ndarray              # (K_max,) expected counts N_k (soft)
    hard_sizes: np.ndarray         # (K_max,) rows whose argmax is k
    active: list[int]              # components with weight > threshold, largest first
    n_iter: int
    converged: bool
    threshold: float
    loglik_history: list[float] = field(default_factory=list)

    @property
    def n_active(self) -> int:
        return len(self.active)

    def predict(self, z) -> np.ndarray:
        with torch.no_grad():
            return self.mixture.predict(torch.as_tensor(np.asarray(z), dtype=F64)).numpy()

    def predict_proba(self, z) -> np.ndarray:
        with torch.no_grad():
            return self.mixture.responsibilities(torch.as_tensor(np.asarray(z), dtype=F64)).numpy()

    def active_responsibilities(self, z) -> np.ndarray:
        """Posterior probabilities over the active components only (renormalised in log space, so
        rows far from every active component keep a valid distribution)."""
        with torch.no_grad():
            lr = self.mixture.log_rho(torch.as_tensor(np.asarray(z), dtype=F64))[:, self.active]
            return torch.softmax(lr, dim=1).numpy()

    def merged_count(self, z, cutoff: float = DEMP_CUTOFF) -> int:
        """Clusters left after merging the active components by :func:`demp_merge` on rows ``z``."""
        return int(demp_merge(self.active_responsibilities(z), cutoff).max()) + 1 if self.active else 0

    def summary(self) -> dict:
        return {"n_active": self.n_active, "threshold": self.threshold, "n_iter": self.n_iter,
                "converged": self.converged,
                "components": [{"k": int(k), "weight": float(self.weights[k]), "size": int(self.hard_sizes[k]),
                                "soft_size": float(self.sizes[k])} for k in self.active]}


def sample_rows(source: Source, n: int, seed: int) -> np.ndarray:
    """A seeded uniform sample of up to ``n`` rows of a stream (reservoir sampling, one pass)."""
    rng = np.random.default_rng(seed)
    res: np.ndarray | None = None
    seen = 0
    for b in source():
        b = np.asarray(b, dtype=np.float64)
        if res is None:
            res = np.empty((n, b.shape[1]))
        for row in b:  # vectorised enough for the sizes used (init samples)
            if seen < n:
                res[seen] = row
            else:
                j = rng.integers(0, seen + 1)
                if j < n:
                    res[j] = row
            seen += 1
    if res is None or seen == 0:
        raise DataError("no rows to fit the Dirichlet-process mixture on", "dpgmm data", "pass non-empty data")
    return res[:min(seen, n)]


def kmeans_init_centers(sample: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means centres on a sample (sklearn's KMeans, as BayesianGaussianMixture's default init)."""
    from sklearn.cluster import KMeans

    k_eff = min(k, len(sample))
    c = KMeans(n_clusters=k_eff, n_init=1, random_state=seed).fit(sample).cluster_centers_
    if k_eff < k:  # fewer rows than components: repeat centres (the extra ones empty out)
        c = np.concatenate([c, c[np.arange(k - k_eff) % k_eff]])
    return c


def fit_dpgmm(data, k_max: int, covariance_type: str = "diag", weight_concentration: float | None = None,
              max_iter: int = 300, tol: float = 1e-5, seed: int = 0, init_sample: int = 20000,
              reg_covar: float = 1e-6, threshold: float = 0.01, batch_rows: int = 65536,
              tol_weights: float = 1e-4, verbose: bool = False, cluster_scale: float | None = None,
              dof_prior: float | None = None) -> DPGMMResult:
    """Fit a truncated DP mixture on ``data``: an (n, d) array or a callable returning a fresh iterable
    of (b, d) batches each time it is called (so the data need never be in memory at once).

    Initialisation: k-means on a seeded sample of ``init_sample`` rows, then one exact pass of
    hard-assignment statistics. Every later iteration is one exact pass. Converged when the mean
    log-normaliser changes by less than ``tol`` and no component's N_k moves by more than
    ``tol_weights`` × n (slow merges of split clusters change the likelihood very little).
    ``cluster_scale`` / ``dof_prior``: the covariance prior (see ``DPMixture``)."""
    source = _as_source(data, batch_rows)
    if k_max < 1:
        raise DataError(f"k_max is {k_max}", "k_max", "use an upper bound of 1 or more components")
    sample = sample_rows(source, init_sample, seed)
    dim = sample.shape[1]
    if cluster_scale is not None and not cluster_scale > 0:
        raise DataError(f"cluster_scale is {cluster_scale}", "cluster_scale",
                        "use a positive fraction of the data variance such as 0.3, or leave it unset")
    if dof_prior is not None and not dof_prior > dim - 1:
        raise DataError(f"dof_prior is {dof_prior} for {dim}-d data", "dof_prior",
                        f"use more than {dim - 1} pseudo-rows (e.g. 300), or leave it unset")
    mix = DPMixture(k_max, dim, covariance_type, reg_covar, weight_concentration, dof_prior=dof_prior,
                    cluster_scale=cluster_scale)
    torch_batches = lambda: (torch.as_tensor(np.asarray(b), dtype=F64) for b in source())  # noqa: E731
    mix.set_data_prior(**_sum_stats(mix.moment_stats(z) for z in torch_batches()))
    centers = torch.as_tensor(kmeans_init_centers(sample, k_max, seed))
    with torch.no_grad():
        st = _sum_stats(mix.hard_stats(z, centers) for z in torch_batches())
        n_rows = float(st["N"].sum())
        mix.m_step(st)
        hist: list[float] = []
        converged, it = False, 0
        for it in range(1, max_iter + 1):
            st = _sum_stats(mix.stats(z) for z in torch_batches())
            old_n = mix.stat_N.clone()
            mix.m_step(st)
            ll = float(st["loglik"]) / n_rows
            dn = float((mix.stat_N - old_n).abs().max()) / n_rows
            if verbose:
                print(f"[dpgmm] iter {it}  mean log-norm {ll:.5f}  max dN/n {dn:.2e}  active "
                      f"{mix.n_active(threshold)}", flush=True)
            if hist and abs(ll - hist[-1]) < tol and dn < tol_weights:
                hist.append(ll)
                converged = True
                break
            hist.append(ll)
        hard = np.zeros(k_max, dtype=np.int64)
        for z in torch_batches():
            hard += np.bincount(mix.predict(z).numpy(), minlength=k_max)
    w = mix.weights().numpy()
    act = [int(k) for k in np.argsort(-w) if w[k] > threshold]
    return DPGMMResult(mix, w, mix.stat_N.numpy().copy(), hard, act, it, converged, threshold, hist)
