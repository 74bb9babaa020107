"""True K vs chosen K for every criterion of distclust.select_k and the combined rule.

    DISTCLUST_DATASETS=PATH python bench/choose_k.py [--only digits,mix5,...] [--replicates 10] [--restarts 10] [--ray]
        [--model mnist=RUN/model --model fashion_mnist=RUN/model] [--rescore] [--table]

Data sets (representation, K range searched): digits (the embedding tune/digits-k.yaml's trials
share: jobs/digits-ae-kmeans.yaml, hidden [256, 256], 30 epochs, trained by `distclust train`),
MNIST-70k and Fashion-MNIST-70k (with ``--model``: the embedding of that trained model, in
docs/benchmarks.md the 300-epoch reference autoencoders; without: jobs/mnist-ae-kmeans.yaml with
hidden [256, 128], 15 epochs, trained in one process on a seeded 10,000-row sample, then all 70,000
rows embedded), generated Gaussian mixtures with K = 5, 20, 50 and an overlapping one (K = 8,
centres 3.5 apart at unit-ish spread) pushed through a random tanh map into 32-d
(bench/choose_k_data.py), and make_customers.py's table (20,000 rows, 6 segments; standardised
numbers + missing flags + one-hot categories). Criteria run on a seeded sample of at most 10,000
rows. Results are merged into bench/results/choose_k.json. ``--rescore`` keeps the saved per-K
curves and re-runs only the DP mixture and the rule (for a change of the rule, not of the curves).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # this checkout's distclust first
from choose_k_data import ae_embedding, customers, gaussian_mixture, inprocess_ae_embedding, standardise  # noqa: E402
from common import RESULTS, ROOT, dataset  # noqa: E402

from distclust.select_k import (REPLICATES, RESTARTS, decide, dp_count, dp_k_max, parse_k_range,  # noqa: E402
                                prepare, select_k, tolerance)

WORK = ROOT / "bench" / "_work" / "choose_k"
DIGITS_SETS = ["model.pretrain_epochs=30", "model.hidden=[256,256]", "scaling.num_workers=1"]


def load(name: str, models: dict[str, str] | None = None):
    """(Z, labels, true K, what Z is, K range); ``models[name]``: embed with that trained artifact instead."""
    if models and name in models:
        from distclust import load as load_model

        d = np.load(dataset(f"{name}.npz"))
        Z = load_model(models[name]).transform(d["X"].astype(np.float32))
        src = Path(models[name]).resolve()
        src = src.parent if src.name == "model" else src    # name the run, not its model/ folder
        return Z, d["y"], 10, f"embedding ({Z.shape[1]}-d) of the trained model {src.name}, {len(Z)} rows", "5..30"
    if name == "digits":
        Z, y = ae_embedding("digits", dataset("digits.npz"), "digits-ae-kmeans.yaml", WORK, DIGITS_SETS)
        return Z, y, 10, "AE embedding (10-d) of tune/digits-k.yaml's trials", "2..20"
    if name == "digits_pixels":   # not in ALL: a check of the representation, outside the benchmark table
        d = np.load(dataset("digits.npz"))
        return standardise(d["X"].astype(np.float32)), d["y"], 10, "raw pixels (64-d), standardised", "2..20"
    if name in ("mnist", "fashion_mnist"):
        Z, y, train_s = inprocess_ae_embedding(name, dataset(f"{name}.npz"), "mnist-ae-kmeans.yaml", WORK, 15,
                                               sets=("model.hidden=[256,128]",))
        return Z, y, 10, f"AE embedding (10-d), AE trained on a 10k sample, {len(Z)} rows embedded", "5..30"
    if name.startswith("mix"):
        k = int(name[3:])
        X, y = gaussian_mixture(k, seed=0)
        rng = {5: "2..15", 20: "5..40", 50: "20..80:2"}.get(k, f"2..{3 * k}")
        return standardise(X), y, k, f"32-d nonlinear embedding, {len(X)} rows, standardised", rng
    if name == "overlap8":
        X, y = gaussian_mixture(8, seed=1, sep=3.5)
        return standardise(X), y, 8, f"32-d, centres 3.5 apart (clusters nearly touch), {len(X)} rows", "2..16"
    if name == "customers":
        Z, y = customers(WORK)
        return Z, y, 6, f"numbers + missing flags + one-hot ({Z.shape[1]} columns), {len(Z)} rows", "2..15"
    raise SystemExit(f"unknown data set {name}")


ALL = ["digits", "mnist", "fashion_mnist", "mix5", "mix20", "mix50", "overlap8", "customers"]


def label_check(Z, y, ks: list[int]) -> dict:
    """NMI and many-to-one purity of FAISS k-means at the true and the chosen K (labels are read
    here only, to explain a miss: a chosen K above the truth with high purity splits classes)."""
    from distclust import metrics as M
    from distclust.faiss_ops import NearestPrototype, kmeans

    out = {}
    for k in ks:
        lab = NearestPrototype(kmeans(Z, k, seed=0, nredo=3)[0], use_gpu=False).search(Z)[0]
        m = M.contingency(lab, y, n_pred=k)
        out[str(k)] = {"nmi": M.scores(m)["nmi"], "purity": M.many_to_one_acc(m), "acc": M.acc_from_contingency(m)}
    return out


PARTS = RESULTS / "choose_k"


def collect() -> dict:
    """bench/results/choose_k.json from the per-data-set files (runs of --only may overlap)."""
    d = {p.stem: json.loads(p.read_text()) for p in sorted(PARTS.glob("*.json"))}
    d = {n: d[n] for n in ALL if n in d}
    res = {"command": "DISTCLUST_DATASETS=PATH python bench/choose_k.py  (one data set: --only NAME)",
           "datasets": d,
           "summary": {"datasets": len(d), "combined_within_1": sum(v["within_1"] for v in d.values()),
                       "combined_at_edge": sum(v["at_edge"] for v in d.values()),
                       **{f"{c}_within_1": sum(v["criteria_within_1"].get(c, False) for v in d.values())
                          for c in ("stability", "gap", "dpmix", "prediction_strength")}}}
    (RESULTS / "choose_k.json").write_text(json.dumps(res, indent=1, default=float))
    return res


def markdown(res: dict) -> str:
    """The benchmarks.md table from the results JSON."""
    head = ("| data set (true K) | K range | stability | gap | DP mixture, merged (components) | prediction strength (not voted) "
            "| **combined** | within ±1 | at edge | criteria time |\n|" + " --- |" * 10)
    lines = [head]
    for name, d in res["datasets"].items():
        c = d["choices"]
        dp = f"{c['dpmix']} ({d['dp_components']})" if d.get("dp_components") else c.get("dpmix", "–")
        lines.append(f"| {name} ({d['true_k']}) | {d['k_range']} | {c['stability']} | {c['gap']} | {dp} "
                     f"| {c['prediction_strength']} | **{d['chosen']}** | {'yes' if d['within_1'] else 'no'} "
                     f"| {'yes' if d['at_edge'] else 'no'} | {d['criteria_s']:.0f} s |")
    return "\n".join(lines)


def saved_curves(name: str, models: dict[str, str] | None = None) -> tuple[dict, np.ndarray, int]:
    """(the saved result of ``name``, the same seeded sample of its representation, its true K): what
    probes that re-decide saved curves start from."""
    Z, _, true_k, _, _ = load(name, models)
    return (*saved_sample(name, Z), true_k)


def saved_sample(name: str, Z) -> tuple[dict, np.ndarray]:
    """(the saved result of ``name``, the seeded sample of its representation ``Z`` its curves used)."""
    saved = json.loads((PARTS / f"{name}.json").read_text())
    return saved, prepare(Z, saved["sample"], 0)


def rescore(name: str, Z) -> tuple:
    """The saved curves of ``name`` with a fresh DP fit on the same seeded sample of its representation
    ``Z``, re-decided by the current rule (``select_k.decide``); the curves' own criteria time is kept."""
    import time

    saved, Zs = saved_sample(name, Z)
    rows = saved["table"]
    t = time.time()
    n_dp = dp_count(Zs, dp_k_max([r["k"] for r in rows]), 0)
    sel = decide(rows, n_dp, rows_used=saved["criteria_rows"], dim=int(Zs.shape[1]), seconds=saved["criteria_s"],
                 replicates=saved["replicates"], restarts=saved["restarts"])
    kept = {"sample": saved["sample"], "rescored": f"curves as saved; DP mixture and rule re-run ({time.time() - t:.0f} s)",
            "previous_choices": {**saved["choices"], "chosen": saved["chosen"]}}
    return sel, kept


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default=",".join(ALL))
    ap.add_argument("--replicates", type=int, default=REPLICATES)
    ap.add_argument("--restarts", type=int, default=RESTARTS, help="k-means restarts per half-split fit")
    ap.add_argument("--sample", type=int, default=10_000)
    ap.add_argument("--ray", action="store_true", help="run each K as a Ray task (local Ray)")
    ap.add_argument("--table", action="store_true", help="print the markdown table of the saved results")
    ap.add_argument("--rescore", action="store_true",
                    help="keep each data set's saved per-K curves (seeded, so a re-run reproduces them) and "
                         "re-run only the DP mixture and the rule, on the same sample")
    ap.add_argument("--model", action="append", default=[], metavar="NAME=DIR",
                    help="embed data set NAME (mnist, fashion_mnist) with a trained model, e.g. the reference AE")
    a = ap.parse_args()
    if a.table:  # the table for docs/benchmarks.md and each data set's curves for docs/img/
        from distclust.report.plots import k_selection

        res = collect()
        for name, d in res["datasets"].items():
            k_selection(d["table"], d["choices"], d["chosen"], ROOT / "docs" / "img" / f"choose_k_{name}.png",
                        f"{name} (true K = {d['true_k']})")
        print(markdown(res))
        return
    WORK.mkdir(parents=True, exist_ok=True)
    import faiss

    faiss.omp_set_num_threads(1)  # see docs/architecture.md: OpenMP spinning on a loaded machine
    if a.ray:
        from distclust.engine.ray_setup import ensure_ray

        ensure_ray(None, num_cpus=2)
    for name in a.only.split(","):
        Z, y, k, what, rng = load(name, dict(m.split("=", 1) for m in a.model))
        if a.rescore:
            sel, kept = rescore(name, Z)
        else:
            sel, kept = select_k(Z, parse_k_range(rng), seed=0, replicates=a.replicates, sample=a.sample,
                                 use_ray=a.ray, restarts=a.restarts), {}
        ok = {c: abs(v - k) <= 1 for c, v in sel.choices.items()}
        entry = {"true_k": k, "representation": what, "k_range": rng, "rows_total": len(Z), "chosen": sel.chosen,
                 "within_1": abs(sel.chosen - k) <= 1, "within_tolerance": abs(sel.chosen - k) <= tolerance(k),
                 "at_edge": sel.at_edge, "choices": sel.choices, "criteria_within_1": ok, "reason": sel.reason,
                 "warnings": sel.warnings, "criteria_rows": sel.rows, "criteria_s": sel.seconds,
                 "replicates": sel.replicates, "restarts": sel.restarts, "sample": kept.get("sample", a.sample),
                 "dp_components": sel.dp_components, **kept,
                 "command": f"DISTCLUST_DATASETS=PATH python bench/choose_k.py --only {name}"
                            + "".join(f" --model {m}" for m in a.model if m.startswith(name + "=")),
                 "labels_reported_only": label_check(Z, y, sorted({k, sel.chosen})), "table": sel.table}
        print(f"{name}: true {k}, chosen {sel.chosen} ({sel.reason}); {sel.choices}; {sel.seconds:.0f} s", flush=True)
        PARTS.mkdir(parents=True, exist_ok=True)
        (PARTS / f"{name}.json").write_text(json.dumps(entry, indent=1, default=float))
        res = collect()
    print(json.dumps(res["summary"], indent=1))


if __name__ == "__main__":
    main()
