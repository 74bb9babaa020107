"""Quality of the shipped customers-* jobs on a generated customer table, in ONE process (no Ray).

    DISTCLUST_DATASETS=../shared/datasets python bench/customers_quality_inprocess.py \
        --rows 30000 --seeds 0 1 2 --job customers-ae-kmeans

The product's in-process path (``engine.inprocess.train_inprocess``: the engine's loop with world
size 1 over the ingested data, ``train.epoch_rows`` included); for when Ray cannot start (on the shared development machine
Ray's node start-up timed out repeatedly under load). Per seed: generate nothing new (data seed 0
throughout), ingest once with ``ingest_table`` (``--id-column customer_id --label-column segment``),
train the job's stages, save the artifact, ``distclust.load`` it and ``predict`` the RAW Parquet table
(the pipeline encodes it) — ACC/NMI/ARI of that prediction against ``segment``. Baselines on the same
table: k-means (n_init 10) on standardised numbers and on the pipeline features.
Writes ``bench/results/customers_quality_<job>_<rows>.json`` after every seed.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import DATASETS, ROOT  # noqa: E402
from customers_quality import baselines  # noqa: E402


def main() -> None:
    import pyarrow.parquet as pq

    from distclust import load
    from distclust.data.features import FeaturePipeline
    from distclust.data.table_ingest import ingest_table
    from distclust.engine.inprocess import train_inprocess
    from distclust.metrics import cluster_scores
    from distclust.spec import load_spec

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=30_000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--job", default="customers-ae-kmeans")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tag", default="", help="suffix of the result file name")
    ap.add_argument("--work", default=None)
    ap.add_argument("--tool", default=str(DATASETS.parent / "tools" / "make_customers.py"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    work = Path(a.work or ROOT / "runs" / f"bench-{a.job}-{a.rows}")
    work.mkdir(parents=True, exist_ok=True)
    table = work / "customers.parquet"
    if not table.exists():
        subprocess.run([sys.executable, a.tool, str(table), "--rows", str(a.rows), "--segments", "6", "--seed", "0"],
                       check=True)
    t0 = time.time()
    m = ingest_table(table, work / "data", id_column="customer_id", label_column="segment", overwrite=True,
                     progress=False)
    pipe = FeaturePipeline.from_dict(m.stats.pipeline)
    raw = pq.read_table(table)
    truth = raw.column("segment").to_numpy()
    res = {"command": "python bench/customers_quality_inprocess.py " + " ".join(sys.argv[1:]), "rows": a.rows,
           "segments": 6, "data_seed": 0, "dim": m.dim, "ingest_s": time.time() - t0, "threads": a.threads,
           "baselines": baselines(table, pipe), "runs": []}
    name = f"customers_quality_{a.job}_{a.rows}" + (f"_{a.tag}" if a.tag else "")
    out = ROOT / "bench" / "results" / f"{name}.json"
    for seed in a.seeds:
        spec = load_spec(ROOT / "jobs" / f"{a.job}.yaml", [f"train.seed={seed}", *a.set])
        t = time.time()
        # the product's in-process path: the engine's loop (train.epoch_rows included) over the ingested data
        r = train_inprocess(spec, data=work / "data", out_dir=work / f"run-s{seed}", quiet=True, threads=a.threads)
        train_s, hist, art = time.time() - t, r.history, r.model_dir
        t = time.time()
        pred = load(art).predict(raw)               # the raw table, encoded by the artifact's pipeline
        res["runs"].append({"seed": seed, "train_s": train_s, "predict_raw_s": time.time() - t,
                            "in_training": {k: hist[-1].get(k) for k in ("acc", "nmi", "ari")},
                            **cluster_scores(pred, truth),
                            "trace": [{k: r.get(k) for k in ("stage", "epoch", "loss", "acc") if k in r} for r in hist]})
        accs = [r["acc"] for r in res["runs"]]
        res["summary"] = {"acc_mean": float(np.mean(accs)), "acc_std": float(np.std(accs)), "n": len(accs),
                          "nmi_mean": float(np.mean([r["nmi"] for r in res["runs"]]))}
        out.write_text(json.dumps(res, indent=1, default=float))
        print(json.dumps(res["summary"]), flush=True)


if __name__ == "__main__":
    main()
