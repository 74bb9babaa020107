"""Spine benchmark: MNIST-70k → ingest → AE + k-means on 2 Ray workers → assign → evaluate.

    python bench/spine_mnist.py [--epochs 30] [--workers 2] [--data PATH/mnist.npz]

Writes bench/results/spine_mnist.json (figures quoted in docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, dataset, reset_work, save  # noqa: E402

import distclust  # noqa: E402,F401
from distclust.assign import run_assign  # noqa: E402
from distclust.data import ingest  # noqa: E402
from distclust.engine.trainer import run_training  # noqa: E402
from distclust.evaluate import evaluate  # noqa: E402
from distclust.spec import load_spec  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="spine_mnist", help="result file bench/results/NAME.json")
    ap.add_argument("--work", default=str(ROOT / "bench" / "_work" / "spine"))
    a = ap.parse_args()
    src = a.data or dataset("mnist.npz")
    work = reset_work(a.work)
    t = time.time()
    m = ingest(src, work / "data", shards=8, progress=False)
    t_ingest = time.time() - t
    overrides = [f"scaling.num_workers={a.workers}", f"train.seed={a.seed}", "train.quiet=true"]
    if a.epochs is not None:
        overrides.append(f"model.pretrain_epochs={a.epochs}")
    spec = load_spec(ROOT / "jobs" / "mnist-ae-kmeans.yaml", overrides)
    res = run_training(spec, work / "run", data=str(work / "data"))
    pre = [h for h in res.history if h.get("stage") == "pretrain"]
    train_sps = sum(h["samples_per_s"] for h in pre) / max(len(pre), 1)
    s = run_assign(res.model_dir, work / "data", work / "assign", progress=False)
    ev = evaluate(work / "assign", work / "data")
    import pyarrow.parquet as pq
    ids = pq.read_table(work / "assign", columns=["id"]).column("id").to_numpy()
    save(a.name, {
        "command": "python bench/spine_mnist.py" + (f" --epochs {a.epochs}" if a.epochs else ""),
        "rows": m.rows, "dim": m.dim, "workers": a.workers, "seed": a.seed,
        "pretrain_epochs": len(pre), "ingest_s": t_ingest, "train_wall_s": res.wall_s,
        "train_samples_per_s": train_sps, "assign_rows": int(len(ids)), "assign_unique_ids": int(len(set(ids.tolist()))),
        "assign_s": s["seconds"], "assign_rows_per_s": s["rows_per_s"],
        # per-process peaks (ru_maxrss): the largest training worker, the largest assignment actor, the driver
        "peak_rss_train_worker_mib": max(h.get("peak_rss_mib", 0) for h in res.history),
        "peak_rss_assign_actor_mib": s["actor_peak_rss_mib"],
        "peak_rss_driver_mib": __import__("resource").getrusage(__import__("resource").RUSAGE_SELF).ru_maxrss / 1024,
        **{f"eval_{k}": v for k, v in ev.items()},
        "train_final": {k: v for k, v in res.metrics.items() if k in ("acc", "nmi", "ari")},
    })


if __name__ == "__main__":
    main()
