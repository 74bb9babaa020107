"""Run one seed of a model's reference protocol (``jobs/mnist-<model>.yaml``) through ``distclust train``
(Ray Train) and add it to ``bench/results/reference/<name>.json``.

    python bench/reference.py ae-kmeans --seed 0
    python bench/reference.py dec --seed 0 --pretrained bench/_work/reference/ae-kmeans-s0
    python bench/reference.py dec --seed 0 --dataset fashion_mnist.npz --name dec-fashion

``--pretrained`` reuses the autoencoder of an AE+k-means run of the same seed (DEC-keras and IDEC load
a pretrained autoencoder the same way), so the 300 pretraining epochs are paid once per seed; the
result then records the pretraining run's wall time too. ACC/NMI/ARI are computed on all rows of the
dataset with the trained model (the reference numbers are on all 70,000 MNIST rows).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, WORK, dataset  # noqa: E402


def machine() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return f"{platform.machine()} CPU × {os.cpu_count()} cores"


def evaluate(model_dir: Path, data: Path, split: int = 0) -> dict:
    """ACC/NMI/ARI of the trained model on all rows, or with ``split`` on the rows from ``split`` on
    (the test split; the train rows' scores are kept as ``*_train``)."""
    import numpy as np

    from distclust import load
    from distclust.metrics import cluster_scores

    d = np.load(data)
    X, y = d["X"].reshape(len(d["X"]), -1).astype(np.float32), d["y"]
    pred = load(model_dir).predict(X)
    keep = ("acc", "nmi", "ari")
    if not split:
        return {k: float(v) for k, v in cluster_scores(pred, y).items() if k in keep}
    test = {k: float(v) for k, v in cluster_scores(pred[split:], y[split:]).items() if k in keep}
    train = {f"{k}_train": float(v) for k, v in cluster_scores(pred[:split], y[:split]).items() if k in keep}
    return {**test, **train, "eval": f"rows {split}: (test split), trained on rows :{split}"}


def train_split(data: Path, split: int) -> Path:
    """The first ``split`` rows of ``data`` as their own .npz (MNIST: rows 0..59999 are the training set)."""
    import numpy as np

    out = WORK / "reference" / f"{data.stem}-train{split}.npz"
    if not out.is_file():
        d = np.load(data)
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(out, X=d["X"][:split], y=d["y"][:split])
    return out


def acc_curve(history: list[dict]) -> list[dict]:
    """The ACC the run logged along the way (after k-means, every eval_every epochs), from its history."""
    return [{"stage": r["stage"], "epoch": r["epoch"], "acc": round(r["acc"], 4)} for r in history
            if "acc" in r and r.get("stage") != "done"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="the model part of jobs/mnist-<model>.yaml, e.g. dec")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dataset", default="mnist.npz", help="file under the shared datasets folder")
    ap.add_argument("--name", help="result name (default: the model)")
    ap.add_argument("--pretrained", help="an AE+k-means run folder of the same seed whose autoencoder is reused")
    ap.add_argument("--split", type=int, default=0,
                    help="train on the first N rows only and report on the rest (MNIST: 60000, the test split)")
    ap.add_argument("--set", action="append", default=[], help="extra spec overrides (KEY=VALUE)")
    args = ap.parse_args()
    name = args.name or args.model
    job = ROOT / "jobs" / f"mnist-{args.model}.yaml"
    data = dataset(args.dataset)
    out = WORK / "reference" / f"{name}-s{args.seed}"
    train_data = train_split(data, args.split) if args.split else data
    cmd = [sys.executable, "-m", "distclust.cli", "train", str(job), "--data", str(train_data), "--out", str(out),
           "--set", f"train.seed={args.seed}"]
    pre_wall = 0.0
    if args.pretrained:
        pre = Path(args.pretrained).resolve()
        cmd += ["--set", f"model.pretrained={pre / 'model'}", "--set", "model.pretrain_epochs=0"]
        pre_res = json.loads((pre / "reference.json").read_text()) if (pre / "reference.json").is_file() else {}
        pre_wall = float(pre_res.get("wall_s", 0.0))
    for s in args.set:
        cmd += ["--set", s]
    cmd += ["--resume"] if (out / "run.json").is_file() else []
    print(" ".join(cmd), flush=True)
    t0 = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT)
    wall = time.time() - t0
    history = json.loads((out / "model" / "history.json").read_text())
    scores = evaluate(out / "model", data, args.split)
    epochs = sum(1 for r in history if r.get("stage") not in ("kmeans", "done") and r.get("epoch", 0) >= 1)
    row = {"seed": args.seed, **scores, "epochs": epochs, "wall_s": round(wall + pre_wall, 1),
           "machine": machine(), "curve": acc_curve(history)}
    if args.pretrained:
        row.update({"pretrained_from": str(Path(args.pretrained).name), "pretrain_wall_s": round(pre_wall, 1),
                    "epochs": epochs + int(pre_res.get("epochs", 0))})
    (out / "reference.json").write_text(json.dumps(row, indent=1))
    path = RESULTS / "reference" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    res = json.loads(path.read_text()) if path.is_file() else {"seeds": []}
    res["seeds"] = sorted([s for s in res["seeds"] if s["seed"] != args.seed] + [row], key=lambda s: s["seed"])
    res["protocol"] = f"jobs/mnist-{args.model}.yaml" + (f" with {' '.join(args.set)}" if args.set else "")
    res["dataset"] = args.dataset
    res["command"] = "python bench/reference.py " + " ".join(sys.argv[1:])
    path.write_text(json.dumps(res, indent=1))
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
