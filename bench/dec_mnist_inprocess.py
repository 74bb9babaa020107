"""DEC / IDEC on MNIST-70k, several seeds, in ONE process (no Ray): for a GPU machine without Ray.

    python bench/dec_mnist_inprocess.py --data mnist.npz --seeds 0 1 2 [--pretrain-epochs 30] [--out DIR]
           [--rows N] [--cluster-epochs N]

Trains through the product's in-process path (``distclust.engine.inprocess.train_inprocess``:
the one training loop of ``engine/loop.py`` with world size 1, the same loop the Ray Train
workers run). Per seed: pretrain one autoencoder (ae-kmeans with the model section of
jobs/mnist-dec.yaml; its FAISS k-means gives the AE+k-means figure), then DEC and IDEC
(jobs/mnist-<model>.yaml) each from that same autoencoder (``model.pretrained`` = its artifact,
``pretrain_epochs: 0``). Label metrics every ``train.eval_every`` epochs of the cluster stage
(5 in the job files), after k-means and at the end. What it does not exercise is the
distribution (covered by tests/test_dec.py and the 2-worker figures of bench/dec_mnist.py).
Writes DIR/dec_mnist_inprocess.json after every run.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, WORK, command, model_section, reset_work  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from distclust import faiss_ops  # noqa: E402
from distclust.engine.inprocess import train_inprocess  # noqa: E402
from distclust.spec import load_spec  # noqa: E402

KEYS = ("acc", "nmi", "ari")
_kmeans = faiss_ops.kmeans
faiss_ops.kmeans = lambda *a, **k: _kmeans(*a, **{**k, "use_gpu": False})  # faiss-cpu: k-means on the host


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--pretrain-epochs", type=int, default=30)
    ap.add_argument("--cluster-epochs", type=int, default=None, help="model.cluster_epochs (default: the job's)")
    ap.add_argument("--rows", type=int, default=None, help="first N rows only (smoke tests)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--models", nargs="+", default=["dec", "idec"])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--set", nargs="*", default=[], metavar="MODEL:KEY=VALUE",
                    help="override a job key for one model, e.g. dec:model.cluster_lr=0.001")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--work", default=str(WORK / "dec_mnist_inprocess"))
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    work = reset_work(a.work)
    device = torch.device(a.device)
    d = np.load(a.data)
    X = d["X"][:a.rows].reshape(len(d["X"][:a.rows]), -1).astype(np.float32)
    y = d["y"][:a.rows].astype(np.int64)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    res = {"command": command("dec_mnist_inprocess.py"), "device": name,
           "engine": "train_inprocess (engine/loop.py, world size 1)",
           "rows": len(X), "batch_size": a.batch_size, "runs": {}}

    def save():
        (out / "dec_mnist_inprocess.json").write_text(json.dumps(res, indent=1, default=float))

    for seed in a.seeds:
        tkeys = [f"train.seed={seed}", f"train.batch_size={a.batch_size}", "train.quiet=false"]
        # the autoencoder of jobs/mnist-dec.yaml's model section, with this run's epochs
        base = load_spec(ROOT / "jobs" / "mnist-dec.yaml", [f"model.pretrain_epochs={a.pretrain_epochs}", *tkeys])
        raw = {**base.raw, "model": model_section(base, "ae-kmeans")}
        ae_spec = load_spec(raw)
        t = time.time()
        ae = train_inprocess(ae_spec, X=X, y=y, device=device, out_dir=work / f"ae-seed{seed}")
        h = ae.history
        print(seed, "ae", _fmt(h[-1]), flush=True)
        res["runs"][f"ae-kmeans-seed{seed}"] = {"pretrain_epochs": a.pretrain_epochs, "time_s": time.time() - t,
                                               **{k: h[-1].get(k) for k in KEYS}}
        save()
        for model_name in a.models:
            over = [o.split(":", 1)[1] for o in a.set if o.split(":", 1)[0] == model_name]
            if a.cluster_epochs is not None:
                over = [f"model.cluster_epochs={a.cluster_epochs}", *over]
            spec = load_spec(ROOT / "jobs" / f"mnist-{model_name}.yaml",
                             [*tkeys, f"model.pretrained={ae.model_dir}", "model.pretrain_epochs=0", *over])
            t = time.time()
            h = train_inprocess(spec, X=X, y=y, device=device).history   # the same pretrained autoencoder
            print(seed, model_name, _fmt(h[-1]), flush=True)
            cl = [r for r in h if r["stage"] == "cluster"]
            init = next(r for r in h if r["stage"] == "kmeans")
            res["runs"][f"{model_name}-seed{seed}"] = {
                "overrides": over, "kmeans_init": {k: init.get(k) for k in KEYS}, "final": {k: h[-1].get(k) for k in KEYS},
                "cluster_epochs": len(cl), "cluster_lr": spec.model.cluster_lr,
                "update_interval": spec.model.update_interval, "delta_label_last": cl[-1].get("delta_label") if cl else None,
                "time_s": time.time() - t,
                "trace": [{k: r.get(k) for k in ("epoch", "delta_label", *KEYS) if k in r} for r in cl]}
            save()
    for key in ["ae-kmeans", *a.models]:
        runs = [v for k, v in res["runs"].items() if k.startswith(key + "-seed")]
        vals = {m: [r.get(m) if key == "ae-kmeans" else r["final"][m] for r in runs] for m in KEYS}
        res.setdefault("summary", {})[key] = {m: {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v)}
                                             for m, v in vals.items() if v and None not in v}
    save()
    print(json.dumps(res.get("summary"), indent=1))


def _fmt(m: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items())


if __name__ == "__main__":
    main()
