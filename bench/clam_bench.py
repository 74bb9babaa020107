"""ClAM / deep ClAM against Lloyd's k-means (FAISS, same K, best of 10 k-means++ restarts).

    python bench/clam_bench.py [--parts digits,mnist,fashion,scaling] [--rows 10000] [--epochs 10]

- digits (full 1,797 rows): jobs/digits-clam.yaml and jobs/digits-deep-clam.yaml through
  run_training (real Ray, 2 workers), then the artifact's predict; k-means on the same space
  (pixels / 16 for ClAM; the trained deep-ClAM latent for deep ClAM).
- MNIST / Fashion-MNIST raw pixels (pixels / 255): a seeded subsample of ``--rows`` rows,
  ClAM trained with ``train_inprocess`` (the product's loop in this process: the loop the
  Ray workers run), memories seeded from a sample of rows (``init: sample``).
- mnist-latent / fashion-latent: the same on a trained autoencoder's latent (``--mnist-ae`` /
  ``--fashion-ae``), standardised per dimension; ``--rows 0`` uses all 70,000 rows.
- scaling: time of one training epoch (forward + backward + Adam, the record's ``time_s``) as
  N, k and T grow (``train_inprocess``, 1 thread, random data).

Silhouette is computed on the clustering space of each row (same features for both methods).
Writes bench/results/clam.json.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, WORK, command, dataset, save, spec_from  # noqa: E402

import torch  # noqa: E402

import distclust  # noqa: E402
from distclust import faiss_ops  # noqa: E402
from distclust.metrics import cluster_scores  # noqa: E402


def scores(X, labels, y, seed=0, sil_rows=10000):
    from sklearn.metrics import silhouette_score

    s = cluster_scores(labels, y)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(X), min(sil_rows, len(X)), replace=False)
    ok = len(set(labels[idx].tolist())) > 1
    s = {k: float(s[k]) for k in ("acc", "nmi", "ari")}
    s["silhouette"] = float(silhouette_score(X[idx], labels[idx])) if ok else float("nan")
    s["clusters_used"] = int(len(set(labels.tolist())))
    return s


def kmeans_scores(X, y, k, seed=0):
    t = time.time()
    c, _ = faiss_ops.kmeans(X, k, seed=seed, niter=100, nredo=10)
    lab, _ = faiss_ops.NearestPrototype(c, use_gpu=False).search(X)
    return {**scores(X, lab, y, seed), "seconds": time.time() - t}


def train_inprocess(X, k, params: dict, epochs, batch=256, seed=0, threads=None, init=True):
    """ClAM through the product's in-process loop (``train_inprocess``: the loop each Ray worker runs),
    on ``X`` as given (``data.normalize: none``). Returns the model, the labels after seeding (the
    same seeded ``init`` stage, no epochs; None without ``init``), the final labels, the seconds and the per-epoch step times."""
    from distclust.engine.inprocess import train_inprocess as run

    def spec(n_epochs):
        return spec_from({"name": "clam", "n_clusters": k, "epochs": n_epochs, **params},
                         {"batch_size": batch, "seed": seed, "eval_every": 0, "quiet": True})

    Xt = torch.from_numpy(X)
    init_lab = run(spec(0), X=X, threads=threads).model.predict_dynamics(Xt).numpy() if init else None
    res = run(spec(epochs), X=X, threads=threads)
    per_epoch = [h["time_s"] for h in res.history if h.get("stage") == "clam" and h.get("epoch", 0) > 0]
    return res.model, init_lab, res.model.predict_dynamics(Xt).numpy(), res.wall_s, per_epoch


def raw_image_part(name, npz, rows, epochs, seed, params, ae=None):
    """Raw pixels / 255, or (``ae``: a trained autoencoder artifact) its latent, standardised per
    dimension so that one β means the same on any latent."""
    d = np.load(dataset(npz))
    X, y = d["X"].astype(np.float32), d["y"].astype(np.int64)
    rng = np.random.default_rng(seed)
    if rows and rows < len(X):
        idx = np.sort(rng.choice(len(X), rows, replace=False))
        X, y = X[idx], y[idx]
    if ae:
        Z = distclust.load(ae).transform(X)
        X, space = ((Z - Z.mean(0)) / Z.std(0)).astype(np.float32), f"AE latent of {ae}, standardised"
    else:
        X, space = X / 255.0, "pixels / 255"
    out = {"rows": int(len(X)), "dim": int(X.shape[1]), "space": space, "kmeans": kmeans_scores(X, y, 10, seed)}
    for tag, prm in params.items():
        m, lab0, lab, secs, per_epoch = train_inprocess(X, 10, prm, epochs, seed=seed)
        out[f"clam_{tag}"] = {**scores(X, lab, y, seed), "params": prm, "epochs": epochs, "seconds": secs,
                              "s_per_epoch": float(np.median(per_epoch)),
                              "init": scores(X, lab0, y, seed),
                              "nearest_prototype_agreement": float(
                                  (m.predict_nearest(torch.from_numpy(X)).numpy() == lab).mean())}
        print(name, tag, out[f"clam_{tag}"], flush=True)
    print(name, "kmeans", out["kmeans"], flush=True)
    return out


def digits_part(seed, work, jobs=("digits-clam", "digits-deep-clam"), out=None):
    from sklearn.datasets import load_digits

    from distclust.engine.trainer import run_training
    from distclust.spec import load_spec

    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32)
    out = dict(out or {})
    out.update({"rows": int(len(X)), "dim": int(X.shape[1])})
    Xn = X / 16.0
    out["kmeans_pixels"] = kmeans_scores(Xn, y, 10, seed)
    for job in jobs:
        spec = load_spec(ROOT / "jobs" / f"{job}.yaml", [f"train.seed={seed}", "train.quiet=true"])
        run_dir = work / job
        shutil.rmtree(run_dir, ignore_errors=True)
        t = time.time()
        res = run_training(spec, run_dir)
        wall = time.time() - t
        model = distclust.load(res.model_dir)
        lab = model.predict(X)
        Z = model.transform(X)
        r = {**scores(Z, lab, y, seed), "train_wall_s": wall, "space": "pixels / 16" if job == "digits-clam"
             else "deep-ClAM latent", "history_init": [h for h in res.history if h.get("stage") == "init"]}
        if job == "digits-deep-clam":  # k-means on the same (trained) latent, and on the pixels
            r["kmeans_same_latent"] = kmeans_scores(Z, y, 10, seed)
            r["silhouette_in_pixels"] = scores(Xn, lab, y, seed)["silhouette"]
        out[job] = r
        print(job, r, flush=True)
    return out


def scaling_part(seed):
    """Seconds per epoch (forward + backward + Adam) of ClAM's loss as N, k, T grow (1 thread)."""
    torch.set_num_threads(1)
    d = 128
    rng = np.random.default_rng(seed)
    base = dict(N=8000, k=10, T=10)
    grid = {"N": [4000, 8000, 16000], "k": [10, 20, 40], "T": [5, 10, 20]}
    out = {"dim": d, "batch": 256, "base": base, "threads": 1}
    for key, values in grid.items():
        rows = []
        for v in values:
            cfg = {**base, key: v}
            X = rng.normal(size=(cfg["N"], d)).astype(np.float32)
            prm = dict(beta=0.05, steps=cfg["T"], alpha=0.5, mask_prob=0.2, lr=0.01)
            times = []
            for rep in range(3):
                _, _, _, secs, per_epoch = train_inprocess(X, cfg["k"], prm, 1, seed=seed + rep, threads=1,
                                                           init=False)
                times.append(per_epoch[0])
            rows.append({key: v, "s_per_epoch": float(min(times))})
        t0 = rows[0]["s_per_epoch"]
        for r in rows:
            r["ratio"] = r["s_per_epoch"] / t0
            r["size_ratio"] = r[key] / rows[0][key]
        out[key] = rows
        print("scaling", key, rows, flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="digits,mnist,fashion,scaling")
    ap.add_argument("--rows", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", default="beta0.1,beta0.3", help="ClAM settings run on MNIST / Fashion")
    ap.add_argument("--digits-jobs", default="digits-clam,digits-deep-clam")
    ap.add_argument("--machine", default="2-core CPU (shared with other jobs), no GPU")
    ap.add_argument("--mnist-ae", default=None, help="autoencoder artifact for the mnist-latent part")
    ap.add_argument("--fashion-ae", default=None, help="autoencoder artifact for the fashion-latent part")
    ap.add_argument("--out-name", default="clam", help="result file bench/results/NAME.json (parts merge into it)")
    a = ap.parse_args()
    parts = a.parts.split(",")
    torch.set_num_threads(2)
    work = WORK / "clam"
    work.mkdir(parents=True, exist_ok=True)
    import json

    from common import RESULTS

    old = RESULTS / f"{a.out_name}.json"   # parts run separately are merged into one result file
    res = json.loads(old.read_text()) if old.is_file() else {}
    res.setdefault("commands", {})
    for part in parts:
        res["commands"][part] = command("clam_bench.py")
    res.update({"seed": a.seed})
    res.setdefault("machine_by_part", {}).update({part: a.machine for part in parts})
    params = {"beta0.1": dict(beta=0.1, steps=10, alpha=0.5, mask_prob=0.2, lr=0.01),
              "beta0.3": dict(beta=0.3, steps=10, alpha=0.5, mask_prob=0.2, lr=0.01),
              "beta1.0": dict(beta=1.0, steps=10, alpha=0.5, mask_prob=0.2, lr=0.01)}
    params = {k: v for k, v in params.items() if k in a.variants.split(",")}
    t = time.time()
    if "scaling" in parts:
        res["scaling"] = scaling_part(a.seed)
        save(a.out_name, res)
    torch.set_num_threads(2)
    if "digits" in parts:
        res["digits"] = digits_part(a.seed, work, a.digits_jobs.split(","), res.get("digits"))
        save(a.out_name, res)
    if "mnist" in parts:
        res["mnist"] = raw_image_part("mnist", "mnist.npz", a.rows, a.epochs, a.seed, params)
        save(a.out_name, res)
    if "fashion" in parts:
        res["fashion"] = raw_image_part("fashion", "fashion_mnist.npz", a.rows, a.epochs, a.seed, params)
    for name, npz, ae in (("mnist", "mnist.npz", a.mnist_ae), ("fashion", "fashion_mnist.npz", a.fashion_ae)):
        if f"{name}-latent" in parts:
            res[f"{name}_latent"] = raw_image_part(f"{name}-latent", npz, a.rows, a.epochs, a.seed, params, ae)
            save(a.out_name, res)
    res.setdefault("seconds", {})[a.parts] = time.time() - t
    save(a.out_name, res)


if __name__ == "__main__":
    main()
