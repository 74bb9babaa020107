"""VaDE and VAE + DP-GMM on MNIST-70k in ONE process (no Ray): for a GPU machine without Ray.

    python bench/vade_dpgmm_inprocess.py --data mnist.npz --seeds 0 1 2 [--device cuda]
           [--ae AE_MODEL_DIR] [--pretrain-epochs 30] [--vade-epochs 50] [--dp-epochs 20] [--out DIR]

Trains through the product's in-process path (``distclust.engine.inprocess.train_inprocess``:
the one loop of ``engine/loop.py`` with world size 1, the loop the Ray Train workers run), label
metrics every epoch (``train.eval_every: 1``). Per seed: pretrain the d-500-500-2000-10
autoencoder (Bernoulli decoder, as VaDE's paper; a VaDE job with 0 VaDE epochs, saved as an
artifact), then VaDE and vae-dpgmm (K_max = 30) each from that autoencoder (``model.pretrained``).
With ``--ae`` (an ae-kmeans artifact, MSE decoder) an extra VaDE run starts from it (recon: mse,
σ² = 0.01). Pixels are scaled by ``data.normalize: global-minmax`` (x / 255 on MNIST).
The distribution itself is covered by tests/test_dpgmm.py / tests/test_vade.py and by
bench/vade_dpgmm_mnist.py (2 Ray workers). Writes DIR/vade_dpgmm_inprocess.json after every run.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORK, command, reset_work, spec_from  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from distclust.engine.inprocess import train_inprocess  # noqa: E402

KEEP = ("stage", "epoch", "loss", "acc", "nmi", "ari", "acc_many_to_one", "completeness", "dp_active",
        "dp_components", "active_clusters", "time_s", "pretrained_loaded", "dp_sample_rows")


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
    ap.add_argument("--work", default=str(WORK / "vade_dpgmm_inprocess"))
    a = ap.parse_args()
    device = torch.device(a.device)
    d = np.load(a.data)
    X = d["X"][:a.rows].astype(np.float32)
    y = d["y"][:a.rows].astype(np.int64)
    out = Path(a.out)
    name = out.name if out.suffix == ".json" else "vade_dpgmm_inprocess.json"
    out = out.parent if out.suffix == ".json" else out
    out.mkdir(parents=True, exist_ok=True)
    work = reset_work(a.work)
    res = {"command": command("vade_dpgmm_inprocess.py"),
           "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", "rows": len(X),
           "engine": "train_inprocess (engine/loop.py, world size 1: the loop the Ray workers run)", "runs": []}

    def save():
        (out / name).write_text(json.dumps(res, indent=1, default=float))

    def train(model: dict, seed: int, out_dir=None):
        spec = spec_from(model, {"batch_size": a.batch_size, "seed": seed, "eval_every": 1, "checkpoint_every": 1000},
                         normalize="global-minmax", name=f"mnist-{model['name']}")
        r = train_inprocess(spec, X=X, y=y, device=device, out_dir=out_dir, quiet=False)
        for h in r.history:
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in h.items() if k in KEEP}, flush=True)
        return r

    base = {"n_clusters": 10, "latent_dim": 10, "hidden": a.hidden, "gmm_sample": 70000}
    for seed in a.seeds:
        # one autoencoder per seed (Bernoulli decoder), shared by VaDE and vae-dpgmm
        pre = train({"name": "vade", **base, "recon": "bce", "pretrain_epochs": a.pretrain_epochs, "epochs": 0},
                    seed, out_dir=work / f"ae-seed{seed}")
        t_pre = next((h["train_time_s"] for h in pre.history if h["stage"] == "done"), pre.wall_s)
        runs = [("vade", {**base, "recon": "bce", "epochs": a.vade_epochs, "lr": 0.002}, None),
                ("vae-dpgmm", {**base, "n_clusters": a.k_max, "recon": "bce", "epochs": a.dp_epochs, "lr": 0.001,
                               "dp_sample": 20000}, None)]
        if a.no_damping_ablation:
            runs.append(("vae-dpgmm", {**runs[1][1], "dp_damping": 1.0, "dp_prune": 0.0}, "undamped"))
        if a.ae and seed == a.seeds[0]:
            runs.append(("vade", {**base, "recon": "mse", "recon_logvar": -4.6, "epochs": a.vade_epochs,
                                  "lr": 0.002, "pretrained": a.ae}, "spine-ae"))
        for mname, over, tag in runs:
            pretrained = str(pre.model_dir) if tag in (None, "undamped") else over["pretrained"]
            r = train({"name": mname, **over, "pretrained": pretrained, "pretrain_epochs": 0}, seed)
            hist, model = r.history, r.model
            last = [h for h in hist if h["stage"] != "done"][-1]
            final = {**last, **hist[-1]}      # the last epoch's DP figures, the closing record's label metrics
            cont = None
            if mname == "vae-dpgmm":
                w = model.dp.weights().cpu().numpy()
                cont = {"dp_active_final": int((w > 0.01).sum()),
                        "dp_weights": sorted(w[w > 1e-4].round(4).tolist(), reverse=True)}
            res["runs"].append({"model": mname, "seed": seed, "variant": tag or "own AE (bce)",
                                "params": {k: v for k, v in over.items() if k.startswith("dp_") or k in
                                           ("epochs", "lr", "recon", "n_clusters")}, "pretrain_s": t_pre,
                                "train_s": r.wall_s,
                                "final": {k: final.get(k) for k in ("acc", "nmi", "ari", "acc_many_to_one",
                                                                     "completeness", "dp_active", "active_clusters")},
                                **(cont or {}),
                                "per_epoch": [{k: h[k] for k in KEEP if k in h} for h in hist]})
            save()


if __name__ == "__main__":
    main()
