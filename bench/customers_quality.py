"""Quality on generated customer tables: the shipped customers-* jobs against k-means baselines.

    python bench/customers_quality.py --rows 100000 --seeds 0 1 2 --jobs customers-vade customers-ae-kmeans

Generates the table with ``../shared/tools/make_customers.py`` (6 segments, data seed 0), ingests it
with ``distclust ingest --id-column customer_id --label-column segment`` (the segment column is the
label, never a feature), trains each job through Ray Train (2 workers) for each training seed,
assigns the raw Parquet table and evaluates on the user's ids. Baselines on the same table:
k-means (scikit-learn, n_init 10) on standardised numbers, and on the pipeline's features
(robust-scaled numbers + one-hot). Result: ``bench/results/customers_quality[_TAG].json``.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATASETS, ROOT, save  # noqa: E402

sys.path.insert(0, str(ROOT))  # this checkout's distclust, whatever is installed

TOOL = DATASETS.parent / "tools" / "make_customers.py"   # DISTCLUST_DATASETS=…/shared/datasets moves it


def baselines(table: Path, pipe, seed: int = 0) -> dict:
    import pyarrow.parquet as pq
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import StandardScaler

    from distclust.metrics import cluster_scores

    t = pq.read_table(table)
    y = t.column("segment").to_numpy()
    num = [c for c in ("age", "income", "visits_per_month", "avg_basket", "days_since_purchase", "tenure_months")]
    Xn = np.stack([t.column(c).to_numpy(zero_copy_only=False).astype(float) for c in num], 1)
    Xn = np.where(np.isnan(Xn), np.nanmedian(Xn, 0), Xn)
    out = {}
    for name, X in (("kmeans_standardised_numbers", StandardScaler().fit_transform(Xn)),
                     ("kmeans_pipeline_features", pipe.transform(t))):
        lab = KMeans(6, n_init=10, random_state=seed).fit_predict(X)
        out[name] = cluster_scores(lab, y)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", nargs="+", default=["customers-vade", "customers-ae-kmeans"])
    ap.add_argument("--set", action="append", default=[], help="extra --set for every job")
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench-customers"))
    ap.add_argument("--tag", default="")
    ap.add_argument("--tool", default=str(TOOL), help="make_customers.py")
    a = ap.parse_args()
    import shutil

    from distclust.data.features import FeaturePipeline
    from distclust.data.table_ingest import ingest_table

    work = Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    table = work / "customers.parquet"
    subprocess.run([sys.executable, a.tool, str(table), "--rows", str(a.rows), "--segments", "6", "--seed", "0"],
                   check=True)
    t0 = time.time()
    m = ingest_table(table, work / "data", id_column="customer_id", label_column="segment", progress=False)
    result = {"rows": a.rows, "segments": 6, "data_seed": 0, "dim": m.dim, "ingest_s": time.time() - t0,
              "sets": a.set, "baselines": baselines(table, FeaturePipeline.from_dict(m.stats.pipeline)), "jobs": {}}
    name = "customers_quality" + (f"_{a.tag}" if a.tag else "")
    for job in a.jobs:
        runs = []
        for seed in a.seeds:
            run = work / f"{job}-s{seed}"
            t1 = time.time()
            cmd = [sys.executable, "-m", "distclust.cli", "train", f"jobs/{job}.yaml", "--data", str(work / "data"),
                   "--out", str(run), "--set", f"train.seed={seed}", "--quiet"]
            for s in a.set:
                cmd += ["--set", s]
            r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            if r.returncode:
                runs.append({"seed": seed, "error": r.stderr[-1500:]})
                continue
            train_s = time.time() - t1
            subprocess.run([sys.executable, "-m", "distclust.cli", "assign", str(run / "model"), str(table),
                            str(run / "assign"), "--quiet"], cwd=ROOT, check=True, capture_output=True)
            ev = work / f"{job}-s{seed}.json"
            subprocess.run([sys.executable, "-m", "distclust.cli", "evaluate", str(run / "assign"), str(work / "data"),
                            "--json", str(ev)], cwd=ROOT, check=True, capture_output=True)
            import json

            runs.append({"seed": seed, "train_s": train_s, **json.loads(ev.read_text())})
            result["jobs"][job] = {"runs": runs}
            save(name, result)
        accs = [r["acc"] for r in runs if "acc" in r]
        result["jobs"][job] = {"runs": runs, "acc_mean": float(np.mean(accs)) if accs else None,
                               "acc_std": float(np.std(accs)) if accs else None}
        save(name, result)


if __name__ == "__main__":
    main()
