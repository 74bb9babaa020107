"""True K vs chosen K for every criterion of distclust.select_k and the combined rule.

    DISTCLUST_DATASETS=PATH python bench/choose_k.py [--only digits,mix5,...] [--replicates 5] [--ray]

Data sets (representation, K range searched): digits (the embedding tune/digits-k.yaml's trials
share: jobs/digits-ae-kmeans.yaml, hidden [256, 256], 30 epochs, trained by `distclust train`),
MNIST-70k and Fashion-MNIST-70k (jobs/mnist-ae-kmeans.yaml with hidden [256, 128], 15 epochs,
trained in one process on a seeded 10,000-row sample, then all 70,000 rows embedded: the shared
2-core machine could not run the full DEC-size autoencoder in time), generated Gaussian mixtures
with K = 5, 20, 50 and an overlapping one (K = 8, centres 3.5 apart at unit-ish spread) pushed through
a random tanh map into 32-d (bench/choose_k_data.py), and make_customers.py's table (20,000
rows, 6 segments; standardised numbers + missing flags + one-hot categories). Criteria run on a
seeded sample of at most 10,000 rows. Results are merged into bench/results/choose_k.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # this checkout's distclust first
from choose_k_data import ae_embedding, customers, gaussian_mixture, inprocess_ae_embedding, standardise  # noqa: E402
from common import RESULTS, ROOT, dataset  # noqa: E402

from distclust.select_k import parse_k_range, select_k, tolerance  # noqa: E402

WORK = ROOT / "bench" / "_work" / "choose_k"
DIGITS_SETS = ["model.pretrain_epochs=30", "model.hidden=[256,256]", "scaling.num_workers=1"]


def load(name: str):
    """(Z, true K, what Z is, K range)."""
    if name == "digits":
        Z, y = ae_embedding("digits", dataset("digits.npz"), "digits-ae-kmeans.yaml", WORK, DIGITS_SETS)
        return Z, 10, "AE embedding (10-d) of tune/digits-k.yaml's trials", "2..20"
    if name in ("mnist", "fashion_mnist"):
        Z, y, train_s = inprocess_ae_embedding(name, dataset(f"{name}.npz"), "mnist-ae-kmeans.yaml", WORK, 15,
                                               sets=("model.hidden=[256,128]",))
        return Z, 10, f"AE embedding (10-d), AE trained on a 10k sample, {len(Z)} rows embedded", "5..30"
    if name.startswith("mix"):
        k = int(name[3:])
        X, _ = gaussian_mixture(k, seed=0)
        rng = {5: "2..15", 20: "5..40", 50: "20..80:2"}.get(k, f"2..{3 * k}")
        return standardise(X), k, f"32-d nonlinear embedding, {len(X)} rows, standardised", rng
    if name == "overlap8":
        X, _ = gaussian_mixture(8, seed=1, sep=3.5)
        return standardise(X), 8, f"32-d, centres 3.5 apart (clusters nearly touch), {len(X)} rows", "2..16"
    if name == "customers":
        Z, _ = customers(WORK)
        return Z, 6, f"numbers + missing flags + one-hot ({Z.shape[1]} columns), {len(Z)} rows", "2..15"
    raise SystemExit(f"unknown data set {name}")


ALL = ["digits", "mnist", "fashion_mnist", "mix5", "mix20", "mix50", "overlap8", "customers"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default=",".join(ALL))
    ap.add_argument("--replicates", type=int, default=5)
    ap.add_argument("--sample", type=int, default=10_000)
    ap.add_argument("--ray", action="store_true", help="run each K as a Ray task (local Ray)")
    a = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "choose_k.json"
    res = json.loads(path.read_text()) if path.is_file() else {"datasets": {}}
    if a.ray:
        from distclust.engine.ray_setup import ensure_ray

        ensure_ray(None, num_cpus=2)
    for name in a.only.split(","):
        Z, k, what, rng = load(name)
        sel = select_k(Z, parse_k_range(rng), seed=0, replicates=a.replicates, sample=a.sample, use_ray=a.ray)
        ok = {c: abs(v - k) <= 1 for c, v in sel.choices.items()}
        res["datasets"][name] = {"true_k": k, "representation": what, "k_range": rng, "rows_total": len(Z),
                                 "chosen": sel.chosen, "within_1": abs(sel.chosen - k) <= 1,
                                 "within_tolerance": abs(sel.chosen - k) <= tolerance(k), "at_edge": sel.at_edge,
                                 "choices": sel.choices, "criteria_within_1": ok, "reason": sel.reason,
                                 "warnings": sel.warnings, "criteria_rows": sel.rows, "criteria_s": sel.seconds,
                                 "table": sel.table}
        print(f"{name}: true {k}, chosen {sel.chosen} ({sel.reason}); {sel.choices}; {sel.seconds:.0f} s", flush=True)
        res["command"] = "DISTCLUST_DATASETS=PATH python bench/choose_k.py " + " ".join(sys.argv[1:])
        res["replicates"], res["sample"] = a.replicates, a.sample
        d = res["datasets"]
        res["summary"] = {"datasets": len(d), "combined_within_1": sum(v["within_1"] for v in d.values()),
                          "combined_at_edge": sum(v["at_edge"] for v in d.values()),
                          **{f"{c}_within_1": sum(v["criteria_within_1"].get(c, False) for v in d.values())
                             for c in ("stability", "gap", "dpmix", "prediction_strength")}}
        RESULTS.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(res, indent=1, default=float))
    print(json.dumps(res["summary"], indent=1))


if __name__ == "__main__":
    main()
