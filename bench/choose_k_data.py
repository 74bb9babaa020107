"""The data sets of bench/choose_k.py, each as (representation Z, true labels, what Z is).

Generated sets are seeded; real ones come from DISTCLUST_DATASETS (bench/common.py). Image sets are
represented by a distclust autoencoder's embedding (trained once by ``distclust train``, reused
for every K), the customer table by standardised numbers + one-hot categories.
"""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np

from common import ROOT, dataset


def gaussian_mixture(k: int, seed: int, n_per: int = 200, latent: int = 8, dim: int = 32, sep: float = 6.0):
    """k Gaussian clusters in an 8-d latent (unit-ish scales, centres at least ``sep`` apart,
    Dirichlet(5) weights) through a fixed random 2-layer tanh map into ``dim`` dims plus noise.
    ``sep`` 6 = well separated; 3.5 = neighbouring clusters nearly touch."""
    rng = np.random.default_rng(seed)
    half = 2.2 * sep * k ** (1 / latent)
    centers: list[np.ndarray] = []
    while len(centers) < k:  # rejection sampling of centres at least sep apart
        c = rng.uniform(-half, half, latent)
        if all(np.linalg.norm(c - o) >= sep for o in centers):
            centers.append(c)
    C = np.array(centers)
    y = rng.choice(k, n_per * k, p=rng.dirichlet(np.full(k, 5.0)))
    z = C[y] + rng.normal(size=(len(y), latent)) * rng.uniform(0.5, 1.0, (k, latent))[y]
    W1 = rng.normal(0, 1 / math.sqrt(latent), (latent, 64))
    W2 = rng.normal(0, 1 / math.sqrt(64), (64, dim))
    X = np.tanh(z / z.std(0) @ W1 + rng.normal(0, 0.1, 64)) @ W2 + rng.normal(0, 0.02, (len(y), dim))
    return X.astype(np.float32), y.astype(np.int64)


def standardise(X: np.ndarray) -> np.ndarray:
    return ((X - X.mean(0)) / np.maximum(X.std(0), 1e-12)).astype(np.float32)


def customers(work: Path, rows: int = 20000):
    """make_customers.py's table (6 segments, seed 0): standardised numbers (nulls → median plus a
    missing flag) and one-hot categories; the id, signup date and segment are left out."""
    import pandas as pd

    tool = Path(dataset("digits.npz")).parent.parent / "tools" / "make_customers.py"
    out = work / f"customers_{rows}.parquet"
    if not out.exists():
        subprocess.run([sys.executable, str(tool), str(out), "--rows", str(rows), "--segments", "6", "--seed", "0"],
                       check=True)
    d = pd.read_parquet(out)
    y = d.pop("segment").to_numpy()
    num = d[["age", "income", "visits_per_month", "avg_basket", "days_since_purchase", "tenure_months"]]
    flags = num.isna().astype(np.float32).loc[:, num.isna().any()].add_suffix("_missing")
    num = standardise(num.fillna(num.median()).to_numpy(np.float64))
    cats = pd.get_dummies(d[["channel", "plan", "country", "device", "is_subscriber"]].astype(str), dtype=np.float32)
    return np.hstack([num, flags.to_numpy(), cats.to_numpy()]).astype(np.float32), y


def ae_embedding(name: str, npz: Path, job: str, work: Path, sets: list[str]):
    """Train ``job`` (an ae-kmeans spec) once on ``npz`` with distclust (Ray Train) unless its model
    is already in ``work``, then embed every row with the artifact's ``transform``."""
    import distclust

    run = work / f"{name}-ae"
    if not (run / "model").exists():
        subprocess.run([sys.executable, "-m", "distclust", "train", str(ROOT / "jobs" / job), "--data", str(npz),
                        "--out", str(run), "--overwrite", "--set", "train.quiet=true",
                        *[a for s in sets for a in ("--set", s)]], check=True)
    d = np.load(npz)
    return distclust.load(run / "model").transform(d["X"].astype(np.float32)), d["y"].astype(np.int64)
