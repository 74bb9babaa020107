"""Label-free K selection on generated data: 8 clusters nonlinearly embedded in 32-d, K swept 4..16.

    python bench/tune_k_synthetic.py [--true-k 8] [--metric silhouette]

A real `distclust tune` sweep (Ray Tune, each trial a Ray Train run of ae-kmeans); the choice
uses only the label-free metric, ACC is reported beside. Writes bench/results/tune_k_synthetic.json.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, reset_work, save  # noqa: E402

import distclust  # noqa: E402,F401
from distclust.tuning import run_sweep  # noqa: E402


def mixture(n: int, k: int, d: int, seed: int):
    """k Gaussian clusters (std 0.4) whose 3-d centres lie on a radius-4 sphere at least 3 apart
    (so that k is well defined), through a random 2-layer tanh map into d dims."""
    rng = np.random.default_rng(seed)
    centers = np.zeros((0, 3))
    while len(centers) < k:  # rejection sampling of well-separated centres
        c = rng.normal(size=3)
        c = 4 * c / np.linalg.norm(c)
        if len(centers) == 0 or np.linalg.norm(centers - c, axis=1).min() >= 3.0:
            centers = np.vstack([centers, c])
    y = rng.integers(0, k, n)
    z = centers[y] + rng.normal(0, 0.4, (n, 3))
    W1, W2 = rng.normal(size=(3, 64)) / 2, rng.normal(size=(64, d)) / 4
    return (np.tanh(z @ W1) @ W2 + 0.01 * rng.normal(size=(n, d))).astype(np.float32), y


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--true-k", type=int, default=8)
    ap.add_argument("--metric", default="silhouette")
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--work", default=str(ROOT / "bench" / "_work" / "tune_k"))
    a = ap.parse_args()
    work = reset_work(a.work)
    X, y = mixture(a.rows, a.true_k, 32, 0)
    np.savez(work / "mix.npz", X=X, y=y)
    job = {"name": "mix", "data": {"normalize": "standard", "shards": 2},
           "model": {"name": "ae-kmeans", "n_clusters": a.true_k, "latent_dim": 3, "hidden": [64, 64],
                     "pretrain_epochs": 15, "kmeans_nredo": 5},
           "train": {"batch_size": 128, "seed": 0, "quiet": True},
           "scaling": {"num_workers": 1, "cpus_per_worker": 1}}
    (work / "job.yaml").write_text(yaml.safe_dump(job))
    sweep = {"name": "k", "base": "job.yaml", "search": {"model.n_clusters": {"grid": list(range(4, 17))}},
             "metric": a.metric, "scheduler": "none", "max_concurrent_trials": 1}
    (work / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    r = run_sweep(work / "sweep.yaml", work / "out", data=str(work / "mix.npz"), progress=False)
    df = r["table"].sort_values("model.n_clusters")
    table = df[["model.n_clusters", a.metric, "davies_bouldin", "bic", "acc", "nmi"]].to_dict("records")
    save("tune_k_synthetic", {"command": f"python bench/tune_k_synthetic.py --true-k {a.true_k} --metric {a.metric}",
                              "true_k": a.true_k, "chosen_k": r["summary"]["best_config"]["model.n_clusters"],
                              "metric": a.metric, "acc_of_chosen": r["summary"].get("best_acc"), "trials": table})


if __name__ == "__main__":
    main()
