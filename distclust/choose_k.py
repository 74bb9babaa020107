"""``distclust choose-k SPEC --data PATH --k 5..30``: estimate K once, in one representation.

The representation is fixed before any K is tried, so every K is judged on the same rows in the
same space (the ``score_space`` lesson of docs/benchmarks.md): ``embedding`` (default) trains the
job spec once and uses its encoder — or the spec's ``model.pretrained`` artifact, or ``--model`` —
and ``features`` uses the standardised input columns. The criteria and the rule are in
``select_k.py``; this module only gathers the rows, runs them, and writes the outputs.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from .errors import DistclustError, SpecError
from .select_k import RESTARTS, REPLICATES, KSelection, check_ks, parse_k_range, select_k, standardise

SPACES = ("embedding", "features")
# models that reshape their own embedding around the K they were given (docs/benchmarks.md, DEC on MNIST)
K_SHAPED = ("dec", "idec", "vade", "vae-dpgmm", "gmvae", "gmvae-gumbel", "concrete-gmvae")


def representation(X: np.ndarray, space: str, model_dir: str | Path | None) -> np.ndarray:
    """Z for the rows X: the artifact's embedding, or standardised features."""
    if space == "features":
        return standardise(X)
    from .artifact import load

    return load(model_dir).transform(X)


def check_space(space: str, where: str = "--space") -> None:
    if space not in SPACES:
        raise SpecError(f"representation '{space}' is unknown", where, f"use one of {', '.join(SPACES)}")


def run_choose_k(spec_path: str, data: str | None, k: str, out: str | Path, space: str = "embedding",
                 model: str | None = None, sample: int = 10_000, replicates: int = REPLICATES, seed: int = 0,
                 sets: list[str] | None = None, overwrite: bool = False, progress: bool = True,
                 restarts: int = RESTARTS) -> KSelection:
    """Train (or load) the representation, sample rows, run the criteria as Ray tasks, write
    ``OUT/choose_k.json`` and ``OUT/choose_k.png``."""
    from .data import resolve_dataset
    from .engine.ray_setup import ensure_ray
    from .spec import load_spec
    from .data.sample import sample_dataset

    ks = parse_k_range(k)
    check_space(space)
    if replicates < 2:
        raise SpecError(f"--replicates is {replicates}", "--replicates", f"use 2 or more ({REPLICATES} is the default)")
    if restarts < 1:
        raise SpecError(f"--restarts is {restarts}", "--restarts", f"use 1 or more ({RESTARTS} is the default)")
    spec = load_spec(spec_path, sets)
    out = Path(out).resolve()
    if (out / "choose_k.json").exists() and not overwrite:
        raise DistclustError(f"'{out}' already holds a K selection", str(out), "pass --overwrite or another --out")
    out.mkdir(parents=True, exist_ok=True)
    root, manifest = resolve_dataset(data or spec.data.path, out / "data", spec.data.shards, progress=progress)
    check_ks(ks, min(manifest.rows, sample), "--k")
    model_dir = model or getattr(spec.model, "pretrained", None)
    if space == "embedding" and not model_dir:
        from .engine.trainer import run_training

        if spec.model_name in K_SHAPED:
            print(f"distclust choose-k: warning: '{spec.model_name}' shapes its embedding around its own K "
                  f"({spec.model.n_clusters}); an autoencoder job (ae-kmeans) or --model gives a fairer space",
                  file=sys.stderr)
        model_dir = run_training(spec, out / "representation", data=str(root), overwrite=True,
                                 quiet=not progress).model_dir
    X, _ = sample_dataset(root, sample, seed)  # labels are never read by the criteria
    Z = representation(X, space, model_dir)
    ensure_ray(spec.scaling.address, None)
    sel = select_k(Z, ks, seed=seed, replicates=replicates, sample=sample, use_ray=True, restarts=restarts)
    from .report.plots import k_selection

    result = {**sel.as_dict(), "space": space, "model": str(model_dir) if space == "embedding" else None,
              "data": str(root), "seed": seed, "replicates": replicates, "restarts": restarts}
    result["plot"] = str(k_selection(sel.table, sel.choices, sel.chosen, out / "choose_k.png"))
    (out / "choose_k.json").write_text(json.dumps(result, indent=1))
    return sel


# ------------------------------------------------------------------------------------------ in sweeps
def check_sweep(sweep, s: str) -> None:
    """``metric: choose_k`` needs K in a grid of at least 3 values ≥ 2."""
    from .validation import require

    dom = sweep.search.get("model.n_clusters")
    require(isinstance(dom, dict) and "grid" in dom, f"{s}.search", "metric 'choose_k' estimates K but the sweep "
            "does not search model.n_clusters over a grid", "add model.n_clusters: {grid: [4, 6, 8, 10, 12]} or "
            "choose another metric (silhouette, loss, ...)")
    require(sweep.algorithm == "grid", f"{s}.algorithm", f"metric 'choose_k' needs algorithm: grid "
            f"(got {sweep.algorithm})", "use algorithm: grid")
    parse_k_range(list(dom["grid"]), f"{s}.search.model.n_clusters")


def select_in_sweep(df, done, sweep, spec, data_root, out: Path):
    """Run the criteria for every K from the smallest to the largest trial K (FAISS k-means on one
    representation: ``score_space``), select the completed trial nearest to the chosen K, and add the
    per-K curves to the results table. Returns (table, completed rows, selected row, KSelection)."""
    from .report.plots import k_selection
    from .data.sample import sample_dataset

    if "model.n_clusters" not in done or done["model.n_clusters"].nunique() < 3:
        raise DistclustError("fewer than 3 K values completed: K cannot be estimated", str(out),
                             "see the trial errors above, or search more K values")
    trial_ks = sorted(int(k) for k in done["model.n_clusters"].unique())
    ks = list(range(trial_ks[0], trial_ks[-1] + 1))
    X, _ = sample_dataset(data_root, sweep.eval_sample, sweep.seed)
    if sweep.score_space == "pretrained":
        space, model_dir = "embedding", spec.model.pretrained
    elif sweep.score_space == "features":
        space, model_dir = "features", None
    else:  # the first trial's embedding: ae-kmeans trials share it (their pretraining does not see K)
        space, model_dir = "embedding", done.sort_values("model.n_clusters").iloc[0]["model_dir"]
    check_ks(ks, len(X), f"sweep {sweep.name}: model.n_clusters (eval_sample {len(X)} rows)")
    sel = select_k(representation(X, space, model_dir), ks, seed=sweep.seed, replicates=sweep.select_replicates,
                   sample=len(X), use_ray=True, restarts=sweep.select_restarts)
    near = min(trial_ks, key=lambda k: (abs(k - sel.chosen), k))
    if near != sel.chosen:
        sel.warnings.append(f"the chosen K ({sel.chosen}) has no trial; the nearest trial (K = {near}) is selected; "
                            f"train K = {sel.chosen} with --set model.n_clusters={sel.chosen}")
    cands = done[done["model.n_clusters"] == near]
    best = cands.sort_values("silhouette", ascending=False).iloc[0] if "silhouette" in cands else cands.iloc[0]
    curves = {r["k"]: r for r in sel.table}
    for col in ("stability", "excess_stability", "prediction_strength", "gap"):
        df[f"k_{col}"] = [curves.get(int(k), {}).get(col) if k == k else None for k in df["model.n_clusters"]]
    df["choose_k"] = df["k_excess_stability"]  # the rule's tie-break score; the votes are in choose_k.json
    (out / "choose_k.json").write_text(json.dumps({**sel.as_dict(), "space": sweep.score_space,
                                                   "model": str(model_dir) if model_dir else None}, indent=1))
    k_selection(sel.table, sel.choices, sel.chosen, out / "choose_k.png", f"sweep {sweep.name}")
    return df, df[df["status"] == "completed"], df.loc[best.name], sel
