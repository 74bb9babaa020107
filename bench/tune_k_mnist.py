"""Label-free K selection for DEC on MNIST-70k: K swept over 5..20 by `tune/mnist-dec-k.yaml`.

    python bench/tune_k_mnist.py [--pretrain-epochs 30] [--cluster-epochs 10]

The autoencoder is pretrained once (`jobs/mnist-ae-kmeans.yaml`, 2 Ray Train workers) and every
trial starts DEC from it (`model.pretrained`), so the sweep compares K, not pretraining luck.
Selection uses only the sweep's label-free metric (silhouette on sampled embeddings); ACC / NMI
are reported beside. Writes bench/results/tune_k_mnist.json.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, dataset, save  # noqa: E402

import distclust  # noqa: E402,F401
from distclust.data import ingest  # noqa: E402
from distclust.tuning import run_sweep  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pretrain-epochs", type=int, default=30)
    ap.add_argument("--cluster-epochs", type=int, default=10)
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
    shutil.rmtree(work / "sweep", ignore_errors=True)
    t = time.time()
    r = run_sweep(ROOT / "tune" / "mnist-dec-k.yaml", work / "sweep", data=str(data), progress=False,
                  overrides=[f"model.pretrained={ae}", "model.pretrain_epochs=0",
                             f"model.cluster_epochs={a.cluster_epochs}", "train.quiet=true"])
    sweep_s = time.time() - t
    s = r["summary"]
    df = r["table"].sort_values("model.n_clusters")
    cols = [c for c in ("model.n_clusters", s["metric"], "davies_bouldin", "bic", "acc", "nmi", "ari")
            if c in df.columns]
    save("tune_k_mnist", {"command": f"python bench/tune_k_mnist.py --pretrain-epochs {a.pretrain_epochs} "
                                     f"--cluster-epochs {a.cluster_epochs}",
                          "metric": s["metric"], "chosen_k": s["best_config"]["model.n_clusters"],
                          "acc_of_chosen": s.get("best_acc"), "pretrain_s": pretrain_s, "sweep_s": sweep_s,
                          "trials": df[cols].to_dict("records")})


if __name__ == "__main__":
    main()
