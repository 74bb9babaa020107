"""The marginalised GMVAE's z-head first layer, split vs concatenated, side by side in one run.

    python bench/gmvae_marginal_split.py [--reps 5] [--batches 6] [--threads 1]

The split form runs the h part of the z-head's first layer once per row and adds one column of
W_y per cluster; the shipped ``GMVAE.q_z_every_y`` runs that layer on the (K·N, d + K) matrix
``[h, one-hot y]`` (the split changes float order; see docs/benchmarks/gmvae.md). Both are timed
on real MNIST batches (pixels / 255) with the model's own ``forward`` + ``backward`` + an Adam step,
round-robin ``--reps`` times (a load change hits both alike), median seconds per batch.
Configurations: the reference jobs' networks (``jobs/mnist-gmvae.yaml``: separate 512-512
encoders, Gaussian 64, batch 64) and the default shared trunk (512-256, latent 10, batch 256), at
K = 10 and 50. The largest difference of the two forms' bound on one batch is recorded per pair.

Writes bench/results/gmvae_marginal_split.json.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import dataset, save  # noqa: E402
from gmvae_speed import run_batches as step_time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from distclust.models import Normalizer, get_model_class  # noqa: E402
from distclust.models.gmvae import GMVAE  # noqa: E402

NETS = {
    "reference (separate 512-512, latent 64)": dict(encoder="separate", hidden=[512, 512], latent_dim=64, batch=64),
    "default (shared 512-256, latent 10)": dict(encoder="shared", hidden=[512, 256], latent_dim=10, batch=256),
}


def split_form(self, h):
    """The split form: the h part of the z-head's first layer once per row, + W_y[:, y] per cluster."""
    first, rest = self.qz.trunk[0], self.qz.trunk[1:]
    d = h.shape[-1]
    a = F.linear(h, first.weight[:, :d], first.bias)                    # (N, H), once per row
    a = a.unsqueeze(0) + first.weight[:, d:].t().unsqueeze(1)           # (K, N, H): + W_y[:, y]
    return self.qz.head(rest(a))


def build(net: dict, k: int, dim: int, split: bool):
    cls = get_model_class("gmvae")
    torch.manual_seed(0)
    norm = Normalizer(dim)
    norm.scale.fill_(255.0)
    p = cls.Params(n_clusters=k, latent_dim=net["latent_dim"], hidden=net["hidden"], encoder=net["encoder"])
    m = cls(dim, p, norm)
    if split:
        m.q_z_every_y = split_form.__get__(m, GMVAE)
    m.train()
    return m, torch.optim.Adam(m.parameters(), lr=1e-3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None)
    ap.add_argument("--ks", type=int, nargs="+", default=[10, 50])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batches", type=int, default=6, help="batches per rep and configuration")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--machine", default="shared with other jobs", help="what else ran on the machine")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    X = torch.from_numpy(np.load(a.data or dataset("mnist.npz"))["X"].astype(np.float32))
    X = X[torch.from_numpy(np.random.default_rng(0).permutation(len(X)))]
    configs = []
    for label, net in NETS.items():
        for k in a.ks:
            pair = {}
            for split in (True, False):
                m, opt = build(net, k, X.shape[1], split)
                pair[split] = m
                step_time(m, opt, X, net["batch"], 1, 0)   # warm-up
                configs.append({"net": label, "k": k, "split": split, "m": m, "opt": opt,
                                "batch": net["batch"], "times": []})
            with torch.no_grad():   # same weights after the same step: same bound on a fixed batch
                torch.manual_seed(1)
                a_ = pair[True].marginal_elbo(X[:32])["elbo"]
                torch.manual_seed(1)
                b_ = pair[False].marginal_elbo(X[:32])["elbo"]
            configs[-1]["max_abs_diff_elbo"] = float((a_ - b_).abs().max())
    t0 = time.time()
    for rep in range(a.reps):
        for c in configs:
            c["times"].append(step_time(c["m"], c["opt"], X, c["batch"], a.batches, 1 + rep * a.batches))
        print(f"rep {rep + 1}/{a.reps} at {time.time() - t0:.0f} s", flush=True)
    rows = []
    for c in configs:
        rows.append({"net": c["net"], "k": c["k"], "form": "split" if c["split"] else "concatenated",
                     "batch": c["batch"], "s_per_batch_median": statistics.median(c["times"]),
                     "s_per_batch_all": c["times"], **({"max_abs_diff_elbo_nats": c["max_abs_diff_elbo"]}
                                                      if "max_abs_diff_elbo" in c else {})})
    speedups = {}
    for label in NETS:
        for k in a.ks:
            t = {r["form"]: r["s_per_batch_median"] for r in rows if r["net"] == label and r["k"] == k}
            speedups[f"{label}, K={k}: concatenated / split"] = t["concatenated"] / t["split"]
    for key, v in speedups.items():
        print(f"{key}: {v:.2f}x")
    save("gmvae_marginal_split", {
        "command": "python bench/gmvae_marginal_split.py " + " ".join(sys.argv[1:]),
        "machine": f"{os.cpu_count()}-core CPU, torch threads {a.threads}, {a.machine}",
        "wall_s": time.time() - t0, "rows": rows, "speedups": speedups,
    })


if __name__ == "__main__":
    main()
