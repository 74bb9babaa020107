"""Manifold clustering (autoencoder → UMAP → Gaussian mixture, learned head) benchmarks.

    # quality: distclust train + assign + evaluate, beside AE + k-means on the same autoencoder
    python bench/manifold.py quality --dataset mnist --ae RUN/model --seeds 0 1 2
    # the label-free n_neighbors rule on real embeddings (labels only to report what it chose)
    python bench/manifold.py select --dataset mnist --ae RUN/model --candidates 5 10 20 40
    # AE + k-means on a manifold run's own autoencoder (digits: the job trains it) beside the run
    python bench/manifold.py kmeans-baseline --dataset digits --run RUN/model
    # is the rule reproducible, and which rows did a training run's rule see (rebuilt in process)?
    python bench/manifold.py repro --dataset fashion_mnist --ae RUN/model --seed 0
    # UMAP fit time and peak memory (one fresh process per size)
    python bench/manifold.py umap-scale --rows 20000 100000 200000
    # distclust assign rows/s: encoder + head + mixture vs encoder + FAISS (ae-kmeans), same encoder
    python bench/manifold.py assign-bound --ae RUN/model       # in-process, one thread, per batch
    python bench/manifold.py assign-scale --rows 1000000 10000000

``--ae`` is an ae-kmeans artifact trained on the same data (jobs/mnist-ae-kmeans.yaml): the manifold
runs load its autoencoder (model.pretrained) and its own k-means is the AE + k-means baseline; more
baseline seeds re-run FAISS k-means (the job's settings) on its embeddings. Every result lands in
bench/results/manifold_*.json as soon as it is measured.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, RESULTS, dataset, save  # noqa: E402
sys.path.insert(0, str(ROOT))   # this checkout's distclust, not an installed one

KEYS = ("acc", "nmi", "ari")


def cli(*args) -> str:
    r = subprocess.run([sys.executable, "-m", "distclust.cli", *map(str, args)], cwd=ROOT, capture_output=True,
                       text=True)
    if r.returncode:
        raise SystemExit(f"distclust {' '.join(map(str, args))} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r.stdout


def assign_evaluate(model: Path, data: Path, out: Path) -> dict:
    t = time.time()
    cli("assign", model, data, out, "--overwrite", "--quiet")
    assign_s = time.time() - t
    cli("evaluate", out, data, "--json", out.with_suffix(".eval.json"))
    ev = json.loads(out.with_suffix(".eval.json").read_text())
    return {**{k: ev.get(k) for k in KEYS}, "assign_s": assign_s}


def ingested(name: str, work: Path) -> Path:
    from distclust.data import ingest, is_dataset

    data = work / f"{name}-data"
    if not is_dataset(data):
        ingest(dataset(f"{name}.npz"), data, shards=8, overwrite=True, progress=False)
    return data


def quality(a) -> None:
    import distclust
    from distclust import faiss_ops

    work = Path(a.work)
    data = ingested(a.dataset, work)
    ae = Path(a.ae).resolve()
    name = a.name or f"manifold_quality_{a.dataset}"
    path = RESULTS / f"{name}.json"
    res = json.loads(path.read_text()) if path.is_file() and a.append else {}
    res.update({"command": "python bench/manifold.py " + " ".join(sys.argv[1:]), "machine": "2-core CPU (shared)",
                "job": a.job, "overrides": a.set, "pretrained": str(ae)})
    fm = distclust.load(ae)
    pre = [h for h in fm.history if h.get("stage") == "pretrain" and h.get("stage_epochs")]
    res["autoencoder"] = {"pretrain_epochs": len(pre), "recon": pre[-1].get("loss") if pre else None}
    res.setdefault("ae_kmeans", {})
    res.setdefault("manifold", {})
    if "assigned_seed0" not in res["ae_kmeans"]:
        res["ae_kmeans"]["assigned_seed0"] = assign_evaluate(ae, data, work / f"{a.dataset}-aekm-assign")
        save(name, res)
    d = np.load(dataset(f"{a.dataset}.npz"))
    X, y = d["X"].astype(np.float32), d["y"]
    Z = fm.transform(X)
    from distclust.metrics import cluster_scores

    for seed in a.seeds:
        key = f"seed{seed}"
        if key not in res["ae_kmeans"]:
            c, _ = faiss_ops.kmeans(Z, fm.n_clusters_, seed=seed, niter=fm.model.params.kmeans_niter,
                                    nredo=fm.model.params.kmeans_nredo)
            lab, _ = faiss_ops.NearestPrototype(c, use_gpu=False).search(Z)
            res["ae_kmeans"][key] = {k: cluster_scores(lab, y)[k] for k in KEYS}
            save(name, res)
        if key in res["manifold"]:
            continue
        run = work / f"{a.dataset}-manifold-seed{seed}"
        t = time.time()
        cli("train", ROOT / "jobs" / a.job, "--data", data, "--out", run, "--overwrite", "--quiet",
            "--set", f"model.pretrained={ae}", "--set", "model.pretrain_epochs=0", "--set", f"train.seed={seed}",
            *[x for s in a.set for x in ("--set", s)])
        train_s = time.time() - t
        hist = json.loads((run / "model" / "history.json").read_text())
        fit = next(h for h in hist if h.get("stage") == "manifold")
        agree = next(h for h in hist if h.get("stage") == "agreement")
        r = assign_evaluate(run / "model", data, work / f"{a.dataset}-manifold-seed{seed}-assign")
        res["manifold"][key] = {**r, "train_s": train_s,
                                **{k: v for k, v in fit.items() if k.startswith(("n_neighbors", "select_score",
                                                                                "umap_fit_s", "manifold_"))},
                                **{k: v for k, v in agree.items() if k.startswith("head_")}}
        save(name, res)
    for part in ("ae_kmeans", "manifold"):
        runs = [v for k, v in res[part].items() if k.startswith("seed")]
        res[f"{part}_mean"] = {k: float(np.mean([r[k] for r in runs])) for k in KEYS} | {"seeds": len(runs)}
        res[f"{part}_std"] = {k: float(np.std([r[k] for r in runs])) for k in KEYS}
    save(name, res)


def select(a) -> None:
    """The rule on the real embedding; labels only score what each candidate would have given."""
    import distclust
    from distclust.metrics import cluster_scores
    from distclust.models.manifold import ManifoldParams, select_n_neighbors
    from distclust.spec import load_spec

    spec = load_spec(ROOT / "jobs" / a.job, a.set)
    p: ManifoldParams = spec.model
    d = np.load(dataset(f"{a.dataset}.npz"))
    fm = distclust.load(a.ae)
    Z = fm.transform(d["X"].astype(np.float32)).astype(np.float64)
    rng = np.random.default_rng(a.seed + 29)   # the subset select_n_neighbors draws
    idx = np.sort(rng.choice(len(Z), p.select_sample, replace=False)) if len(Z) > p.select_sample else None
    t = time.time()
    sel = select_n_neighbors(Z, a.candidates, p, a.seed)
    y = d["y"] if idx is None else d["y"][idx]
    acc = {f"{c}-seed{s}": cluster_scores(v, y)["acc"] for (c, s), v in sel["partitions"].items()}
    res = {"command": "python bench/manifold.py " + " ".join(sys.argv[1:]), "dataset": a.dataset,
           "rows": sel["rows"], "select_seeds": p.select_seeds, "n_components": p.n_components,
           "min_dist": p.min_dist, "seconds": time.time() - t, "chosen": sel["best"], "scores": sel["scores"],
           "stability": sel["stability"], "acc_on_subset_per_run": acc,
           "acc_mean_per_candidate": {c: float(np.mean([v for k, v in acc.items() if k.startswith(f"{c}-")]))
                                      for c in sel["scores"]}}
    save(f"manifold_select_{a.dataset}", res)


def repro(a) -> None:
    """Is the label-free rule reproducible, and what did a training run's rule see? (1) the rule twice on
    the same rows (all rows in dataset order, the seed's subset); (2) the rows a ``distclust train`` run's
    rule sees, rebuilt in this process: each rank's shard files (``split_files`` over the ingested data,
    ``--workers`` ranks) in id order, concatenated in rank order, minus the seeded holdout — as
    ``Manifold.fit_manifold`` builds them. (2) must give the training run's ``select_score_*``."""
    import torch

    import distclust
    import pyarrow.parquet as pq
    from distclust.data import Manifest, split_files
    from distclust.models.manifold import ManifoldParams, select_n_neighbors
    from distclust.spec import load_spec

    p: ManifoldParams = load_spec(ROOT / "jobs" / a.job, a.set).model
    torch.set_num_threads(1)
    X = np.load(dataset(f"{a.dataset}.npz"))["X"].astype(np.float32)
    Z = distclust.load(a.ae).transform(X)
    cands = sorted(set(p.select_n_neighbors))
    res = {"command": "python bench/manifold.py " + " ".join(sys.argv[1:]), "dataset": a.dataset, "seed": a.seed,
           "select_sample": p.select_sample, "select_seeds": p.select_seeds}

    def rule(z):
        t = time.time()
        sel = select_n_neighbors(z.astype(np.float64), cands, p, a.seed)
        return {"chosen": sel["best"], "scores": sel["scores"], "seconds": time.time() - t}

    res["dataset_order"] = [rule(Z), rule(Z)]
    res["same_rows_same_result"] = res["dataset_order"][0]["scores"] == res["dataset_order"][1]["scores"]
    save(f"manifold_repro_{a.dataset}", res)
    data = ingested(a.dataset, Path(a.work))
    ids = [np.sort(np.concatenate([pq.read_table(f, columns=["id"])["id"].to_numpy() for f in files]))
           for files, _ in split_files(Manifest.load(data), data, a.workers)]
    z_all = Z[np.concatenate(ids)]
    n_hold = min(p.holdout, len(z_all) // 5)
    perm = np.random.default_rng(a.seed + 17).permutation(len(z_all))   # Manifold.fit_manifold's holdout
    res["training_rows"] = {"workers": a.workers, "rows": len(z_all) - n_hold, **rule(z_all[perm[n_hold:]])}
    save(f"manifold_repro_{a.dataset}", res)


def kmeans_baseline(a) -> None:
    """AE + k-means on a trained manifold run's own autoencoder (FAISS k-means on its embedding, the
    ae-kmeans job's settings, several seeds) beside the run's assigned clusters: the side-by-side the
    quality table gives for MNIST, for runs that trained their autoencoder in the same job (digits)."""
    import torch

    import distclust
    from distclust import faiss_ops
    from distclust.metrics import cluster_scores

    if a.dataset == "digits":
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
    else:
        d = np.load(dataset(f"{a.dataset}.npz"))
        X, y = d["X"], d["y"]
    X = X.astype(np.float32)
    fm = distclust.load(a.run)
    with torch.no_grad():
        Z = fm.model.ae_embed(torch.from_numpy(X)).numpy()
    res = {"command": "python bench/manifold.py " + " ".join(sys.argv[1:]), "dataset": a.dataset,
           "run": str(a.run), "kmeans": {"niter": 100, "nredo": 20},
           "manifold_predict": {k: cluster_scores(fm.predict(X), y)[k] for k in KEYS}, "ae_kmeans": {}}
    for seed in a.seeds:
        c, _ = faiss_ops.kmeans(Z, fm.n_clusters_, seed=seed, niter=100, nredo=20)
        lab, _ = faiss_ops.NearestPrototype(c, use_gpu=False).search(Z)
        res["ae_kmeans"][f"seed{seed}"] = {k: cluster_scores(lab, y)[k] for k in KEYS}
    save(f"manifold_kmeans_baseline_{a.dataset}", res)


UMAP_PROBE = r"""
import json, resource, sys, time
import numpy as np
rows, dim, nn, seed = map(int, sys.argv[1:5])
rng = np.random.default_rng(seed)
centers = rng.normal(0, 4, (10, dim))
Z = centers[rng.integers(0, 10, rows)] + rng.normal(0, 1, (rows, dim))
from distclust.models.manifold import ManifoldParams, fit_umap
fit_umap(Z[:2000], 10, ManifoldParams(n_components=10), 0)   # numba compilation, not timed
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.time()
fit_umap(Z, nn, ManifoldParams(n_components=10, min_dist=0.0), seed)
print(json.dumps({"rows": rows, "fit_s": time.time() - t, "peak_rss_mib": resource.getrusage(
    resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_before_fit_mib": base}))
"""


def umap_scale(a) -> None:
    path = RESULTS / "manifold_umap_scale.json"
    res = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
    res.update({"command": "python bench/manifold.py " + " ".join(sys.argv[1:]),
                "what": "umap-learn fit (seeded, single-threaded), 10-d embeddings → 10-d, n_neighbors "
                        f"{a.n_neighbors}, min_dist 0; peak RSS of the fitting process"})
    for rows in a.rows:
        r = subprocess.run([sys.executable, "-c", UMAP_PROBE, str(rows), "10", str(a.n_neighbors), "0"], cwd=ROOT,
                           capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(r.stderr[-3000:])
        res["runs"][str(rows)] = json.loads(r.stdout.strip().splitlines()[-1])
        save("manifold_umap_scale", res)


def inmemory(a) -> None:
    """N2D as published, in memory: UMAP of ALL rows' embeddings + a full-covariance mixture, per
    n_neighbors, scored by labels. No head, no assign: the ceiling the product's path is measured against."""
    import distclust
    import umap
    from sklearn.mixture import GaussianMixture

    from distclust.metrics import cluster_scores

    d = np.load(dataset(f"{a.dataset}.npz"))
    Z = distclust.load(a.ae).transform(d["X"].reshape(len(d["X"]), -1).astype(np.float32))
    res = {"command": "python bench/manifold.py " + " ".join(sys.argv[1:]), "dataset": a.dataset, "rows": len(Z),
           "what": "umap-learn (10-d, min_dist 0, seed 0) on all rows + GaussianMixture(full, seed 0); labels score it",
           "runs": {}}
    for nn in a.n_neighbors:
        t = time.time()
        U = umap.UMAP(n_neighbors=nn, n_components=10, min_dist=0.0, random_state=a.seed).fit_transform(Z)
        pred = GaussianMixture(10, covariance_type="full", random_state=a.seed).fit(U).predict(U)
        sc = cluster_scores(pred, d["y"])
        res["runs"][str(nn)] = {k: float(sc[k]) for k in ("acc", "nmi", "ari")} | {"seconds": time.time() - t}
        save(f"manifold_inmemory_{a.dataset}", res)


def make_manifold(path: Path, ae_dir: Path, head_hidden: list[int]) -> Path:
    """A manifold artifact with ae_dir's encoder, a random head and a random 10-component mixture."""
    import torch

    import distclust
    from distclust.artifact import save_artifact
    from distclust.models import get_model_class
    from distclust.validation import build

    ae = distclust.load(ae_dir).model
    cls = get_model_class("manifold")
    p = build(cls.Params, {"n_clusters": 10, "latent_dim": 10, "hidden": list(ae.params.hidden),
                           "head_hidden": head_hidden, "manifold_sample": 1000}, "model")
    torch.manual_seed(0)
    m = cls(ae.input_dim, p)
    m.ae.load_state_dict(ae.ae.state_dict())
    m.normalizer.load_state_dict(ae.normalizer.state_dict())
    m.gmm_means.copy_(torch.randn(10, 10, dtype=torch.float64) * 3)
    m.is_fitted.fill_(True)
    save_artifact(m, path, data_info={})
    return path


def assign_scale(a) -> None:
    import shutil

    from assign_scale import generate, make_model

    from distclust.assign import run_assign

    work = Path(a.work) / "assign_scale"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ae = make_model(work / "ae-kmeans", k=10)
    models = {"encoder+faiss (ae-kmeans)": ae}
    for h in a.head_hidden:
        hidden = [int(v) for v in h.split(",")] if h else []
        models[f"encoder+head{hidden}+mixture (manifold)"] = make_manifold(work / f"manifold-{h or 'linear'}", ae,
                                                                           hidden)
    res = {"command": "python bench/manifold.py " + " ".join(sys.argv[1:]), "actors": a.actors, "dim": 64,
           "encoder": "64-256-128-10 MLP (bench/assign_scale.py)", "k": 10, "runs": []}
    for rows in a.rows:
        data = work / f"data-{rows}"
        generate(data, rows)
        for name, model in models.items():
            s = run_assign(model, data, work / "out", actors=a.actors, rows_per_unit=500_000, progress=False,
                           overwrite=True)
            res["runs"].append({"rows": rows, "model": name, "rows_per_s": s["rows_per_s"],
                                "steady_rows_per_s": s["actor_rows_per_s"] * a.actors,
                                "actor_peak_rss_mib": s["actor_peak_rss_mib"], "seconds": s["seconds"]})
            save("manifold_assign_scale", res)
        shutil.rmtree(data)
    save("manifold_assign_scale", res)


def assign_bound(a) -> None:
    """In-process, one thread: FittedModel.assign rows/s (what each assign actor runs per batch) for
    encoder + FAISS (ae-kmeans) vs encoder + head + mixture posterior (manifold), same encoder."""
    import faiss
    import torch

    import distclust
    from assign_scale import make_model

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    work = Path(a.work) / "assign_bound"
    work.mkdir(parents=True, exist_ok=True)
    encoders = {"64-256-128-10 (bench/assign_scale.py)": (make_model(work / "ae-small", k=10), 64)}
    if a.ae:
        encoders[f"DEC 784-500-500-2000-10 ({a.ae})"] = (Path(a.ae).resolve(), 784)
    res = {"command": "python bench/manifold.py " + " ".join(sys.argv[1:]), "threads": 1, "batch_rows": a.batch,
           "repeats": a.repeats, "encoders": {}}
    for enc_name, (ae_dir, dim) in encoders.items():
        models = {"encoder+faiss (ae-kmeans)": ae_dir}
        for h in a.head_hidden:
            hidden = [int(v) for v in h.split(",")] if h else []
            models[f"encoder+head{hidden}+posterior (manifold)"] = make_manifold(
                work / f"manifold-{dim}-{h or 'linear'}", ae_dir, hidden)
        X = np.random.default_rng(1).random((a.batch, dim), dtype=np.float32)
        out = {}
        for name, path in models.items():
            fm = distclust.load(path)
            fm.assign(X[:1000])
            best = 0.0
            for _ in range(a.repeats):
                t = time.perf_counter()
                fm.assign(X)
                best = max(best, a.batch / (time.perf_counter() - t))
            out[name] = {"rows_per_s": best}
        base = out["encoder+faiss (ae-kmeans)"]["rows_per_s"]
        for v in out.values():
            v["vs_encoder_faiss"] = v["rows_per_s"] / base
        res["encoders"][enc_name] = out
        save("manifold_assign_bound", res)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("quality", "select"):
        s = sub.add_parser(name)
        s.add_argument("--dataset", default="mnist", help="mnist or fashion_mnist (../shared/datasets/NAME.npz)")
        s.add_argument("--ae", required=True, help="ae-kmeans artifact trained on the same data")
        s.add_argument("--job", default="mnist-manifold.yaml")
        s.add_argument("--set", nargs="*", default=[], help="job overrides, e.g. model.n_neighbors=10")
        s.add_argument("--work", default=str(ROOT / "bench" / "_work" / "manifold"))
    q = sub.choices["quality"]
    q.add_argument("--seeds", type=int, nargs="+", default=[0])
    q.add_argument("--append", action="store_true", help="keep seeds already in the result file")
    q.add_argument("--name", default=None, help="result file name (default manifold_quality_DATASET)")
    s = sub.choices["select"]
    s.add_argument("--candidates", type=int, nargs="+", default=[5, 10, 20, 40])
    s.add_argument("--seed", type=int, default=0)
    k = sub.add_parser("kmeans-baseline")
    k.add_argument("--dataset", default="digits", help="digits (scikit-learn's) or a ../shared/datasets NAME")
    k.add_argument("--run", required=True, help="a manifold run's model folder")
    k.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    r = sub.add_parser("repro")
    r.add_argument("--dataset", default="fashion_mnist")
    r.add_argument("--ae", required=True)
    r.add_argument("--job", default="mnist-manifold.yaml")
    r.add_argument("--set", nargs="*", default=[])
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--workers", type=int, default=2, help="the job's scaling.num_workers")
    r.add_argument("--work", default=str(ROOT / "bench" / "_work" / "manifold"))
    m = sub.add_parser("inmemory")
    m.add_argument("--dataset", default="fashion_mnist")
    m.add_argument("--ae", required=True)
    m.add_argument("--n-neighbors", type=int, nargs="+", default=[10, 20])
    m.add_argument("--seed", type=int, default=0)
    u = sub.add_parser("umap-scale")
    u.add_argument("--rows", type=int, nargs="+", default=[20_000, 100_000, 200_000])
    u.add_argument("--n-neighbors", type=int, default=10)
    g = sub.add_parser("assign-scale")
    g.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    g.add_argument("--actors", type=int, default=2)
    g.add_argument("--head-hidden", nargs="+", default=["256,256"], help="head widths to compare, e.g. 256,256 64")
    g.add_argument("--work", default=str(ROOT / "bench" / "_work" / "manifold"))
    b = sub.add_parser("assign-bound")
    b.add_argument("--ae", default=None, help="also an ae-kmeans artifact with the DEC encoder (784-d)")
    b.add_argument("--batch", type=int, default=65536)
    b.add_argument("--repeats", type=int, default=5)
    b.add_argument("--head-hidden", nargs="+", default=["256,256", "64,64"])
    b.add_argument("--work", default=str(ROOT / "bench" / "_work" / "manifold"))
    a = ap.parse_args()
    {"assign-bound": assign_bound, "quality": quality, "select": select, "repro": repro, "kmeans-baseline": kmeans_baseline, "inmemory": inmemory, "umap-scale": umap_scale, "assign-scale": assign_scale}[a.cmd](a)


if __name__ == "__main__":
    main()
