"""Estimating the number of clusters K without labels, in one fixed representation.

Silhouette, Davies-Bouldin and a GMM's BIC score one partition; in a learned embedding they keep
rewarding more clusters (tune/digits-k.yaml picked the largest K it was offered). The criteria
here estimate K itself, each on the same rows of the same representation ``Z`` for every K:

* **stability** (Ben-Hur et al. 2002; Lange et al. 2004): split the rows into two random halves,
  fit k-means on each (own seeds), label one half with its own centroids and with the other
  half's, and measure the agreement (ARI). Raw stability is biased towards small K (two clusters
  replicate on almost anything), so it is reported beside the same statistic on structureless
  reference data of the same shape, as in Clest (Dudoit & Fridlyand 2002): the **excess
  stability** ``ARI(data) - ARI(reference)`` peaks where the data hold more structure than
  noise would. **Prediction strength** (Tibshirani & Walther 2005) comes from the same fits.
* **gap statistic** (Tibshirani, Walther & Hastie 2001): ``E*[log W_k] - log W_k`` with the
  PCA-aligned uniform reference (their method b) and the 1-standard-error rule.
* **Dirichlet-process mixture** (``models/dp_mixture.fit_dpgmm``): the components that keep weight,
  merged into clusters by Hennig's DEMP (``dp_mixture.demp_merge``), since one non-Gaussian cluster
  takes several Gaussian components.

``combine`` turns the curves into one K; the rule and its reasons are in docs/choosing-k.md.
Every random step draws from ``numpy.random.default_rng((seed, k, replicate, ...))``, so results
do not depend on the order in which K values run (locally or as Ray tasks).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from .errors import DataError, SpecError

CRITERIA = ("stability", "prediction_strength", "gap", "dpmix")
PS_THRESHOLD = 0.8          # Tibshirani & Walther's suggested cut-off for prediction strength
REPLICATES = 10             # half-splits per K, and uniform reference data sets
# k-means restarts (best inertia) for each half-split fit. With 2, part of the measured instability
# was k-means' own local optima, not the data's: on MNIST's embedding 4/9 and 3/5/8 split differently
# from run to run and K = 10 scored 0.81 (chosen 8); with 10 it scores 0.90 (chosen 11), while the
# generated mixtures keep their answers (docs/benchmarks.md, "Choosing K").
RESTARTS = 10


# ------------------------------------------------------------------------------------------ K ranges
def parse_k_range(text: str | list | tuple, where: str = "--k") -> list[int]:
    """``"5..30"``, ``"10..80:5"`` (step), ``"4,6,8,10"`` or a list → sorted distinct Ks ≥ 2."""
    if isinstance(text, (list, tuple)):
        ks = list(text)
    else:
        s = str(text).replace(" ", "")
        m = re.fullmatch(r"(-?\d+)\.\.(-?\d+)(?::(\d+))?", s)
        if m:
            lo, hi, step = int(m.group(1)), int(m.group(2)), int(m.group(3) or 1)
            if hi < lo:
                raise SpecError(f"K range '{text}' runs backwards ({lo} > {hi})", where,
                                f"write the smaller end first, e.g. {hi}..{lo}")
            if step < 1:
                raise SpecError(f"K range '{text}' has step {step}", where, "use a step of 1 or more, e.g. 10..80:5")
            ks = list(range(lo, hi + 1, step))
        elif re.fullmatch(r"-?\d+(,-?\d+)*", s):
            ks = [int(v) for v in s.split(",")]
        else:
            raise SpecError(f"cannot read K range '{text}'", where,
                            "write a range LO..HI (e.g. 5..30), with a step LO..HI:STEP, or a list 4,6,8")
    if not all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) for k in ks):
        raise SpecError(f"K values {ks!r} are not all integers", where, "give whole numbers, e.g. 5..30")
    ks = sorted({int(k) for k in ks})
    if len(ks) < 3:
        raise SpecError(f"K range '{text}' has {len(ks)} value(s); choosing K needs at least 3", where,
                        "search a range around your guess, e.g. 5..30")
    if ks[0] < 2:
        raise SpecError(f"K range '{text}' starts at {ks[0]}", where,
                        "start at 2 or more (the criteria compare partitions into at least 2 clusters)")
    return ks


def check_ks(ks: list[int], n_rows: int, where: str = "--k") -> None:
    """Each half of the rows must hold several rows per cluster at the largest K."""
    need = 2 * 5 * max(ks)
    if n_rows < need:
        raise DataError(f"K up to {max(ks)} needs at least {need} rows (two halves with 5 rows per cluster), "
                        f"the data have {n_rows}", where,
                        f"search K up to {max(2, n_rows // 10)} at most, or pass more rows")


# ------------------------------------------------------------------------------------------ helpers
def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(v) for v in key])


def _fit(x: np.ndarray, k: int, seed: int, nredo: int = 1) -> tuple[np.ndarray, float]:
    from .faiss_ops import kmeans

    return kmeans(x, k, seed=seed, niter=30, nredo=nredo)


def _assign(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    from .faiss_ops import NearestPrototype

    return NearestPrototype(centroids, use_gpu=False).search(x)[0]


def reference_data(Z: np.ndarray, seed: int) -> np.ndarray:
    """Uniform data in the box of Z's principal axes, rotated back (Tibshirani et al.'s method b)."""
    rng = _rng(seed, 7919)
    mu = Z.mean(0)
    _, _, vt = np.linalg.svd(Z - mu, full_matrices=False)
    p = (Z - mu) @ vt.T
    u = rng.uniform(p.min(0), p.max(0), size=p.shape)
    return (u @ vt + mu).astype(np.float32)


def prediction_strength(test_own: np.ndarray, test_from_train: np.ndarray, k: int) -> float:
    """min over test clusters of the fraction of their row pairs the training centroids keep together."""
    from .metrics import contingency

    m = contingency(test_own, test_from_train, n_pred=k, n_true=k).astype(np.float64)
    n = m.sum(1)
    ok = n >= 2
    if not ok.any():
        return 0.0
    return float(((m * (m - 1)).sum(1)[ok] / (n[ok] * (n[ok] - 1))).min())


def split_agreement(x: np.ndarray, k: int, seed: int, rep: int, restarts: int = RESTARTS) -> tuple[float, float]:
    """(ARI, prediction strength) of one random half-split, both directions averaged; each half's
    k-means is the best of ``restarts`` k-means++ runs."""
    from sklearn.metrics import adjusted_rand_score

    idx = _rng(seed, k, rep, 1).permutation(len(x))
    a, b = x[idx[: len(x) // 2]], x[idx[len(x) // 2:]]
    ca, _ = _fit(a, k, seed * 100_003 + k * 101 + 2 * rep, nredo=restarts)
    cb, _ = _fit(b, k, seed * 100_003 + k * 101 + 2 * rep + 1, nredo=restarts)
    aris, pss = [], []
    for test, own, other in ((b, cb, ca), (a, ca, cb)):
        lo, lt = _assign(test, own), _assign(test, other)
        aris.append(adjusted_rand_score(lo, lt))
        pss.append(prediction_strength(lo, lt, k))
    return float(np.mean(aris)), float(np.mean(pss))


# ------------------------------------------------------------------------------------------ per K
def criteria_at_k(Z: np.ndarray, refs: list[np.ndarray], k: int, seed: int, replicates: int,
                  restarts: int = RESTARTS) -> dict:
    """Everything measured at one K (one Ray task): stability on data and references, gap terms."""
    stab = [split_agreement(Z, k, seed, r, restarts) for r in range(replicates)]
    ref_stab = [split_agreement(ref, k, seed + 1, r, restarts) for r, ref in enumerate(refs)]
    _, w = _fit(Z, k, seed * 100_003 + k, nredo=3)
    ref_logw = [math.log(max(_fit(ref, k, seed * 100_003 + k + 7 * (b + 1), nredo=1)[1], 1e-300))
                for b, ref in enumerate(refs)]
    ari = np.array([s[0] for s in stab])
    ref_ari = np.array([s[0] for s in ref_stab])
    return {"k": k, "stability": float(ari.mean()), "stability_sd": float(ari.std()),
            "ref_stability": float(ref_ari.mean()),
            "prediction_strength": float(np.mean([s[1] for s in stab])),
            "log_w": math.log(max(w, 1e-300)), "gap": float(np.mean(ref_logw) - math.log(max(w, 1e-300))),
            "gap_sd": float(np.std(ref_logw) * math.sqrt(1 + 1 / len(ref_logw)))}


def dp_k_max(ks) -> int:
    """The DP mixture's truncation for a search over ``ks``: room above the largest K searched."""
    return max(ks) + max(5, max(ks) // 4)


def standardise(X: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Each column to zero mean and unit variance (constant columns left at 0), as ``dtype``."""
    return ((X - X.mean(0)) / np.maximum(X.std(0), 1e-12)).astype(dtype)


def dp_fit(Z: np.ndarray, k_max: int, seed: int, cluster_scale: float | None = None,
           dof_prior: float | None = None):
    """(fit, standardised Z): a truncated DP Gaussian mixture (diagonal; scikit-learn's priors unless
    ``cluster_scale`` / ``dof_prior`` set the covariance prior, see ``DPMixture``) on standardised Z."""
    from .models.dp_mixture import fit_dpgmm

    zs = standardise(Z, np.float64)
    return fit_dpgmm(zs, k_max, seed=seed, max_iter=200, init_sample=len(zs), cluster_scale=cluster_scale,
                     dof_prior=dof_prior), zs


def dp_count(Z: np.ndarray, k_max: int, seed: int, cluster_scale: float | None = None,
             dof_prior: float | None = None, demp_cutoff: float | None = None) -> tuple[int, int]:
    """(components, clusters) of :func:`dp_fit`: the components with weight > 1 %, and the clusters left
    when those are merged by Hennig's DEMP (``dp_mixture.demp_merge``, at ``demp_cutoff`` or Hennig's
    0.025; a non-Gaussian cluster takes several components)."""
    from .models.dp_mixture import DEMP_CUTOFF

    fit, zs = dp_fit(Z, k_max, seed, cluster_scale, dof_prior)
    return int(fit.n_active), fit.merged_count(zs, DEMP_CUTOFF if demp_cutoff is None else demp_cutoff)


# ------------------------------------------------------------------------------------------ choices
def gap_choice(rows: list[dict]) -> int:
    """Tibshirani's rule: the smallest K with Gap(K) ≥ Gap(K') − s(K'), K' the next K searched."""
    for r, nxt in zip(rows, rows[1:]):
        if r["gap"] >= nxt["gap"] - nxt["gap_sd"]:
            return r["k"]
    return rows[-1]["k"]


def ps_choice(rows: list[dict]) -> int:
    """Tibshirani & Walther: the largest K whose prediction strength is at least 0.8 (else the best)."""
    ok = [r["k"] for r in rows if r["prediction_strength"] >= PS_THRESHOLD]
    return max(ok) if ok else max(rows, key=lambda r: r["prediction_strength"])["k"]


@dataclass
class KSelection:
    ks: list[int]
    table: list[dict]                    # one row per K: every curve
    choices: dict[str, int]              # criterion → its K
    chosen: int                          # the combined rule's K
    reason: str
    at_edge: bool
    warnings: list[str] = field(default_factory=list)
    rows: int = 0
    dim: int = 0
    seconds: float = 0.0
    replicates: int = REPLICATES
    restarts: int = RESTARTS
    dp_components: int | None = None     # the DP mixture's components before DEMP merging (not a vote)

    def as_dict(self) -> dict:
        return {"ks": self.ks, "chosen": self.chosen, "reason": self.reason, "choices": self.choices,
                "at_edge": self.at_edge, "warnings": self.warnings, "rows": self.rows, "dim": self.dim,
                "seconds": self.seconds, "replicates": self.replicates, "restarts": self.restarts,
                "dp_components": self.dp_components, "table": self.table}


def edge_warning(chosen: int, ks: list[int], what: str = "the chosen K") -> str | None:
    if chosen == ks[0] and ks[0] > 2:
        return (f"{what} ({chosen}) is the smallest K searched: the truth may be smaller; widen the range "
                f"downwards (e.g. to {max(2, ks[0] // 2)}..{ks[-1]})")
    if chosen == ks[-1]:
        return (f"{what} ({chosen}) is the largest K searched: the truth may be larger; widen the range "
                f"upwards (e.g. to {ks[0]}..{2 * ks[-1]})")
    return None


# ------------------------------------------------------------------------------------------ driver
def prepare(Z, sample: int, seed: int) -> np.ndarray:
    """A seeded sample of ``sample`` rows of Z as float32 (all rows when there are fewer)."""
    Z = np.asarray(Z, dtype=np.float32)
    if Z.ndim != 2 or not len(Z):
        raise DataError(f"the representation has shape {Z.shape}", "choose-k representation",
                        "pass a non-empty (rows, features) array")
    if not np.isfinite(Z).all():
        raise DataError("the representation holds NaN or infinite values", "choose-k representation",
                        "impute or drop those rows before choosing K")
    if len(Z) > sample:
        Z = Z[np.sort(_rng(seed, 3).choice(len(Z), sample, replace=False))]
    return np.ascontiguousarray(Z)


def curves(Z, ks, seed: int = 0, replicates: int = REPLICATES, sample: int = 10_000, dp: bool = True,
           use_ray: bool = False, restarts: int = RESTARTS) -> tuple[list[dict], tuple[int, int] | None, np.ndarray]:
    """(per-K rows, the DP mixture's (components, merged clusters), the rows used). With ``use_ray``
    each K (and the DP fit) is a Ray task on one CPU; the results are identical to the local loop."""
    Z = prepare(Z, sample, seed)
    check_ks(ks, len(Z))
    refs = [reference_data(Z, seed * 1000 + b) for b in range(replicates)]
    k_max = dp_k_max(ks)
    if use_ray:
        import ray

        @ray.remote(num_cpus=1)
        def _task(fn, *args):
            import faiss

            faiss.omp_set_num_threads(1)
            return fn(*args)

        zr, rr = ray.put(Z), ray.put(refs)
        futs = [_task.remote(criteria_at_k, zr, rr, k, seed, replicates, restarts) for k in ks]
        dpf = _task.remote(dp_count, zr, k_max, seed) if dp else None
        rows = ray.get(futs)
        n_dp = ray.get(dpf) if dp else None
    else:
        rows = [criteria_at_k(Z, refs, k, seed, replicates, restarts) for k in ks]
        n_dp = dp_count(Z, k_max, seed) if dp else None
    smooth_reference(rows)
    return rows, n_dp, Z


def smooth_reference(rows: list[dict]) -> None:
    """Excess stability against a least-squares line in log K through the reference's stability.
    Uniform data hold no stable partition, so their split-to-split ARI at any one K is noise (it
    swung by 0.3 between neighbouring K); its trend over K is the chance level to subtract."""
    lk = np.log([r["k"] for r in rows])
    ref = np.array([r["ref_stability"] for r in rows])
    fit = np.polyval(np.polyfit(lk, ref, 1), lk) if len(rows) >= 3 else ref
    for r, f in zip(rows, fit):
        r["ref_fit"] = float(f)
        r["excess_stability"] = r["stability"] - float(f)


# ------------------------------------------------------------------------------------------ the rule
VOTERS = ("stability", "gap", "dpmix")


def tolerance(k: int) -> int:
    """How far two estimates of K may differ and still agree: ±1, ±5 % of K for large K."""
    return max(1, round(0.05 * k))


def combine(rows: list[dict], choices: dict[str, int]) -> tuple[int, str]:
    """The documented rule (docs/choosing-k.md): every K searched gets one vote from each of the
    estimates of ``VOTERS`` lying within ``tolerance(K)`` of it; the K with the most votes wins;
    among equals, the one whose voters agree most closely (smallest spread of their estimates), then
    the one nearest their median, then the one whose partition replicates best beyond chance
    (excess stability)."""
    by_k = {r["k"]: r for r in rows}
    votes = {k: [c for c in VOTERS if c in choices and abs(choices[c] - k) <= tolerance(k)] for k in by_k}
    top = max(len(v) for v in votes.values())
    tied = [k for k in by_k if len(votes[k]) == top]
    est = {k: [choices[c] for c in votes[k]] or [k] for k in tied}
    best = min(tied, key=lambda k: (max(est[k]) - min(est[k]), abs(k - float(np.median(est[k]))),
                                    -by_k[k]["excess_stability"], k))
    if top == 0:
        return best, "no two criteria agree and none lies in the range: the most stable K beyond chance"
    agree = ", ".join(f"{c} {choices[c]}" for c in votes[best])
    how = "the only K" if len(tied) == 1 else f"of {len(tied)} K with as many votes, the closest agreement"
    return best, f"{top} of {len(VOTERS)} criteria agree within ±{tolerance(best)} ({agree}); {how}"


def select_k(Z, ks, seed: int = 0, replicates: int = REPLICATES, sample: int = 10_000, dp: bool = True,
             use_ray: bool = False, restarts: int = RESTARTS) -> KSelection:
    """Every criterion's curve over ``ks`` on (a seeded sample of) ``Z``, each criterion's K, the
    combined K, and a warning when that K is at an edge of the range."""
    import time

    import faiss

    t0 = time.time()
    ks = sorted(ks)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # many small fits: OpenMP threads only spin against each other
    try:
        rows, n_dp, Zs = curves(Z, ks, seed, replicates, sample, dp, use_ray, restarts)
    finally:
        faiss.omp_set_num_threads(threads)
    return decide(rows, n_dp, rows_used=len(Zs), dim=int(Zs.shape[1]), seconds=round(time.time() - t0, 2),
                  replicates=replicates, restarts=restarts)


def decide(rows: list[dict], n_dp: tuple[int, int] | None, rows_used: int = 0, dim: int = 0, seconds: float = 0.0,
           replicates: int = REPLICATES, restarts: int = RESTARTS) -> KSelection:
    """Each criterion's K from the per-K ``rows`` (and the DP mixture's (components, clusters)), the
    rule's K and the warnings. Separate from the curves so that saved curves can be re-decided."""
    ks = [r["k"] for r in rows]
    choices = {"stability": max(rows, key=lambda r: (r["excess_stability"], -r["k"]))["k"],
               "gap": gap_choice(rows), "prediction_strength": ps_choice(rows)}
    if n_dp is not None:
        choices["dpmix"] = n_dp[1]
    chosen, reason = combine(rows, choices)
    warnings = [w for w in [edge_warning(chosen, ks)] if w]
    if n_dp is not None and n_dp[1] > ks[-1]:
        warnings.append(f"the Dirichlet-process mixture finds {n_dp[1]} clusters ({n_dp[0]} components), "
                        "more than the largest K searched")
    return KSelection(ks, rows, choices, chosen, reason, bool(warnings and chosen in (ks[0], ks[-1])), warnings,
                      rows=rows_used, dim=dim, seconds=seconds, replicates=replicates, restarts=restarts,
                      dp_components=None if n_dp is None else n_dp[0])
