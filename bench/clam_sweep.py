"""ClAM's protocol against Lloyd's k-means, on silhouette (issue 17: "ClAM's selected configuration
above k-means' silhouette on at least 3 of the 4 ClAM data sets").

    python bench/clam_sweep.py [--sets digits,mnist10k,fashion10k,customers] [--trials 12] [--epochs N]
    python bench/clam_sweep.py --set model.init=kmeans --tag init_kmeans   # a variant, kept apart

For each data set, ``distclust tune tune/clam-silhouette.yaml`` (Ray Tune + Ray Train, one trial per
sampled (β, T, mask probability, learning rate), seeded random search) keeps the configuration with
the best silhouette in the input features — no labels. Beside it, FAISS k-means (k-means++, best of
10 restarts by inertia, ``distclust.faiss_ops.kmeans``) on the same normalised features, with its
silhouette computed on the same seeded 5,000-row sample the sweep scores on. Labels only score
both afterwards.

Data sets (K = the number of true groups):
- digits: scikit-learn's digits, all 1,797 rows, pixels / 16 (``builtin:digits``);
- mnist10k / fashion10k: a seeded 10,000-row uniform subsample of MNIST / Fashion-MNIST, pixels / 255;
- customers: ``make_customers.py --rows 10000 --segments 6 --seed 0``, its six numeric columns only
  (age, income, visits_per_month, avg_basket, days_since_purchase, tenure_months), gaps filled
  with the column median, standardised.

Epochs per trial: 30 on digits, 10 on the 10k image subsets, 20 on customers (``--epochs`` overrides).

Writes bench/results/clam_sweep.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATASETS, ROOT, WORK, command, dataset, save  # noqa: E402

NUMERIC = ["age", "income", "visits_per_month", "avg_basket", "days_since_purchase", "tenure_months"]
# name: (source, data.normalize, K, training epochs per trial)
SETS = {"digits": ("builtin:digits", "global-minmax", 10, 30),
        "mnist10k": ("mnist.npz", "global-minmax", 10, 10),
        "fashion10k": ("fashion_mnist.npz", "global-minmax", 10, 10),
        "customers": ("customers", "standard", 6, 20)}


def subset(name: str, rows: int, work: Path) -> str:
    """The data file (or builtin) a set is swept on."""
    src = SETS[name][0]
    if src.startswith("builtin:"):
        return src
    out = work / f"{name}.npz"
    if name == "customers":
        import pandas as pd

        raw = work / "customers.parquet"
        tool = DATASETS.parent / "tools" / "make_customers.py"
        if not tool.is_file():
            raise SystemExit(f"{tool} not found: set DISTCLUST_DATASETS to ../shared/datasets")
        subprocess.run([sys.executable, str(tool), str(raw), "--rows", str(rows), "--segments", "6",
                        "--seed", "0"], check=True)
        df = pd.read_parquet(raw)
        X = df[NUMERIC].astype("float64")
        X = X.fillna(X.median()).to_numpy(np.float32)
        y = df["segment"].astype("category").cat.codes.to_numpy(np.int64)
    else:
        d = np.load(dataset(src))
        pick = np.sort(np.random.default_rng(0).choice(len(d["X"]), rows, replace=False))
        X, y = d["X"][pick].reshape(rows, -1).astype(np.float32), d["y"][pick].astype(np.int64)
    np.savez(out, X=X, y=y)
    return str(out)


def kmeans_side(out: Path, model_dir: str, k: int, seed: int, eval_sample: int) -> dict:
    """FAISS k-means (best of 10) on the sweep's normalised features, scored on the sweep's sample."""
    from sklearn.metrics import silhouette_score

    import distclust
    from distclust import faiss_ops
    from distclust.data.manifest import Manifest
    from distclust.data.sample import sample_dataset
    from distclust.metrics import cluster_scores

    model = distclust.load(model_dir)
    rows = Manifest.load(out / "data").rows
    Xall, yall = sample_dataset(out / "data", rows, seed)           # every row
    Zall = model.normalize(Xall).astype(np.float32)
    t = time.time()
    C, inertia = faiss_ops.kmeans(Zall, k, seed=seed, niter=100, nredo=10)
    km_s = time.time() - t
    Xs, ys = sample_dataset(out / "data", eval_sample, seed)        # the sweep's scoring sample
    Zs = model.normalize(Xs).astype(np.float32)
    lab_s = ((Zs[:, None, :] - C[None]) ** 2).sum(-1).argmin(1)
    res = {"silhouette": float(silhouette_score(Zs, lab_s)), "seconds": round(km_s, 2), "inertia": float(inertia)}
    lab_all = ((Zall[:, None, :] - C[None]) ** 2).sum(-1).argmin(1) if len(Zall) <= 20000 else None
    if yall is not None and lab_all is not None:
        res.update({k2: float(v) for k2, v in cluster_scores(lab_all, yall).items() if k2 in ("acc", "nmi", "ari")})
    # the selected ClAM on all rows, for the label metrics beside
    if yall is not None:
        res_clam = {k2: float(v) for k2, v in cluster_scores(model.predict(Xall), yall).items()
                    if k2 in ("acc", "nmi", "ari")}
    else:
        res_clam = {}
    return res, res_clam


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="digits,mnist10k,fashion10k,customers")
    ap.add_argument("--rows", type=int, default=10000)
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=0, help="epochs per trial (0: the set's default)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rescore", action="store_true", help="re-select and re-score existing sweeps, no training")
    ap.add_argument("--set", action="append", default=[], help="extra override of every trial (KEY=VALUE)")
    ap.add_argument("--tag", default="", help="a variant's name: its sweeps and results are kept apart "
                                              "(results key sets_<tag>); the protocol's rows stay as they are")
    a = ap.parse_args()
    key = f"sets_{a.tag}" if a.tag else "sets"
    work = WORK / "clam_sweep"
    work.mkdir(parents=True, exist_ok=True)
    path = ROOT / "bench" / "results" / "clam_sweep.json"
    result = json.loads(path.read_text()) if path.is_file() else {}
    result.setdefault(key, {})
    sweep_raw = yaml.safe_load((ROOT / "tune" / "clam-silhouette.yaml").read_text())
    sweep_raw["base"] = str(ROOT / "jobs" / "digits-clam.yaml")
    sweep_raw["num_samples"] = a.trials
    sweep_file = work / "clam-silhouette.yaml"
    sweep_file.write_text(yaml.safe_dump(sweep_raw, sort_keys=False))
    for name in a.sets.split(","):
        data = subset(name, a.rows, work)
        _, normalize, k, epochs = SETS[name]
        epochs = a.epochs or epochs
        out = work / (f"sweep-{name}-{a.tag}" if a.tag else f"sweep-{name}")
        t = time.time()
        cmd = [sys.executable, "-m", "distclust", "tune", str(sweep_file), "--data", data, "--out", str(out),
               "--overwrite", "--quiet", "--set", f"model.n_clusters={k}", "--set", f"data.normalize={normalize}",
               "--set", f"model.epochs={epochs}", "--set", f"train.batch_size={a.batch_size}",
               *[x for kv in a.set for x in ("--set", kv)]]
        print(" ".join(cmd), flush=True)
        if a.rescore:
            wall = result[key].get(name, {}).get("sweep_wall_s", 0)
        else:
            subprocess.run(cmd, check=True, cwd=ROOT)
            wall = time.time() - t
        import pandas as pd

        from distclust.tuning.run import select_best
        from distclust.tuning.spec import SweepSpec

        table = pd.read_csv(out / "results.csv")
        # the product's selection rule (the summary of a sweep run before a rule change may differ)
        best, passed_over, _ = select_best(table[table["status"] == "completed"], SweepSpec(**sweep_raw), k)
        summary = {"best_config": {c: best[c].item() if hasattr(best[c], "item") else best[c]
                                   for c in sweep_raw["search"]},
                   "value": float(best["silhouette"]), "clusters_used": int(best["clusters_used"])}
        km, clam_all = kmeans_side(out, best["model_dir"], k, sweep_raw.get("seed", 0),
                                   sweep_raw.get("eval_sample", 5000))
        trials = [{c: (None if pd.isna(r[c]) else (r[c].item() if hasattr(r[c], "item") else r[c]))
                   for c in table.columns if c in ("model.beta", "model.steps", "model.mask_prob", "model.lr",
                                                   "silhouette", "acc", "nmi", "clusters_used", "status")}
                  for _, r in table.iterrows()]
        entry = {"rows": int(len(np.load(data)["X"])) if data.endswith(".npz") else 1797, "k": k,
                 "clam_selected": {"config": summary["best_config"], "silhouette": summary["value"],
                                   "clusters_used": summary["clusters_used"], **clam_all},
                 "trials_passed_over_for_empty_clusters": passed_over,
                 "kmeans": km, "clam_above_kmeans": summary["value"] > km["silhouette"],
                 "epochs": epochs, "sweep_wall_s": round(wall), "trials": trials}
        if a.set:
            entry["overrides"] = a.set
        result[key][name] = entry
        print(name, json.dumps({k2: v for k2, v in entry.items() if k2 != "trials"}), flush=True)
        if a.rescore:
            result["rescored"] = "selection and k-means side recomputed from the saved sweeps: " + command("clam_sweep.py")
        else:
            meta = {"command": command("clam_sweep.py"), "sweep": "tune/clam-silhouette.yaml",
                    "trials_per_set": a.trials, "machine": "2-core CPU"}
            if a.tag:
                result[f"meta_{a.tag}"] = meta
            else:
                result.update(meta)
        path.write_text(json.dumps(result, indent=1))
    n_above = sum(bool(v["clam_above_kmeans"]) for v in result[key].values())
    print(f"ClAM's selected silhouette above k-means on {n_above} of {len(result[key])} data sets ({key})")


if __name__ == "__main__":
    main()
