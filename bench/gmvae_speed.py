"""GMVAE speed vs K: marginalised vs Concrete (and Gumbel) GMVAE, side by side in one run.

    python bench/gmvae_speed.py [--ks 10 50 200] [--batch 256] [--reps 5] [--threads 2]

In-process plain torch: the models' own ``forward`` + ``backward`` + an Adam step on
real MNIST batches (pixels / 255), same networks (784-512-256 trunk, latent 10,
mirrored decoder) and batch size for every variant and K. This is exactly the code
the Ray Train workers run per step (the engine adds data loading and DDP all-reduce,
which do not depend on K). Configurations are timed round-robin, ``--reps`` times,
so a load change on the shared machine hits every configuration alike; the
median seconds per batch is reported, and per epoch = median × ceil(70000 / batch).

Writes bench/results/gmvae_speed.json.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import dataset, save  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from distclust.models import Normalizer, get_model_class  # noqa: E402


def build(name: str, k: int, dim: int, seed: int = 0):
    cls = get_model_class(name)
    torch.manual_seed(seed)
    norm = Normalizer(dim)
    norm.scale.fill_(255.0)                      # global-minmax of MNIST: pixels / 255
    m = cls(dim, cls.Params(n_clusters=k, latent_dim=10, hidden=[512, 256], recon="bernoulli"), norm)
    m.train()
    return m, torch.optim.Adam(m.parameters(), lr=1e-3)


def run_batches(model, opt, X, batch: int, n: int, start: int) -> float:
    t = time.perf_counter()
    for i in range(n):
        s = ((start + i) * batch) % (len(X) - batch)
        x = X[s:s + batch]
        model.train_step = start + i
        out = model(x, "train")
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
    return (time.perf_counter() - t) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None)
    ap.add_argument("--ks", type=int, nargs="+", default=[10, 50, 200])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--single-batches", type=int, default=20, help="batches per rep, Concrete / Gumbel")
    ap.add_argument("--marg-rows", type=int, default=2 * 256 * 10,
                    help="per rep, the marginalised model runs max(1, marg_rows // (batch·K)) batches")
    ap.add_argument("--machine", default="shared with other jobs", help="what else ran on the machine")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    d = np.load(a.data or dataset("mnist.npz"))
    X = torch.from_numpy(d["X"].astype(np.float32))
    rng = np.random.default_rng(0)
    X = X[torch.from_numpy(rng.permutation(len(X)))]
    configs = []
    for k in a.ks:
        for name in ("gmvae", "concrete-gmvae", "gmvae-gumbel"):
            m, opt = build(name, k, X.shape[1])
            n = max(1, a.marg_rows // (a.batch * k)) if name == "gmvae" else a.single_batches
            run_batches(m, opt, X, a.batch, 1, 0)   # warm-up (allocator, first-call overheads)
            configs.append({"model": name, "k": k, "model_obj": m, "opt": opt, "n": n, "times": []})
    t0 = time.time()
    for rep in range(a.reps):
        for c in configs:
            c["times"].append(run_batches(c["model_obj"], c["opt"], X, a.batch, c["n"], 1 + rep * c["n"]))
        print(f"rep {rep + 1}/{a.reps} done at {time.time() - t0:.0f} s", flush=True)
    steps = math.ceil(70000 / a.batch)
    rows, med = [], {}
    for c in configs:
        s = statistics.median(c["times"])
        med[(c["model"], c["k"])] = s
        rows.append({"model": c["model"], "k": c["k"], "batches_per_rep": c["n"], "reps": a.reps,
                     "s_per_batch_median": s, "s_per_batch_all": c["times"], "s_per_epoch_est": s * steps})
    ratios = {}
    kmin, kmax = min(a.ks), max(a.ks)
    for name in ("concrete-gmvae", "gmvae-gumbel", "gmvae"):
        ratios[f"{name}_K{kmax}_over_K{kmin}"] = med[(name, kmax)] / med[(name, kmin)]
    for k in a.ks:
        ratios[f"marginalised_over_concrete_K{k}"] = med[("gmvae", k)] / med[("concrete-gmvae", k)]
    import os
    save("gmvae_speed", {
        "command": "python bench/gmvae_speed.py " + " ".join(sys.argv[1:]),
        "machine": f"{os.cpu_count()}-core CPU, torch threads {a.threads}, {a.machine}",
        "batch": a.batch, "hidden": [512, 256], "latent_dim": 10, "steps_per_epoch_70k": steps,
        "wall_s": time.time() - t0, "rows": rows, "ratios": ratios,
        "goals": {"concrete_K200_over_K10_max": 1.25, "marginalised_over_concrete_K200_min": 10.0},
    })


if __name__ == "__main__":
    main()
