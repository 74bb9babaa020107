"""GMVAE quality on MNIST, K = 10: ACC / NMI on all 70k rows and the test-split ELBO.

    python bench/gmvae_quality.py [--epochs 3] [--single-epochs 3] [--seed 0] [--variants ...]

Each variant trains through the spine (``run_training``: Ray Train, 2 workers × 1 CPU,
sharded Parquet) from ``jobs/mnist-<variant>.yaml`` on the 60,000-row training split
(MNIST's first 60k rows); ``--epochs`` for the marginalised model, ``--single-epochs``
for the Gumbel and Concrete ones (the Concrete KL weight ramps 0 → 1 over the first
``--kl-anneal-frac`` of its epochs). ``--engine inprocess`` trains with ``train_inprocess``
instead (the same loop in this process, 1 thread, ACC / NMI on the training rows every epoch).
Then, in-process on the artifact:

- ACC (Hungarian) / NMI of argmax q(y|x) on all 70,000 rows;
- the test-split ELBO: the marginalised bound (exact sum over y, one z sample per y)
  on the 10,000 held-out rows, in nats on pixels / 255 (Bernoulli) — the same bound
  for every variant, since they share the generative model and inference networks;
- how often FAISS nearest-component-mean assignment of the latent mean
  (``IndexFlatL2`` over mu_y) agrees with argmax q(y|x);
- a PNG grid of 8 samples per component under docs/img/.

Writes bench/results/gmvae_quality.json (``--out-name`` to change).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, WORK, command, dataset, save, training_split  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import distclust  # noqa: E402
from distclust.engine.inprocess import train_inprocess  # noqa: E402
from distclust.engine.trainer import run_training  # noqa: E402
from distclust.faiss_ops import NearestPrototype  # noqa: E402
from distclust.metrics import cluster_scores  # noqa: E402
from distclust.report.plots import sample_grid_png  # noqa: E402
from distclust.spec import load_spec  # noqa: E402

VARIANTS = ["concrete-gmvae", "gmvae-gumbel", "gmvae"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None)
    ap.add_argument("--epochs", type=int, default=3, help="marginalised GMVAE epochs")
    ap.add_argument("--single-epochs", type=int, default=3, help="Gumbel / Concrete epochs")
    ap.add_argument("--kl-anneal-frac", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-rows", type=int, default=60000, help="rows before this are the training split")
    ap.add_argument("--variants", nargs="+", default=VARIANTS)
    ap.add_argument("--engine", choices=["ray", "inprocess"], default="ray",
                    help="ray: run_training (Ray Train, 2 workers); inprocess: train_inprocess (the same loop in "
                         "this process, 1 thread, ACC/NMI every epoch; no Ray start-up: for an overloaded machine)")
    ap.add_argument("--img-dir", default=str(ROOT / "docs" / "img"), help="where the sample-grid PNGs go")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="spec overrides for every variant, e.g. model.latent_dim=64 train.batch_size=64")
    ap.add_argument("--work", default=str(WORK / "gmvae"))
    ap.add_argument("--out-name", default="gmvae_quality",
                    help="result file bench/results/NAME.json (one per process when variants run side by side)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    work = Path(a.work)
    X, y = training_split(a.data or dataset("mnist.npz"), a.train_rows, work)
    img_dir = Path(a.img_dir)
    img_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for v in a.variants:
        epochs = a.epochs if v == "gmvae" else a.single_epochs
        over = [f"model.epochs={epochs}", f"train.seed={a.seed}", "train.quiet=true",
                f"train.eval_every={1 if a.engine == 'inprocess' else epochs}", f"train.checkpoint_every={epochs}"]
        if v == "concrete-gmvae":
            over += ["model.kl_warmup_epochs=0", f"model.kl_anneal_epochs={a.kl_anneal_frac * epochs}"]
        spec = load_spec(ROOT / "jobs" / f"mnist-{v}.yaml", over + list(a.set))
        t = time.time()
        if a.engine == "ray":
            res = run_training(spec, work / f"run-{v}", data=str(work / "data"))
            model, history = distclust.load(res.model_dir).model, res.history
        else:
            r = train_inprocess(spec, X=X[:a.train_rows], y=y[:a.train_rows], quiet=False, threads=1)
            model, history = r.model, r.history
        wall = time.time() - t
        model.eval()
        with torch.no_grad():
            Xa = torch.from_numpy(X)
            proba = torch.cat([model.predict_proba(Xa[i:i + 4096]) for i in range(0, len(Xa), 4096)]).numpy()
            pred = proba.argmax(1)
            sc = cluster_scores(pred, y)
            Xt = torch.from_numpy(X[a.train_rows:])
            elbo = float(np.mean([model.elbo(Xt[i:i + 2000], seed=a.seed).mean().item()
                                  for i in range(0, len(Xt), 2000)]))
            z = torch.cat([model.embed(Xa[i:i + 4096]) for i in range(0, len(Xa), 4096)]).numpy()
            mus = model.component_means().detach().cpu().numpy().astype(np.float32)
            near, _ = NearestPrototype(mus).search(z)
            near = np.asarray(near).reshape(-1)
        png = img_dir / f"gmvae-{v}-mnist.png"
        sample_grid_png(model, png, n_per_component=8, seed=a.seed)
        train = [h for h in history if h.get("stage") == "train"]
        results[v] = {
            "epochs": epochs, "train_wall_s": wall, "s_per_epoch": float(np.mean([h["time_s"] for h in train])),
            "acc": sc["acc"], "nmi": sc["nmi"], "ari": sc.get("ari"),
            "test_elbo_nats": elbo, "clusters_used": int(len(np.unique(pred))),
            "faiss_nearest_mean_agrees_with_argmax_q": float((near == pred).mean()),
            "last_epoch": {k: v2 for k, v2 in train[-1].items() if isinstance(v2, (int, float))},
            "png": str(png.relative_to(ROOT) if png.is_relative_to(ROOT) else png),
            "per_epoch": [{k: h[k] for k in ("epoch", "loss", "acc", "nmi", "time_s") if k in h} for h in train],
        }
        print(v, {k: results[v][k] for k in ("acc", "nmi", "test_elbo_nats", "train_wall_s")}, flush=True)
        save(a.out_name, {
            "command": command("gmvae_quality.py"),
            "machine": "2-core CPU shared with other jobs; " + ("Ray Train 2 workers × 1 CPU" if a.engine == "ray"
                                                                 else "in-process, 1 torch thread"),
            "engine": a.engine,
            "train_rows": a.train_rows, "eval_rows": len(X), "test_rows": len(X) - a.train_rows, "seed": a.seed,
            "k": 10, "overrides": list(a.set), "results": results,
            "goals": {"acc_min": 0.86, "concrete_within_points_of_marginalised": 1.0},
        })


if __name__ == "__main__":
    main()
