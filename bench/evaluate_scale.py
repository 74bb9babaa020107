"""Peak memory of ``distclust evaluate`` at 1M vs 10M rows (the join must not hold everything).

Writes a labelled dataset (id, 4 features, label; ids in shuffled order across files, so the
join cannot rely on sorted ids) and a matching assignment (id, cluster, distance) of N rows,
then runs ``distclust evaluate`` in a fresh process and reads its peak RSS.

    python bench/evaluate_scale.py --rows 1000000 10000000      # → bench/results/evaluate_scale.json
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent


def write(work: Path, n: int, files: int = 20, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    data, out = work / f"data-{n}", work / f"assign-{n}"
    if (data / "_manifest.json").exists() and out.exists():
        return data, out
    data.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    ids = rng.permutation(n).astype(np.int64)
    shards = []
    for i, part in enumerate(np.array_split(ids, files)):
        label = (part % 10).astype(np.int64)
        feats = (rng.normal(size=(len(part), 4)) + label[:, None]).astype(np.float32)
        fl = pa.FixedSizeListArray.from_arrays(pa.array(feats.ravel()), 4)
        pq.write_table(pa.table({"id": part, "features": fl, "label": label}), data / f"part-{i:05d}.parquet",
                       row_group_size=100_000)
        shards.append({"file": f"part-{i:05d}.parquet", "rows": len(part)})
        cluster = np.where(rng.random(len(part)) < 0.9, label, rng.integers(0, 10, len(part)))
        order = rng.permutation(len(part))   # the assignment in another order than the data
        pq.write_table(pa.table({"id": part[order], "cluster": cluster[order].astype(np.int64),
                                 "distance": np.zeros(len(part), np.float32)}), out / f"a-{i:05d}.parquet",
                       row_group_size=100_000)
    manifest = {"rows": n, "dim": 4, "dtype": "float32", "has_label": True, "shards": shards,
                "stats": {"mean": [0.0] * 4, "std": [1.0] * 4, "min": [-5.0] * 4, "max": [15.0] * 4},
                "n_classes": 10, "source": "bench/evaluate_scale.py"}
    (data / "_manifest.json").write_text(json.dumps(manifest))
    return data, out


def measure(data: Path, out: Path) -> dict:
    code = ("import json, resource, sys, time; t = time.time(); from distclust.evaluate import evaluate; "
            "r = evaluate(sys.argv[1], sys.argv[2]); "
            "print(json.dumps({'acc': r['acc'], 'n': r['n'], 'seconds': time.time() - t, "
            "'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))")
    r = subprocess.run([sys.executable, "-c", code, str(out), str(data)], capture_output=True, text=True, cwd=ROOT)
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--work", default=str(ROOT / "bench" / "_work" / "evaluate_scale"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "evaluate_scale.json"))
    a = ap.parse_args()
    res = {"command": "python bench/evaluate_scale.py --rows " + " ".join(map(str, a.rows)), "runs": []}
    for n in a.rows:
        t = time.time()
        data, out = write(Path(a.work), n)
        m = measure(data, out)
        m.update(rows=n, write_s=time.time() - t - m["seconds"])
        res["runs"].append(m)
        print(json.dumps(m), flush=True)
    if len(res["runs"]) > 1:
        res["peak_rss_ratio_largest_vs_smallest"] = res["runs"][-1]["peak_rss_mib"] / res["runs"][0]["peak_rss_mib"]
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k != "runs"}))


if __name__ == "__main__":
    main()
