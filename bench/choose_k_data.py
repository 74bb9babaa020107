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

from distclust.select_k import standardise  # noqa: E402  (one definition; the bench scripts import it from here)


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


def inprocess_ae_embedding(name: str, npz: Path, job: str, work: Path, epochs: int, seed: int = 0,
                           batch_size: int = 256, train_rows: int = 10_000, sets: tuple[str, ...] = ()):
    """The pretraining stage of ``job`` (an ae-kmeans spec: same model code and stage loop as the Ray
    Train worker, bench/dec_mnist_inprocess.py) in this one process, then every row embedded.
    For MNIST-scale data on a shared 2-core machine, where Ray's niced workers got ~12 % of a core.
    Trained on a seeded sample of ``train_rows`` rows, then all rows embedded; cached in ``work``."""
    import copy
    import time

    import torch

    from dec_mnist_inprocess import make_ctx, run_stages
    from distclust.engine.worker import seed_everything
    from distclust.models import Normalizer, get_model_class
    from distclust.spec import load_spec

    cache = work / f"{name}-ae{epochs}-{train_rows}-{'-'.join(sets).replace('/', '_')}-z.npy"
    d = np.load(npz)
    y = d["y"].astype(np.int64)
    if cache.exists():
        return np.load(cache), y, None
    X = torch.from_numpy(d["X"].reshape(len(y), -1).astype(np.float32))
    spec = load_spec(ROOT / "jobs" / job, [f"model.pretrain_epochs={epochs}", f"train.seed={seed}", *sets])
    pick = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(len(y), min(train_rows, len(y)), replace=False)))
    seed_everything(seed)
    norm = Normalizer(X.shape[1])
    norm.shift.fill_(float(X.min()))
    norm.scale.fill_(float(X.max() - X.min()))   # data.normalize: global-minmax
    model = get_model_class("ae-kmeans")(X.shape[1], spec.model, copy.deepcopy(norm))
    ctx = make_ctx(model, X[pick], torch.from_numpy(y)[pick], torch.device("cpu"), seed, batch_size)
    t = time.time()
    run_stages(model, [s for s in model.stages() if s.name == "pretrain"], ctx,
               lambda m: print(name, {k: m[k] for k in ("epoch", "loss", "time_s") if k in m}, flush=True))
    train_s = time.time() - t
    model.eval()
    with torch.no_grad():
        Z = torch.cat([model.embed(X[s:s + 8192]) for s in range(0, len(X), 8192)]).numpy()
    np.save(cache, Z)
    return Z, y, train_s
