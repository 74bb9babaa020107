"""Does the DP mixture find K? Synthetic mixtures with known K ∈ {5, 20, 50}, nonlinearly embedded.

    python bench/dpgmm_synthetic.py [--ks 5,20,50] [--rows-per-cluster 200] [--ae-epochs 15] [--skip-ae]

Per K: a Gaussian mixture in an 8-d latent space (centres ≥ 6σ apart, random diagonal scales,
Dirichlet(5) weights), mapped to 100 dimensions by a fixed random 2-layer tanh MLP plus noise.
Two fits, K_max = max(20, 2K), weight threshold 1/(4K):

* ``true_latent``: DP mixture on the generating 8-d latent (the ceiling: K is identifiable);
* ``ae_latent``: an ae-kmeans autoencoder trained by distclust (Ray, 2 workers) on the 100-d data,
  then the post-hoc DP mixture on its 8-d embeddings (``distclust.dpgmm_posthoc.fit_dpgmm_artifact``,
  data streamed through ``FittedModel.transform``).

K is "recovered" when |K̂ − K| ≤ 10 % of K (rounded up to at least 1). Writes
bench/results/dpgmm_synthetic.json.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, save  # noqa: E402

import distclust  # noqa: E402,F401
from distclust import metrics as M  # noqa: E402
from distclust.dpgmm_posthoc import fit_dpgmm_artifact
from distclust.models.dp_mixture import fit_dpgmm  # noqa: E402


def make(k: int, n_per: int, seed: int, latent: int = 8, dim: int = 100):
    rng = np.random.default_rng(seed)
    centers = []
    while len(centers) < k:  # rejection sampling: centres at least 6 apart (unit-ish scales)
        c = rng.uniform(-4 * k ** (1 / latent) * 2, 4 * k ** (1 / latent) * 2, latent)
        if all(np.linalg.norm(c - o) >= 6.0 for o in centers):
            centers.append(c)
    centers = np.array(centers)
    w = rng.dirichlet(np.full(k, 5.0))
    n = n_per * k
    y = rng.choice(k, n, p=w)
    scales = rng.uniform(0.5, 1.0, (k, latent))
    z = centers[y] + rng.normal(size=(n, latent)) * scales[y]
    W1 = rng.normal(0, 1 / math.sqrt(latent), (latent, 64))
    W2 = rng.normal(0, 1 / math.sqrt(64), (64, dim))
    zs = z / z.std(0)
    X = np.tanh(zs @ W1 + rng.normal(0, 0.1, 64)) @ W2 + rng.normal(0, 0.05, (n, dim))
    return z.astype(np.float32), X.astype(np.float32), y.astype(np.int64)


def report(res, z, y, k):
    pred = res.predict(z)
    m = M.contingency(pred, y, n_pred=res.mixture.k_max, n_true=k)
    tol = max(1, math.ceil(0.1 * k))
    return {"k_found": res.n_active, "recovered": abs(res.n_active - k) <= tol, "tolerance": tol,
            "n_iter": res.n_iter, "acc": M.acc_from_contingency(m), "acc_many_to_one": M.many_to_one_acc(m),
            "nmi": M.nmi_from_contingency(m)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ks", default="5,20,50")
    ap.add_argument("--rows-per-cluster", type=int, default=200)
    ap.add_argument("--ae-epochs", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-ae", action="store_true")
    ap.add_argument("--machine", default="2-core CPU, shared")
    ap.add_argument("--set", action="append", default=[], help="extra spec overrides, e.g. scaling.cpus_per_worker=4")
    ap.add_argument("--work", default=str(ROOT / "bench" / "_work" / "dpgmm_synth"))
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for k in map(int, a.ks.split(",")):
        z, X, y = make(k, a.rows_per_cluster, a.seed + k)
        k_max, thr = max(20, 2 * k), 1.0 / (4 * k)
        row = {"K": k, "rows": len(X), "k_max": k_max, "threshold": thr}
        t = time.time()
        row["true_latent"] = report(fit_dpgmm(z, k_max, "diag", seed=a.seed, threshold=thr, max_iter=500), z, y, k)
        row["true_latent"]["seconds"] = time.time() - t
        if not a.skip_ae:
            from distclust.engine.trainer import run_training
            from distclust.spec import load_spec

            src = work / f"k{k}.npz"
            np.savez(src, X=X, y=y)
            spec = load_spec({"name": f"synth-k{k}", "data": {"normalize": "standard", "shards": 4},
                              "model": {"name": "ae-kmeans", "n_clusters": k, "latent_dim": 8, "hidden": [256, 128],
                                        "pretrain_epochs": a.ae_epochs, "kmeans_nredo": 2},
                              "train": {"batch_size": 128, "seed": a.seed, "quiet": True},
                              "scaling": {"num_workers": 2, "cpus_per_worker": 1}}, a.set)
            t = time.time()
            r = run_training(spec, work / f"run_k{k}", data=str(src), overwrite=True)
            t_train = time.time() - t
            t = time.time()
            res, ze, ye = fit_dpgmm_artifact(r.model_dir, src, k_max, work_dir=work / f"post_k{k}", seed=a.seed,
                                             threshold=thr, max_iter=500)
            row["ae_latent"] = {**report(res, np.asarray(ze), y, k), "train_s": t_train, "dp_s": time.time() - t,
                                "ae_kmeans_acc": r.metrics.get("acc")}
        print(row, flush=True)
        rows.append(row)
    cmd = "python bench/dpgmm_synthetic.py --ks " + a.ks + (" --skip-ae" if a.skip_ae else f" --ae-epochs {a.ae_epochs}")
    save("dpgmm_synthetic", {"command": cmd, "machine": a.machine, "seed": a.seed, "results": rows})


if __name__ == "__main__":
    main()
