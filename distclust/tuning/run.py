"""``distclust tune``: the trial (a Ray Train run of the base job, then scoring) and the sweep driver
(Ray Tune, the results table, the selection, the plot)."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from ..data.sample import sample_dataset
from ..errors import DistclustError
from ..spec import apply_overrides
from ..report.plots import sweep_metric_plot
from .scoring import score_model
from .spec import LABEL_METRICS, METRIC_MODES, SweepSpec, load_sweep, param_space

def _trial(config: dict, sweep_raw: dict, base_raw: dict, data_root: str, out_root: str) -> None:
    """One Tune trial: a Ray Train run of the base job with the trial's overrides, then scoring."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from ..data import Manifest
    from ..engine.trainer import RUN_FILE, build_trainer, collect_artifact, finished_run, fit_trainer, run_identity
    from ..spec import load_spec

    sweep = SweepSpec(**sweep_raw)
    trial = tune.get_context().get_trial_name()
    trial_dir = Path(out_root) / "trials" / trial
    raw = apply_overrides(base_raw, config)
    spec = load_spec(raw)
    manifest = Manifest.load(data_root)
    t0 = time.time()
    trial_dir.mkdir(parents=True, exist_ok=True)
    # a restored sweep (``tune --resume``) re-runs the trials that had not reported their scores: one that
    # had finished training is scored from its model, one cut short resumes from its own checkpoints
    res = finished_run(trial_dir, t0)
    if res is None:
        resume = (trial_dir / RUN_FILE).is_file()
        run_id = run_identity(trial_dir, resume, spec.to_dict())
        res = collect_artifact(fit_trainer(build_trainer(spec, trial_dir, Path(data_root), manifest, quiet=True,
                                                         callbacks=[TuneReportCallback()], run_id=run_id,
                                                         resume=resume)), trial_dir, t0)
    X, y = sample_dataset(data_root, sweep.eval_sample, sweep.seed)
    scores = score_model(res.model_dir, X, y, sweep.seed, sweep.score_space, getattr(spec.model, "pretrained", None))
    losses = [h["loss"] for h in res.history if "loss" in h]
    scores["loss"] = float(losses[-1]) if losses else float("nan")
    bound = [h["neg_elbo"] for h in res.history if "neg_elbo" in h]
    if bound:
        scores["neg_elbo"] = float(bound[-1])
    if sweep.metric == "stability":  # the same trial again with another seed; ARI between the two
        from sklearn.metrics import adjusted_rand_score

        from ..artifact import load

        raw2 = apply_overrides(raw, {"train.seed": spec.train.seed + 1})
        res2 = collect_artifact(fit_trainer(build_trainer(load_spec(raw2), trial_dir / "seed2", Path(data_root),
                                                          manifest, quiet=True)), trial_dir / "seed2", t0)
        scores["stability"] = float(adjusted_rand_score(load(res.model_dir).predict(X), load(res2.model_dir).predict(X)))
    tune.report({**scores, "model_dir": str(res.model_dir), "scored": 1,
                 "train_wall_s": time.time() - t0})


def search_algorithm(sweep, mode: str):
    """The sweep's seeded search algorithm (None: Tune's grid). A BasicVariantGenerator passed in
    makes Tune ignore ``max_concurrent_trials`` (it only wraps a ``Searcher``), so every random
    trial would start at once and wait on the same CPUs; the limit goes into the generator itself."""
    if sweep.algorithm == "random":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return BasicVariantGenerator(random_state=sweep.seed, max_concurrent=sweep.max_concurrent_trials)
    if sweep.algorithm == "optuna":   # a Searcher: Tune wraps it in a ConcurrencyLimiter
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(metric=sweep.metric, mode=mode, sampler=optuna.samplers.TPESampler(seed=sweep.seed))
    return None


def select_best(done, sweep: SweepSpec, default_k: int):
    """The best completed trial by the sweep's metric, and how many trials were passed over because
    their partition left clusters empty. A label-free partition score rewards fewer, bigger clusters
    (silhouette: a 2-cluster split of MNIST beats every 10-cluster one), so with
    ``require_all_clusters`` a trial that uses fewer clusters than its K ranks after every trial that
    uses them all; if none does, the best of the rest is selected and the sweep warns. Returns
    (best row, trials passed over, whether none used all of its clusters)."""
    mode = METRIC_MODES[sweep.metric]
    ranked = done.sort_values(sweep.metric, ascending=(mode == "min"))
    if not sweep.require_all_clusters or "clusters_used" not in ranked or not default_k and \
            "model.n_clusters" not in ranked:
        return ranked.iloc[0], 0, False
    ks = ranked["model.n_clusters"].astype(float) if "model.n_clusters" in ranked else float(default_k)
    full = ranked["clusters_used"].astype(float) >= ks
    collapsed = int((~full).sum())
    return (ranked[full] if full.any() else ranked).iloc[0], collapsed, not full.any()


def run_sweep(path: str | Path, out_dir: str | Path, data: str | None = None, resume: bool = False,
              overwrite: bool = False, address: str | None = None, overrides: list[str] | None = None,
              progress: bool = True, base_job: str | None = None) -> dict:
    import pandas as pd
    from ray import tune
    from ray.tune import CheckpointConfig, RunConfig, TuneConfig, Tuner

    from ..data import resolve_dataset
    from ..engine.ray_setup import ensure_ray, local_cpus
    from ..spec import as_dict, load_spec

    sweep, base_raw, spath = load_sweep(path, overrides, base_job)
    out = Path(out_dir).resolve()
    storage = out / "ray"
    if out.exists() and not resume:
        if not overwrite:
            raise DistclustError(f"sweep output '{out}' already exists", str(out),
                                 "pass --resume to continue that sweep, --overwrite to start again, or a new --out")
        shutil.rmtree(out)
    if resume and not (storage / sweep.name).exists():
        raise DistclustError(f"there is no sweep to resume in '{out}'", str(out), "run it first without --resume")
    out.mkdir(parents=True, exist_ok=True)
    spec = load_spec(base_raw)
    root, manifest = resolve_dataset(data or sweep.data or spec.data.path, out / "data", spec.data.shards,
                                     progress=progress)
    sc = spec.scaling
    # a local Ray gets room for the concurrent trials' workers (+1 for the trial drivers and scoring)
    ensure_ray(address or sc.address, None if (address or sc.address) else
               local_cpus(sc.num_workers * sweep.max_concurrent_trials, sc.cpus_per_worker, sc.local_num_cpus) + 1)
    from ..engine import preflight

    preflight.check_training(spec)   # one trial's workers must fit, or every trial would wait forever
    trainable = tune.with_resources(
        tune.with_parameters(_trial, sweep_raw=as_dict(sweep), base_raw=base_raw, data_root=str(root),
                             out_root=str(out)),
        {"CPU": sweep.trial_cpus})
    mode = METRIC_MODES[sweep.metric]
    if resume:
        tuner = Tuner.restore(str(storage / sweep.name), trainable=trainable, resume_unfinished=True,
                              resume_errored=True)
    else:
        scheduler = None
        if sweep.scheduler == "asha":
            from ray.tune.schedulers import ASHAScheduler

            max_t = sum(s.epochs for s in _stages_of(spec)) + 4
            scheduler = ASHAScheduler(metric=sweep.asha_metric, mode="min", time_attr="training_iteration",
                                      grace_period=sweep.asha_grace_period,
                                      reduction_factor=sweep.asha_reduction_factor, max_t=max_t)
        search_alg = search_algorithm(sweep, mode)
        tuner = Tuner(trainable, param_space=param_space(sweep),
                      tune_config=TuneConfig(num_samples=sweep.num_samples, scheduler=scheduler,
                                             search_alg=search_alg,
                                             max_concurrent_trials=sweep.max_concurrent_trials),
                      run_config=RunConfig(name=sweep.name, storage_path=str(storage), verbose=1 if progress else 0,
                                           checkpoint_config=CheckpointConfig(num_to_keep=1)))
    grid = tuner.fit()
    rows = []
    for r in grid:
        cfg = r.config or {}
        m = r.metrics or {}
        row = {**{k: cfg.get(k) for k in sweep.search}, "trial": Path(r.path).name if r.path else None,
               "status": "completed" if m.get("scored") else ("error" if r.error else "stopped early"),
               "iterations": m.get("training_iteration")}
        for k in ("silhouette", "davies_bouldin", "bic", "loss", "stability", *LABEL_METRICS, "clusters_used",
                  "model_dir", "train_wall_s"):
            if k in m:
                row[k] = m[k]
        rows.append(row)
    df = pd.DataFrame(rows)
    done = df[df["status"] == "completed"] if len(df) else df
    if done.empty or (sweep.metric not in done and sweep.metric != "choose_k"):
        raise DistclustError("no trial of the sweep completed", str(out), "see the trial errors above")
    selection, collapsed, none_full = None, 0, False
    if sweep.metric == "choose_k":  # K estimated in one shared space; the trial with that K is selected
        from ..choose_k import select_in_sweep

        df, done, best, selection = select_in_sweep(df, done, sweep, spec, root, out)
    else:
        best, collapsed, none_full = select_best(done, sweep, int(getattr(spec.model, "n_clusters", 0) or 0))
    df["selected"] = df["trial"] == best["trial"]
    df.to_parquet(out / "results.parquet", index=False)
    df.to_csv(out / "results.csv", index=False)
    from ..artifact import copy_artifact

    copy_artifact(best["model_dir"], out / "best_model")
    plot = sweep_metric_plot(df, sweep.name, sweep.metric, METRIC_MODES[sweep.metric], list(sweep.search),
                             out / f"{sweep.metric}_vs_k.png")
    summary = {"best_trial": best["trial"], "metric": sweep.metric, "score_space": sweep.score_space, "mode": mode,
               "value": float(best[sweep.metric]),
               "best_config": {k: _py(best[k]) for k in sweep.search}, "trials": int(len(df)),
               "completed": int(len(done)), "stopped_early": int((df["status"] == "stopped early").sum()),
               "best_model": str(out / "best_model"), "plot": str(plot) if plot else None}
    for k in LABEL_METRICS:
        if k in best and best[k] == best[k]:
            summary[f"best_{k}"] = float(best[k])
    from ..select_k import edge_warning

    summary["warnings"] = list(selection.warnings) if selection else []
    if selection is None and collapsed:
        summary["trials_with_empty_clusters"] = collapsed
        if none_full:
            summary["warnings"].append(
                f"every completed trial left some of its clusters empty; the selected one uses "
                f"{int(best['clusters_used'])}: widen the search (e.g. a lower inverse temperature or "
                f"learning rate) or lower model.n_clusters")
    if selection:
        summary["choose_k"] = {k: v for k, v in selection.as_dict().items() if k != "table"}
    elif "model.n_clusters" in sweep.search:
        w = edge_warning(int(best["model.n_clusters"]), sorted(int(v) for v in done["model.n_clusters"].unique()),
                         f"the K selected by {sweep.metric}")
        summary["warnings"] += [w] if w else []
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return {"summary": summary, "table": df}


def _stages_of(spec):
    from ..models import get_model_class

    cls = get_model_class(spec.model_name)
    from ..models.base import Normalizer

    return cls(4, spec.model, Normalizer(4)).stages()


def _py(v: Any):
    return v.item() if hasattr(v, "item") else v
