"""Customer tables at scale: ingest, then assign of the raw table, at several sizes.

    DISTCLUST_DATASETS=../shared/datasets python bench/customers_scale.py MODEL_DIR --rows 1000000 3000000

For each N: generate N rows with ``make_customers.py`` (Parquet, chunked), ``distclust ingest
--id-column customer_id`` (two streaming passes: ids + pipeline fit, then encode + shards), and
``distclust assign MODEL TABLE`` of the raw Parquet table (the pipeline encodes rows inside the
actors). Training is not repeated per size: MODEL_DIR is a model trained on a sample of the same
generator (e.g. by bench/customers_quality.py) — the pipeline it carries encodes any size.
Per step: rows/s (wall, incl. process start) and peak RSS (`/usr/bin/time -v` for ingest; the
largest actor's peak for assign, as the assign summary reports it). Writes
``bench/results/customers_scale.json``.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATASETS, ROOT, save  # noqa: E402


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB of the process tree's largest process, stderr) of one command."""
    t0 = time.time()
    r = subprocess.run(["/usr/bin/time", "-v", *cmd], cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - t0
    if r.returncode:
        raise SystemExit(f"{cmd[3:5]} failed: {r.stderr[-2000:]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    return wall, (int(m.group(1)) / 1024 if m else float("nan")), r.stderr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 3_000_000])
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench-customers-scale"))
    ap.add_argument("--tool", default=str(DATASETS.parent / "tools" / "make_customers.py"))
    a = ap.parse_args()
    work = Path(a.work)
    result = {"model": str(Path(a.model).resolve()), "sizes": []}
    py = sys.executable
    for n in a.rows:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        table = work / "customers.parquet"
        subprocess.run([py, a.tool, str(table), "--rows", str(n), "--segments", "6", "--seed", "0"], check=True)
        wall_i, rss_i, _ = timed([py, "-m", "distclust.cli", "ingest", str(table), str(work / "data"),
                                  "--id-column", "customer_id", "--label-column", "segment", "--quiet"])
        wall_a, rss_a_driver, _ = timed([py, "-m", "distclust.cli", "assign", a.model, str(table),
                                         str(work / "assign"), "--quiet"])
        s = json.loads((work / "assign" / "_SUCCESS.json").read_text())
        result["sizes"].append({"rows": n, "ingest_s": wall_i, "ingest_rows_per_s": n / wall_i,
                                "ingest_peak_rss_mib": rss_i, "assign_s": wall_a, "assign_rows_per_s": n / wall_a,
                                "assign_actor_rows_per_s": s.get("actor_rows_per_s"),
                                "assign_actor_peak_rss_mib": s.get("actor_peak_rss_mib"),
                                "assign_driver_peak_rss_mib": rss_a_driver, "assign_actors": s.get("actors")})
        save("customers_scale", result)
    if len(result["sizes"]) >= 2:
        lo, hi = result["sizes"][0], result["sizes"][-1]
        result["rss_ratio"] = {"ingest": hi["ingest_peak_rss_mib"] / lo["ingest_peak_rss_mib"],
                               "assign_actor": hi["assign_actor_peak_rss_mib"] / lo["assign_actor_peak_rss_mib"]}
        save("customers_scale", result)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
