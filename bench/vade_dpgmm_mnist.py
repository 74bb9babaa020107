"""MNIST-70k: VaDE, VAE + DP-GMM prior (K_max = 30), and a post-hoc DP mixture on an AE latent.

    python bench/vade_dpgmm_mnist.py --ae bench/_work/vade/ae_model [--vade-epochs 10] [--dp-epochs 6]
           [--parts posthoc,vade,dp]

--ae is a trained ae-kmeans artifact on MNIST with the DEC network (784-500-500-2000-10, MSE
reconstruction), e.g. the one bench/spine_mnist.py leaves in bench/_work/spine/run/model. VaDE and
the DP model load it (``model.pretrained``) instead of pretraining, so their decoders stay Gaussian
(recon: mse, recon_logvar: -4.6, i.e. σ² = 0.01). Writes bench/results/vade_dpgmm_mnist.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, RESULTS, dataset, save  # noqa: E402

import distclust  # noqa: E402,F401
from distclust import metrics as M  # noqa: E402
from distclust.data import ingest  # noqa: E402
from distclust.data.manifest import is_dataset  # noqa: E402
from distclust.dpgmm_posthoc import fit_dpgmm_artifact, label_report  # noqa: E402
from distclust.engine.trainer import run_training  # noqa: E402
from distclust.spec import load_spec  # noqa: E402

KEEP = ("stage", "epoch", "loss", "acc", "nmi", "ari", "acc_many_to_one", "completeness", "dp_active",
        "dp_components", "active_clusters", "time_s")


def curve(history):
    return [{k: h[k] for k in KEEP if k in h} for h in history]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None)
    ap.add_argument("--ae", default=str(ROOT / "bench" / "_work" / "vade" / "ae_model"))
    ap.add_argument("--vade-epochs", type=int, default=10)
    ap.add_argument("--dp-epochs", type=int, default=6)
    ap.add_argument("--k-max", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parts", default="posthoc,vade,dp")
    ap.add_argument("--machine", default="2-core CPU, shared")
    ap.add_argument("--posthoc-model", default=None,
                    help="artifact whose embeddings the post-hoc DP fits (default: --ae); e.g. a VaDE run's model")
    ap.add_argument("--posthoc-key", default="posthoc_dp_on_ae", help="result key of the post-hoc part")
    ap.add_argument("--cluster-scale", type=float, default=None,
                    help="post-hoc DP: prior within-cluster variance / data variance (default: sklearn's prior)")
    ap.add_argument("--dof-prior", type=float, default=None, help="post-hoc DP: strength of that prior (pseudo-rows)")
    ap.add_argument("--vade-key", default="vade",
                    help="result key of the VaDE part (one entry per seed under it); use a new key per setting")
    ap.add_argument("--dp-key", default="vae_dpgmm", help="result key of the in-training DP part")
    ap.add_argument("--set", action="append", default=[], help="extra spec overrides, e.g. scaling.cpus_per_worker=4")
    ap.add_argument("--work", default=str(ROOT / "bench" / "_work" / "vade"))
    a = ap.parse_args()
    src = a.data or str(dataset("mnist.npz"))
    work = Path(a.work)
    data = work / "mnist_parquet"
    if not is_dataset(data):
        ingest(src, data, shards=8, progress=False, overwrite=True)
    out_path = RESULTS / "vade_dpgmm_mnist.json"
    result = json.loads(out_path.read_text()) if out_path.is_file() else {}
    result.update({"machine": a.machine, "seed": a.seed, "pretrained_ae": a.ae,
                   "ae_config": json.loads(Path(a.ae, "config.json").read_text())["params"]})
    parts = a.parts.split(",")
    ae_pre = [f"model.pretrained={a.ae}", "model.recon=mse", "model.recon_logvar=-4.6", f"train.seed={a.seed}",
              "train.quiet=true", "train.eval_every=1", *a.set]

    if "posthoc" in parts:
        t = time.time()
        model = a.posthoc_model or a.ae
        res, z, y = fit_dpgmm_artifact(model, src, work / "posthoc", k_max=a.k_max, seed=a.seed,
                                       cluster_scale=a.cluster_scale, dof_prior=a.dof_prior)
        result[a.posthoc_key] = {
            "command": "python bench/vade_dpgmm_mnist.py " + " ".join(sys.argv[1:]), "model": model,
            "model_kind": json.loads(Path(model, "config.json").read_text())["model"],
            "cluster_scale": a.cluster_scale, "dof_prior": a.dof_prior,
            "k_max": a.k_max, "seconds": time.time() - t, **res.summary(), **label_report(res, z, y)}
        save("vade_dpgmm_mnist", result)

    if "vade" in parts:
        spec = load_spec(ROOT / "jobs" / "mnist-vade.yaml", ae_pre + [f"model.epochs={a.vade_epochs}"])
        r = run_training(spec, work / "run_vade", data=str(data), overwrite=True)
        result.setdefault(a.vade_key, {})[f"seed{a.seed}"] = {
                          "command": "python bench/vade_dpgmm_mnist.py " + " ".join(sys.argv[1:]),
                          "epochs": a.vade_epochs, "wall_s": r.wall_s,
                          "final": {k: r.metrics.get(k) for k in ("acc", "nmi", "ari")},
                          "per_epoch": curve(r.history)}
        save("vade_dpgmm_mnist", result)

    if "dp" in parts:
        spec = load_spec(ROOT / "jobs" / "mnist-vae-dpgmm.yaml",
                         ae_pre + [f"model.epochs={a.dp_epochs}", f"model.n_clusters={a.k_max}"])
        r = run_training(spec, work / "run_dp", data=str(data), overwrite=True)
        fm = distclust.load(r.model_dir)
        dp = fm.model.dp
        import numpy as np

        w = dp.weights().numpy()
        hist = curve(r.history)
        result[a.dp_key] = {
            "command": "python bench/vade_dpgmm_mnist.py " + " ".join(sys.argv[1:]), "overrides": a.set,
            "k_max": a.k_max, "epochs": a.dp_epochs, "wall_s": r.wall_s,
            "final": {k: r.metrics.get(k) for k in ("acc", "nmi", "ari", "acc_many_to_one", "active_clusters")},
            "final_completeness": next((h["completeness"] for h in reversed(hist) if "completeness" in h), None),
            "dp_active_final": int((w > 0.01).sum()), "dp_weights": sorted(w[w > 1e-4].round(4).tolist(), reverse=True),
            "per_epoch": hist}
        save("vade_dpgmm_mnist", result)


if __name__ == "__main__":
    main()
