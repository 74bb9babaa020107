"""Time to early-stopping convergence: marginalised GMVAE vs Concrete GMVAE, same networks.

    python bench/gmvae_early_stop.py [--rows 12000] [--k 20] [--patience 3] [--min-delta 0.002]

The seed paper's second headline compares whole training runs under early stopping
(CIFAR-100, K = 20: 47 h marginalised vs < 6 h Concrete). This runs both models through
the spine (``run_training``: Ray Train, sharded Parquet) on the first ``--rows`` MNIST
rows with ``train.early_stop_patience`` / ``early_stop_min_delta`` set, one after the
other in one process, and records for each: epochs until early stopping fired, training
wall time, the per-epoch bound it converged to (the marginalised loss is its exact-in-y
ELBO; Concrete watches its one-sample unweighted ELBO and may only stop once its KL
weight has reached 1), ACC / NMI of argmax q(y|x) on the rows it trained on, and the
marginalised ELBO on held-out rows (MNIST's last 10k) so the two end points compare.

Writes bench/results/gmvae_early_stop.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, dataset, save, training_split  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import distclust  # noqa: E402
from distclust.engine.trainer import run_training  # noqa: E402
from distclust.metrics import cluster_scores  # noqa: E402
from distclust.spec import load_spec  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None)
    ap.add_argument("--rows", type=int, default=12000, help="training rows (MNIST's first ROWS)")
    ap.add_argument("--k", type=int, default=20, help="clusters (the seed's CIFAR-100 run used 20)")
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--min-delta", type=float, default=0.002)
    ap.add_argument("--max-epochs", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", nargs="+", default=["concrete-gmvae", "gmvae"])
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="spec overrides for both")
    ap.add_argument("--work", default=str(ROOT / "bench" / "_work" / "gmvae_early_stop"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    work = Path(a.work)
    X, y = training_split(a.data or dataset("mnist.npz"), a.rows, work)
    Xtest = torch.from_numpy(X[60000:])
    results = {}
    for v in a.variants:
        over = [f"model.epochs={a.max_epochs}", f"model.n_clusters={a.k}", f"train.seed={a.seed}",
                "train.quiet=true", f"train.eval_every={a.max_epochs}", "train.checkpoint_every=10",
                f"train.early_stop_patience={a.patience}", f"train.early_stop_min_delta={a.min_delta}", *a.set]
        spec = load_spec(ROOT / "jobs" / f"mnist-{v}.yaml", over)
        t = time.time()
        res = run_training(spec, work / f"run-{v}", data=str(work / "data"))
        wall = time.time() - t
        fm = distclust.load(res.model_dir)
        train = [h for h in res.history if h.get("stage") == "train"]
        monitor = fm.model.monitor
        pred = fm.predict(X[:a.rows])
        sc = cluster_scores(pred, y[:a.rows])
        fm.model.eval()
        elbo = float(np.mean([fm.model.elbo(Xtest[i:i + 1000], seed=a.seed).mean().item()
                              for i in range(0, len(Xtest), 1000)]))
        results[v] = {
            "epochs_to_stop": len(train), "early_stopped": bool(train[-1].get("early_stopped")),
            "train_wall_s": wall, "train_loop_s": float(sum(h["time_s"] for h in train)),
            "s_per_epoch": float(np.mean([h["time_s"] for h in train])),
            "monitor": monitor, "final_monitor": float(train[-1][monitor]),
            "acc": sc["acc"], "nmi": sc["nmi"], "clusters_used": int(len(np.unique(pred))),
            "test_elbo_nats": elbo,
            "curve": [{"epoch": h["epoch"], monitor: h[monitor], "time_s": h["time_s"]} for h in train],
        }
        print(v, {k: results[v][k] for k in ("epochs_to_stop", "train_wall_s", "acc", "test_elbo_nats")},
              flush=True)
    out = {"command": "python bench/gmvae_early_stop.py " + " ".join(sys.argv[1:]),
           "machine": "2-core CPU, Ray Train 2 workers x 1 CPU", "rows": a.rows, "k": a.k,
           "patience": a.patience, "min_delta": a.min_delta, "seed": a.seed, "results": results}
    if {"gmvae", "concrete-gmvae"} <= results.keys():
        m, c = results["gmvae"], results["concrete-gmvae"]
        out["marginalised_over_concrete_wall"] = m["train_wall_s"] / c["train_wall_s"]
        out["marginalised_over_concrete_loop"] = m["train_loop_s"] / c["train_loop_s"]
    save("gmvae_early_stop", out)


if __name__ == "__main__":
    main()
