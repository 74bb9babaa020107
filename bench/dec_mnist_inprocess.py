"""DEC / IDEC on MNIST-70k, several seeds, in ONE process (no Ray): for a GPU machine without Ray.

    python bench/dec_mnist_inprocess.py --data mnist.npz --seeds 0 1 2 [--pretrain-epochs 30] [--out DIR]

Runs the same model code and the same stage semantics as the engine's worker loop
(``distclust/engine/worker.py``) with world size 1: a ``WorkerContext`` holding the
whole dataset on the device (collectives are no-ops), Adam per stage, ``on_start`` /
``on_step`` hooks, ``request_stop`` ending a stage after its epoch, label metrics
after k-means and at the end. Per seed: pretrain one autoencoder, FAISS k-means
(AE+k-means figure), then DEC and IDEC each from a copy of that same autoencoder.
What it does not exercise is the distribution (covered by tests/test_dec.py and the
2-worker figures of bench/dec_mnist.py). Writes DIR/dec_mnist_inprocess.json after every run.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distclust import faiss_ops  # noqa: E402
from distclust.engine.context import WorkerContext  # noqa: E402
from distclust.engine.worker import seed_everything  # noqa: E402
from distclust.models import Normalizer, get_model_class  # noqa: E402
from distclust.spec import load_spec  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
KEYS = ("acc", "nmi", "ari")
_kmeans = faiss_ops.kmeans
faiss_ops.kmeans = lambda *a, **k: _kmeans(*a, **{**k, "use_gpu": False})  # faiss-cpu: k-means on the host


def run_stages(model, stages, ctx, log) -> list[dict]:
    history, done = [], 0
    for stage in stages:
        ctx.stage, ctx.stop_requested = stage.name, False
        params = list(stage.parameters()) if stage.parameters else list(model.parameters())
        opt = torch.optim.Adam(params, lr=stage.lr, weight_decay=stage.weight_decay) if stage.epochs else None
        t0 = time.time()
        extra = (stage.on_start(ctx) or {}) if stage.on_start else {}
        if stage.epochs == 0:
            m = {"stage": stage.name, **extra, "time_s": time.time() - t0}
            if model.fitted():
                m.update(ctx.label_metrics())
            history.append(m)
            log(m)
            continue
        for epoch in range(stage.epochs):
            ctx.epoch, t0 = epoch, time.time()
            model.train()
            tot, n = 0.0, 0
            for i, batch in enumerate(ctx.epoch_batches(done)):
                if stage.on_step is not None:
                    extra.update(stage.on_step(ctx, epoch * ctx.steps_per_epoch + i) or {})
                model.train_step, model.train_epoch = ctx.global_step, done
                out = model(batch["features"], stage.name)
                opt.zero_grad(set_to_none=True)
                out["loss"].backward()
                opt.step()
                ctx.global_step += 1
                tot += float(out["loss"].detach())
                n += 1
            done += 1
            m = {"stage": stage.name, "epoch": epoch + 1, "loss": tot / max(n, 1), **extra,
                 "time_s": time.time() - t0}
            extra = {}
            if stage.name != "pretrain" and (ctx.stop_requested or epoch + 1 == stage.epochs or (epoch + 1) % 5 == 0):
                m.update(ctx.label_metrics())
            history.append(m)
            log(m)
            if ctx.stop_requested:
                break
    return history


def make_ctx(model, X, y, device, seed, batch_size):
    return WorkerContext.in_memory(model, X, y, device, seed, batch_size)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--pretrain-epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--models", nargs="+", default=["dec", "idec"])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--set", nargs="*", default=[], metavar="MODEL:KEY=VALUE",
                    help="override a job key for one model, e.g. dec:model.cluster_lr=0.001")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(a.device)
    d = np.load(a.data)
    X = torch.from_numpy(d["X"].reshape(len(d["X"]), -1).astype(np.float32)).to(device)
    y = torch.from_numpy(d["y"].astype(np.int64)).to(device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    res = {"command": "python bench/dec_mnist_inprocess.py " + " ".join(sys.argv[1:]), "device": name,
           "rows": len(X), "batch_size": a.batch_size, "runs": {}}

    def save():
        (out / "dec_mnist_inprocess.json").write_text(json.dumps(res, indent=1, default=float))

    for seed in a.seeds:
        # jobs/mnist-dec.yaml's model section with this run's epochs; the batch is one process's
        base = load_spec(ROOT / "jobs" / "mnist-dec.yaml", [f"model.pretrain_epochs={a.pretrain_epochs}",
                                                            f"train.seed={seed}"])
        seed_everything(seed)
        norm = Normalizer(X.shape[1])
        norm.shift.fill_(float(X.min()))
        norm.scale.fill_(float(X.max() - X.min()))   # data.normalize: global-minmax
        ae_model = get_model_class("ae-kmeans")(X.shape[1], base.model, copy.deepcopy(norm)).to(device)
        ctx = make_ctx(ae_model, X, y, device, seed, a.batch_size)
        t = time.time()
        h = run_stages(ae_model, ae_model.stages(), ctx, lambda m: print(seed, "ae", _fmt(m), flush=True))
        res["runs"][f"ae-kmeans-seed{seed}"] = {"pretrain_epochs": a.pretrain_epochs, "time_s": time.time() - t,
                                               **{k: h[-1].get(k) for k in KEYS}}
        save()
        for model_name in a.models:
            over = [o.split(":", 1)[1] for o in a.set if o.split(":", 1)[0] == model_name]
            spec = load_spec(ROOT / "jobs" / f"mnist-{model_name}.yaml", [f"train.seed={seed}", *over])
            seed_everything(seed)
            m = get_model_class(model_name)(X.shape[1], spec.model, copy.deepcopy(norm)).to(device)
            m.ae.load_state_dict(ae_model.ae.state_dict())          # the same pretrained autoencoder
            ctx = make_ctx(m, X, y, device, seed, a.batch_size)
            stages = [s for s in m.stages() if s.name != "pretrain"]
            t = time.time()
            h = run_stages(m, stages, ctx, lambda r, mn=model_name: print(seed, mn, _fmt(r), flush=True))
            cl = [r for r in h if r["stage"] == "cluster"]
            res["runs"][f"{model_name}-seed{seed}"] = {
                "overrides": over, "kmeans_init": {k: h[0].get(k) for k in KEYS}, "final": {k: h[-1].get(k) for k in KEYS},
                "cluster_epochs": len(cl), "cluster_lr": spec.model.cluster_lr,
                "update_interval": spec.model.update_interval, "delta_label_last": cl[-1].get("delta_label"),
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
