"""Assignment at scale: generate N rows of 64-d sharded Parquet, assign them, compare with the bound.

    python bench/assign_scale.py --rows 1000000 10000000 [--actors 2]

For each N: rows/s of `distclust assign` (ray.data actor pool, encoder + FAISS, Parquet out),
beside the compute bound measured in the same run — the encoder's forward pass and the FAISS
search timed in-process on one thread, combined per row and multiplied by the number of
actors — and the peak RSS of the largest assignment actor (flat in N is the goal).
Writes bench/results/assign_scale.json.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, reset_work, save  # noqa: E402

import distclust  # noqa: E402,F401


def generate(out: Path, rows: int, dim: int = 64, files: int = 20, row_group: int = 100_000, seed: int = 0):
    """Sharded Parquet in the ingest layout (id, features), written in bounded memory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from distclust.data.ingest import features_array, schema

    out.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (50, dim)).astype(np.float32)
    per_file = -(-rows // files)
    start = 0
    for f in range(files):
        n_f = min(per_file, rows - start)
        if n_f <= 0:
            break
        with pq.ParquetWriter(out / f"part-{f:05d}.parquet", schema(dim, False)) as w:
            for s in range(0, n_f, row_group):
                n = min(row_group, n_f - s)
                X = centers[rng.integers(0, 50, n)] + rng.normal(0, 1, (n, dim)).astype(np.float32)
                ids = np.arange(start + s, start + s + n, dtype=np.int64)
                w.write_table(pa.Table.from_arrays([pa.array(ids), features_array(X)], schema=schema(dim, False)))
        start += n_f


def make_model(path: Path, dim: int = 64, k: int = 100):
    import torch

    from distclust.artifact import save_artifact
    from distclust.models import get_model_class
    from distclust.validation import build

    torch.manual_seed(0)
    cls = get_model_class("ae-kmeans")
    m = cls(dim, build(cls.Params, {"n_clusters": k, "latent_dim": 10, "hidden": [256, 128]}, "model"))
    m.centroids.copy_(torch.randn(k, 10))
    m.is_fitted.fill_(True)
    save_artifact(m, path, data_info={})
    return path


def bound(model_dir: Path, dim: int = 64, n: int = 65536, repeats: int = 7) -> dict:
    """One-thread rows/s of the encoder and of the FAISS search on batches of ``n`` rows, best of
    ``repeats`` (a single timing swung by 1.5x with what else the machine did)."""
    import faiss
    import torch

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    model = distclust.load(model_dir)
    X = np.random.default_rng(1).normal(size=(n, dim)).astype(np.float32)
    model.transform(X[:10000])
    enc, fa = 0.0, 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        Z = model.transform(X)
        enc = max(enc, n / (time.perf_counter() - t))
        t = time.perf_counter()
        model.index.search(Z)
        fa = max(fa, n / (time.perf_counter() - t))
    return {"encoder_rows_per_s_1thread": enc, "faiss_rows_per_s_1thread": fa,
            "combined_rows_per_s_1thread": 1.0 / (1.0 / enc + 1.0 / fa)}


def main() -> None:
    from distclust.assign import run_assign

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--work", default=str(ROOT / "bench" / "_work" / "assign_scale"))
    a = ap.parse_args()
    work = reset_work(a.work)
    model = make_model(work / "model")
    b = bound(model)
    from distclust.engine.ray_setup import ensure_ray

    t = time.time()
    ensure_ray(None, num_cpus=a.actors)  # the local Ray a CLI call would start, timed on its own
    ray_start_s = time.time() - t
    runs = []
    for rows in a.rows:
        data = work / f"data-{rows}"
        t = time.time()
        generate(data, rows)
        gen_s = time.time() - t
        s = run_assign(model, data, work / f"out-{rows}", actors=a.actors, rows_per_unit=500_000, progress=False)
        bound_rate = b["combined_rows_per_s_1thread"] * a.actors
        steady = s["actor_rows_per_s"] * a.actors
        busy = s["actor_seconds"]
        runs.append({"rows": rows, "generate_s": gen_s, "assign_s": s["seconds"], "assign_rows_per_s": s["rows_per_s"],
                     "bound_rows_per_s": bound_rate, "fraction_of_bound": s["rows_per_s"] / bound_rate,
                     "steady_rows_per_s": steady, "steady_fraction_of_bound": steady / bound_rate,
                     "actor_time_split": {k: busy[k] / busy["units"] for k in ("read", "model", "write")},
                     "actor_peak_rss_mib": s["actor_peak_rss_mib"], "rows_out": s["rows"]})
        shutil.rmtree(data)
        shutil.rmtree(work / f"out-{rows}")
    res = {"command": "python bench/assign_scale.py --rows " + " ".join(map(str, a.rows)), "actors": a.actors,
           "ray_start_s": ray_start_s,
           "dim": 64, "encoder": "64-256-128-10 MLP", "k": 100, **b, "runs": runs}
    if len(runs) >= 2:
        res["peak_rss_ratio_largest_vs_smallest"] = runs[-1]["actor_peak_rss_mib"] / runs[0]["actor_peak_rss_mib"]
    save("assign_scale", res)


if __name__ == "__main__":
    main()
