"""VaDE and VAE + DP-GMM on MNIST-70k in ONE process (no Ray): for a GPU machine without Ray.

    python bench/vade_dpgmm_inprocess.py --data mnist.npz --seeds 0 1 2 [--device cuda]
           [--ae AE_MODEL_DIR] [--pretrain-epochs 30] [--vade-epochs 50] [--dp-epochs 20] [--out DIR]

Runs the same model code and the same stage semantics as the engine's worker loop
(``distclust/engine/worker.py``) with world size 1: a ``WorkerContext`` holding the whole
dataset on the device (collectives are no-ops, so ``global_pass`` is the exact single-process
sum), Adam per stage, ``on_start`` / ``on_epoch_end`` hooks, label metrics every epoch.
Per seed: pretrain the d-500-500-2000-10 autoencoder (Bernoulli decoder, as VaDE's paper), then
VaDE and vae-dpgmm (K_max = 30) each from a copy of that autoencoder. With ``--ae`` (an
ae-kmeans artifact, MSE decoder) an extra VaDE run starts from it (recon: mse, σ² = 0.01).
The distribution itself is covered by tests/test_dpgmm.py / tests/test_vade.py and by
bench/vade_dpgmm_mnist.py (2 Ray workers). Writes DIR/vade_dpgmm_inprocess.json after every run.
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

from distclust import metrics as M  # noqa: E402
from distclust.engine.context import WorkerContext  # noqa: E402
from distclust.engine.worker import seed_everything  # noqa: E402
from distclust.models import Normalizer, get_model_class  # noqa: E402
from distclust.spec import build  # noqa: E402

KEEP = ("stage", "epoch", "loss", "acc", "nmi", "ari", "acc_many_to_one", "completeness", "dp_active",
        "dp_components", "active_clusters", "time_s", "pretrained_loaded", "dp_sample_rows")


def run_stages(model, ctx, stages, log):
    hist = []
    done = 0
    for st in stages:
        ctx.stage, ctx.stop_requested = st.name, False
        m0 = (st.on_start(ctx) if st.on_start else None) or {}
        if st.epochs == 0:
            m = {"stage": st.name, "epoch": 0, **m0}
            if model.fitted():
                m.update(ctx.label_metrics())
            hist.append(m)
            log(m)
            continue
        params = list(st.parameters()) if st.parameters else list(model.parameters())
        opt = torch.optim.Adam(params, lr=st.lr, weight_decay=st.weight_decay)
        for ep in range(st.epochs):
            ctx.epoch = ep
            model.train()
            t0 = time.time()
            sums, nb = {}, 0
            for b in ctx.epoch_batches(done):
                model.train_step, model.train_epoch = ctx.global_step, done
                out = model(b["features"], st.name)
                opt.zero_grad(set_to_none=True)
                out["loss"].backward()
                opt.step()
                ctx.global_step += 1
                nb += 1
                for k, v in out.items():
                    sums[k] = sums.get(k, 0.0) + v.detach()
            done += 1
            m = {"stage": st.name, "epoch": ep + 1, **{k: float(v) / nb for k, v in sums.items()},
                 "time_s": time.time() - t0}
            if st.on_epoch_end:
                m.update(st.on_epoch_end(ctx, ep) or {})
            if model.fitted():
                m.update(ctx.label_metrics())
            hist.append(m)
            log(m)
            if ctx.stop_requested:
                break
    return hist


def make_ctx(model, X, y, device, seed, batch_size):
    return WorkerContext.in_memory(model, X, y, device, seed, batch_size)


SCALE = [255.0]


def build_model(name, over, dim, device):
    cls = get_model_class(name)
    p = build(cls.Params, over, "model")
    norm = Normalizer(dim)
    norm.scale.fill_(SCALE[0])   # global-minmax of non-negative pixels: x / max
    return cls(dim, p, norm).to(device)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--ae", default=None)
    ap.add_argument("--pretrain-epochs", type=int, default=30)
    ap.add_argument("--vade-epochs", type=int, default=50)
    ap.add_argument("--dp-epochs", type=int, default=20)
    ap.add_argument("--k-max", type=int, default=30)
    ap.add_argument("--rows", type=int, default=None, help="first N rows only (smoke tests)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--hidden", type=int, nargs="+", default=[500, 500, 2000])
    ap.add_argument("--no-damping-ablation", action="store_true",
                    help="also run vae-dpgmm without damping or pruning (dp_damping=1, dp_prune=0)")
    ap.add_argument("--out", default="bench/results")
    a = ap.parse_args()
    device = torch.device(a.device)
    d = np.load(a.data)
    X = torch.as_tensor(d["X"][:a.rows].astype(np.float32), device=device)
    SCALE[0] = float(X.max())
    y = torch.as_tensor(d["y"][:a.rows].astype(np.int64), device=device)
    out = Path(a.out)
    name = out.name if out.suffix == ".json" else "vade_dpgmm_inprocess.json"
    out = out.parent if out.suffix == ".json" else out
    out.mkdir(parents=True, exist_ok=True)
    res = {"command": "python bench/vade_dpgmm_inprocess.py " + " ".join(sys.argv[1:]),
           "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", "rows": len(X),
           "engine": "in-process, world size 1 (same model code and stage semantics as the Ray worker)", "runs": []}

    def save():
        (out / name).write_text(json.dumps(res, indent=1, default=float))

    def log(m):
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items() if k in KEEP}, flush=True)

    base = {"n_clusters": 10, "latent_dim": 10, "hidden": a.hidden, "gmm_sample": 70000}
    for seed in a.seeds:
        # one autoencoder per seed (Bernoulli decoder), shared by VaDE and vae-dpgmm
        seed_everything(seed)
        pre = build_model("vade", {**base, "recon": "bce", "pretrain_epochs": a.pretrain_epochs, "epochs": 0},
                          X.shape[1], device)
        ctx = make_ctx(pre, X, y, device, seed, a.batch_size)
        t = time.time()
        run_stages(pre, ctx, [pre.pretrain_stage()], log)
        t_pre = time.time() - t
        ae_state = copy.deepcopy(pre.ae.state_dict())
        runs = [("vade", {**base, "recon": "bce", "epochs": a.vade_epochs, "lr": 0.002}, None),
                ("vae-dpgmm", {**base, "n_clusters": a.k_max, "recon": "bce", "epochs": a.dp_epochs, "lr": 0.001,
                               "dp_sample": 20000}, None)]
        if a.no_damping_ablation:
            runs.append(("vae-dpgmm", {**runs[1][1], "dp_damping": 1.0, "dp_prune": 0.0}, "undamped"))
        if a.ae and seed == a.seeds[0]:
            runs.append(("vade", {**base, "recon": "mse", "recon_logvar": -4.6, "epochs": a.vade_epochs,
                                  "lr": 0.002, "pretrained": a.ae}, "spine-ae"))
        for mname, over, tag in runs:
            seed_everything(seed)
            model = build_model(mname, {**over, "pretrain_epochs": 0}, X.shape[1], device)
            if tag in (None, "undamped"):
                model.ae.load_state_dict(ae_state)
            ctx = make_ctx(model, X, y, device, seed, a.batch_size)
            stages = [s for s in model.stages() if s.name != "pretrain" or tag == "spine-ae"]
            t = time.time()
            hist = run_stages(model, ctx, stages, log)
            final = hist[-1]
            cont = None
            if mname == "vae-dpgmm":
                w = model.dp.weights().cpu().numpy()
                cont = {"dp_active_final": int((w > 0.01).sum()),
                        "dp_weights": sorted(w[w > 1e-4].round(4).tolist(), reverse=True)}
            res["runs"].append({"model": mname, "seed": seed, "variant": tag or "own AE (bce)",
                                "params": {k: v for k, v in over.items() if k.startswith("dp_") or k in
                                           ("epochs", "lr", "recon", "n_clusters")}, "pretrain_s": t_pre,
                                "train_s": time.time() - t,
                                "final": {k: final.get(k) for k in ("acc", "nmi", "ari", "acc_many_to_one",
                                                                     "completeness", "dp_active", "active_clusters")},
                                **(cont or {}),
                                "per_epoch": [{k: h[k] for k in KEEP if k in h} for h in hist]})
            save()


if __name__ == "__main__":
    main()
