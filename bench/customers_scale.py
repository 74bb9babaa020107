"""Customer tables at scale: generate → ingest → train → assign of the raw table, at several sizes.

    DISTCLUST_DATASETS=../shared/datasets python bench/customers_scale.py --rows 1000000 10000000

For each N: generate N rows with ``make_customers.py`` (Parquet, chunked; not timed as a product
step), then the product's three steps, each a ``distclust`` process:

- ``ingest TABLE --id-column customer_id --exclude segment`` (two streaming passes: ids + pipeline
  fit, then encode + shards), without the label, as a user's table comes (so no label metrics either);
- ``train JOB`` on the ingested data, *streaming* (``data.materialize: never``) with the job's
  ``train.epoch_rows`` (20,000 rows per epoch in ``jobs/customers-ae-kmeans.yaml``), so training costs
  the same optimiser steps at any N; label metrics off (``eval_every 0``);
- ``assign MODEL TABLE`` of the raw Parquet table (the model's pipeline encodes rows inside the actors).

Per step: wall seconds (incl. process and Ray start), rows/s (N / wall) and peak RSS, sampled every
0.2 s with psutil over the step's whole process tree (the CLI, and the local Ray it starts: GCS,
raylet, train workers, assign actors): the largest single process and the largest sum. Writes
``bench/results/customers_scale.json`` (ratios 10M / 1M of each peak at the end).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATASETS, ROOT, save  # noqa: E402


def timed(cmd: list[str]) -> dict:
    """Run ``cmd``; wall seconds and peak RSS (MiB) of its largest process and of its process tree."""
    t0 = time.time()
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = {"proc": 0.0, "tree": 0.0, "name": ""}
    done = threading.Event()

    def sample() -> None:
        try:
            root = psutil.Process(p.pid)
        except psutil.NoSuchProcess:
            return
        while not done.is_set():
            rss = []
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for q in procs:
                try:
                    rss.append((q.memory_info().rss / 2**20, q.name()))
                except psutil.Error:
                    pass
            if rss:
                top = max(rss)
                if top[0] > peak["proc"]:
                    peak["proc"], peak["name"] = top
                peak["tree"] = max(peak["tree"], sum(r for r, _ in rss))
            done.wait(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, _ = p.communicate()
    done.set()
    th.join()
    wall = time.time() - t0
    if p.returncode:
        raise SystemExit(f"{' '.join(cmd[2:5])} failed (rc {p.returncode}):\n{out[-3000:]}")
    return {"wall_s": round(wall, 1), "peak_rss_proc_mib": round(peak["proc"]), "peak_rss_proc": peak["name"],
            "peak_rss_tree_mib": round(peak["tree"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--job", default=str(ROOT / "jobs" / "customers-ae-kmeans.yaml"))
    ap.add_argument("--work", default=str(ROOT / "bench" / "_work" / "customers-scale"))
    ap.add_argument("--tool", default=str(DATASETS.parent / "tools" / "make_customers.py"))
    ap.add_argument("--keep", action="store_true", help="keep the work folder of the last size")
    a = ap.parse_args()
    if not Path(a.tool).is_file():
        raise SystemExit(f"{a.tool} not found: pass --tool or set DISTCLUST_DATASETS")
    work = Path(a.work)
    py = sys.executable
    result = {"job": str(Path(a.job).relative_to(ROOT)), "machine": f"{psutil.cpu_count()} CPU cores",
              "command": "python bench/customers_scale.py --rows " + " ".join(map(str, a.rows)),
              "train": "streaming (data.materialize never), train.epoch_rows from the job, eval_every 0",
              "sizes": []}
    for n in a.rows:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        table = work / "customers.parquet"
        t0 = time.time()
        subprocess.run([py, a.tool, str(table), "--rows", str(n), "--segments", "6", "--seed", "0"], check=True,
                       stdout=subprocess.DEVNULL)
        gen_s = time.time() - t0
        cli = [py, "-m", "distclust.cli"]
        steps = {
            "ingest": timed([*cli, "ingest", str(table), str(work / "data"), "--id-column", "customer_id",
                             "--exclude", "segment", "--quiet"]),
            "train": timed([*cli, "train", a.job, "--data", str(work / "data"), "--out", str(work / "run"),
                            "--set", "data.materialize=never", "--set", "train.eval_every=0", "--quiet"]),
            "assign": timed([*cli, "assign", str(work / "run" / "model"), str(table), str(work / "assign"),
                             "--quiet"]),
        }
        for s in steps.values():
            s["rows_per_s"] = round(n / s["wall_s"])
        result["sizes"].append({"rows": n, "generate_s": round(gen_s, 1),
                                "table_mib": round(table.stat().st_size / 2**20), "steps": steps})
        print(n, steps, flush=True)
        save("customers_scale", result)
    if len(result["sizes"]) >= 2:
        lo, hi = result["sizes"][0], result["sizes"][-1]
        result["rss_ratio"] = {f"{s}_{k}": round(hi["steps"][s][f"peak_rss_{k}_mib"] / lo["steps"][s][f"peak_rss_{k}_mib"], 3)
                               for s in lo["steps"] for k in ("proc", "tree")}
        save("customers_scale", result)
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
