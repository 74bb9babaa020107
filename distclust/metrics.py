"""Clustering metrics from a contingency matrix.

ACC (Hungarian matching), NMI and ARI all depend only on the cluster × class
contingency matrix, which is a sum over rows: workers count their shard and an
all-reduce gives the exact global metrics without gathering labels anywhere.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.special import comb


def contingency(pred: np.ndarray, true: np.ndarray, n_pred: int | None = None,
                n_true: int | None = None) -> np.ndarray:
    pred, true = np.asarray(pred, dtype=np.int64), np.asarray(true, dtype=np.int64)
    n_pred = int(pred.max()) + 1 if n_pred is None else n_pred
    n_true = int(true.max()) + 1 if n_true is None else n_true
    m = np.zeros((n_pred, n_true), dtype=np.int64)
    np.add.at(m, (pred, true), 1)
    return m


def acc_from_contingency(m: np.ndarray) -> float:
    """Best one-to-one cluster→class accuracy (unmatched clusters count as wrong)."""
    r, c = linear_sum_assignment(-m)
    return float(m[r, c].sum() / max(m.sum(), 1))


def many_to_one_acc(m: np.ndarray) -> float:
    """Each cluster votes for its majority class (for K ≠ number of classes)."""
    return float(m.max(1).sum() / max(m.sum(), 1))


def nmi_from_contingency(m: np.ndarray) -> float:
    """NMI with arithmetic normalisation (scikit-learn's default)."""
    n = m.sum()
    if n == 0:
        return 0.0
    pi, pj = m.sum(1) / n, m.sum(0) / n
    nz = m > 0
    pij = m[nz] / n
    mi = float((pij * np.log(pij / np.outer(pi, pj)[nz])).sum())
    h = lambda p: float(-(p[p > 0] * np.log(p[p > 0])).sum())  # noqa: E731
    hu, hv = h(pi), h(pj)
    if hu == 0 and hv == 0:
        return 1.0
    denom = (hu + hv) / 2
    return float(max(mi, 0.0) / denom) if denom > 0 else 0.0


def ari_from_contingency(m: np.ndarray) -> float:
    n = m.sum()
    sum_comb = comb(m, 2).sum()
    a, b = comb(m.sum(1), 2).sum(), comb(m.sum(0), 2).sum()
    total = comb(n, 2)
    expected = a * b / total if total else 0.0
    max_index = (a + b) / 2
    if max_index == expected:
        return 1.0
    return float((sum_comb - expected) / (max_index - expected))


def completeness_from_contingency(m: np.ndarray) -> float:
    """Completeness (Rosenberg & Hirschberg): do all members of a class share one cluster?"""
    n = m.sum()
    if n == 0:
        return 1.0
    pk = m.sum(0) / n  # class marginals
    hc = float(-(pk[pk > 0] * np.log(pk[pk > 0])).sum())
    pi = m.sum(1) / n
    hk = float(-(pi[pi > 0] * np.log(pi[pi > 0])).sum())
    if hc == 0 or hk == 0:
        return 1.0
    nz = m > 0
    pij = m[nz] / n
    mi = float((pij * np.log(pij / np.outer(pi, pk)[nz])).sum())
    return float(mi / hk)


def scores(m: np.ndarray) -> dict[str, float]:
    """acc, nmi, ari (and many-to-one acc) of a contingency matrix."""
    return {"acc": acc_from_contingency(m), "nmi": nmi_from_contingency(m), "ari": ari_from_contingency(m),
            "acc_many_to_one": many_to_one_acc(m)}


def cluster_scores(pred, true) -> dict[str, float]:
    return scores(contingency(pred, true))
