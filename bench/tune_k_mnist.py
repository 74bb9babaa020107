"""Label-free K selection for DEC on MNIST-70k: K swept over 5..20 by `tune/mnist-dec-k.yaml`.

    python bench/tune_k_mnist.py [--pretrain-epochs 30] [--cluster-epochs 10]

The autoencoder is pretrained once (`jobs/mnist-ae-kmeans.yaml`, 2 Ray Train workers) and every
trial starts DEC from it (`model.pretrained`), so the sweep compares K, not pretraining luck.
Selection uses only the sweep's label-free metric (silhouette on 5,000 sampled rows); ACC / NMI
are reported beside. Every trial's partition is then re-scored in the three score spaces a sweep
spec can name (`score_space`: the trial's own embedding, the shared pretrained embedding, the
normalised pixels) with the same function the sweep uses. Writes bench/results/tune_k_mnist.json.
`--rescore` skips the sweep and re-scores the trials of the last run.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, dataset, save  # noqa: E402

import distclust  # noqa: E402,F401
from distclust.data import ingest  # noqa: E402
import pandas as pd  # noqa: E402

from distclust.data.sample import sample_dataset  # noqa: E402
from distclust.tuning import SCORE_SPACES, run_sweep, score_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pretrain-epochs", type=int, default=30)
    ap.add_argument("--cluster-epochs", type=int, default=10)
    ap.add_argument("--rescore", action="store_true", help="re-score the last sweep's trials, do not train")
    ap.add_argument("--work", default=str(ROOT / "bench" / "_work" / "tune_k_mnist"))
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    data, ae = work / "data", work / "ae"
    if not data.exists():
        ingest(dataset("mnist.npz"), data, shards=8, progress=False)
    t = time.time()
    if not (ae / "model").exists():  # the pretrained AE is kept between runs of this script
        subprocess.run([sys.executable, "-m", "distclust", "train", str(ROOT / "jobs" / "mnist-ae-kmeans.yaml"),
                        "--data", str(data), "--out", str(ae), "--overwrite", "--set",
                        f"model.pretrain_epochs={a.pretrain_epochs}", "--set", "train.quiet=true"], check=True)
    pretrain_s = time.time() - t
    sweep_s = None
    if not a.rescore:
        shutil.rmtree(work / "sweep", ignore_errors=True)
        t = time.time()
        run_sweep(ROOT / "tune" / "mnist-dec-k.yaml", work / "sweep", data=str(data), progress=False,
                  overrides=[f"model.pretrained={ae / 'model'}", "model.pretrain_epochs=0",
                             f"model.cluster_epochs={a.cluster_epochs}", "train.quiet=true"])
        sweep_s = time.time() - t
    timings = {}
    if a.rescore:  # keep the timings of the run that trained the trials
        prev = RESULTS / "tune_k_mnist.json"
        if prev.is_file():
            timings = {k: v for k, v in json.loads(prev.read_text()).items() if k in ("pretrain_s", "sweep_s")}
    summary = json.loads((work / "sweep" / "summary.json").read_text())
    df = pd.read_parquet(work / "sweep" / "results.parquet")
    df = df[df["status"] == "completed"].sort_values("model.n_clusters")
    X, y = sample_dataset(data, 5000, 0)
    rows = []
    for _, r in df.iterrows():
        row = {"k": int(r["model.n_clusters"]), "acc": r["acc"], "nmi": r["nmi"], "ari": r["ari"]}
        for space in SCORE_SPACES:
            sc = score_model(r["model_dir"], X, y, 0, space, ae / "model")
            row.update({f"{m}_{space}": sc[m] for m in ("silhouette", "davies_bouldin")})
        rows.append(row)
    chosen = {space: {"silhouette": max(rows, key=lambda r: r[f"silhouette_{space}"])["k"],
                      "davies_bouldin": min(rows, key=lambda r: r[f"davies_bouldin_{space}"])["k"]}
              for space in SCORE_SPACES}
    acc_of = {r["k"]: r["acc"] for r in rows}
    save("tune_k_mnist", {"command": f"python bench/tune_k_mnist.py --pretrain-epochs {a.pretrain_epochs} "
                                     f"--cluster-epochs {a.cluster_epochs}",
                          "sweep_metric": summary["metric"], "sweep_score_space": summary.get("score_space", "embedding"),
                          "sweep_chosen_k": summary["best_config"]["model.n_clusters"],
                          "chosen_k_by_space": chosen,
                          "acc_of_chosen_by_space": {sp: {m: acc_of[k] for m, k in c.items()} for sp, c in chosen.items()},
                          "pretrain_s": pretrain_s, "sweep_s": sweep_s, "trials": rows, **timings})

if __name__ == "__main__":
    main()
