"""``distclust tune``: Ray Tune sweeps of job specs, with label-free model selection.

Each trial is a real Ray Train run (a function trainable that builds the same
``TorchTrainer`` as ``distclust train`` and forwards its per-epoch reports with
``TuneReportCallback``). After training, the trial scores its artifact on a
seeded sample of the data with the sweep's *unsupervised* criterion; labels
(when present) are reported beside it and used for selection only if the spec
says so.

Sweep spec (``tune/*.yaml``)::

    name: digits-k
    base: ../jobs/digits-ae-kmeans.yaml     # relative to the sweep file
    overrides: {model.pretrain_epochs: 20}  # fixed changes to the base job
    search:                                 # dotted job keys → domains
      model.n_clusters: {grid: [6, 8, 10, 12, 14]}
      model.pretrain_lr: {loguniform: [1.0e-4, 1.0e-2]}
    algorithm: grid                         # grid | random | optuna
    num_samples: 1                          # grid: repeats of the grid; random/optuna: trials
    metric: choose_k                        # choose_k (default when model.n_clusters is searched: estimate K by
                                            #   stability + gap + DP mixture in one space, docs/choosing-k.md) |
                                            #   silhouette | davies_bouldin | bic | loss | stability | acc | nmi | ari
    score_space: embedding                  # where silhouette / Davies-Bouldin / BIC are computed:
                                            #   embedding (each trial's own), pretrained (the base job's
                                            #   model.pretrained, the same for all trials), features (input)
    scheduler: asha                         # asha | none (ASHA stops poor trials on the training loss)
    max_concurrent_trials: 1
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DistclustError, SpecError, did_you_mean
from .spec import apply_overrides, read_yaml
from .validation import build, require

SCORE_SPACES = ("embedding", "pretrained", "features")
METRIC_MODES = {"choose_k": "max", "silhouette": "max", "davies_bouldin": "min", "bic": "min", "loss": "min",
                "neg_elbo": "min", "stability": "max",
                "acc": "max", "nmi": "max", "ari": "max"}
LABEL_METRICS = ("acc", "nmi", "ari")
DOMAINS = ("grid", "choice", "uniform", "loguniform", "randint", "qrandint")


@dataclass
class SweepSpec:
    name: str
    base: str
    search: dict = field(default_factory=dict)
    overrides: dict = field(default_factory=dict)
    data: str | None = None
    algorithm: str = "grid"
    num_samples: int = 1
    metric: str | None = None          # None: choose_k when model.n_clusters is searched, else silhouette
    # DEC, IDEC and VaDE reshape their own embedding around the K clusters they were given: on
    # MNIST every K scored a silhouette of ~0.9 there and the smallest K won. Comparing all
    # trials' partitions in one space that does not depend on K avoids that.
    score_space: str = "embedding"
    labels_for_selection: bool = False
    scheduler: str = "asha"
    asha_grace_period: int = 1
    asha_reduction_factor: int = 2
    asha_metric: str = "loss"
    max_concurrent_trials: int = 1
    trial_cpus: float = 0.01          # the trial driver itself; its Train workers ask for their own
    eval_sample: int = 5000
    seed: int = 0
    select_replicates: int = 5        # choose_k: half-splits per K and reference data sets

    def check(self, s: str) -> None:
        if self.metric is None:
            self.metric = "choose_k" if "model.n_clusters" in self.search else "silhouette"
        require(self.algorithm in ("grid", "random", "optuna"), f"{s}.algorithm",
                f"'{s}.algorithm' is '{self.algorithm}'", "use grid, random or optuna")
        require(self.metric in METRIC_MODES, f"{s}.metric",
                f"'{s}.metric' is '{self.metric}'.{did_you_mean(self.metric, METRIC_MODES)}",
                f"use one of {', '.join(METRIC_MODES)}")
        require(self.metric not in LABEL_METRICS or self.labels_for_selection, f"{s}.metric",
                f"'{s}.metric' is '{self.metric}', a label metric, but labels_for_selection is false",
                "choose a label-free metric (silhouette, davies_bouldin, bic, loss, stability) or set "
                "labels_for_selection: true")
        require(self.score_space in SCORE_SPACES, f"{s}.score_space",
                f"'{s}.score_space' is '{self.score_space}'.{did_you_mean(self.score_space, SCORE_SPACES)}",
                f"use one of {', '.join(SCORE_SPACES)}")
        if self.metric == "choose_k":
            from .choose_k import check_sweep

            check_sweep(self, s)
        require(self.scheduler in ("asha", "none"), f"{s}.scheduler", f"'{s}.scheduler' is '{self.scheduler}'",
                "use asha or none")
        require(self.num_samples >= 1 and self.max_concurrent_trials >= 1, f"{s}.num_samples",
                "num_samples and max_concurrent_trials must be ≥ 1", "set them to 1 or more")
        require(bool(self.search), f"{s}.search", "the sweep has an empty search space",
                "add at least one key, e.g. model.n_clusters: {grid: [5, 10, 15]}")
        for key, dom in self.search.items():
            require(isinstance(dom, dict) and len(dom) == 1 and next(iter(dom)) in DOMAINS, f"{s}.search.{key}",
                    f"search domain of '{key}' is {dom!r}", f"write it as one of {', '.join(DOMAINS)}: VALUES")
            kind, vals = next(iter(dom.items()))
            require(self.algorithm == "grid" or kind != "grid", f"{s}.search.{key}",
                    f"'grid' domains need algorithm: grid (got {self.algorithm})", "use choice: [...] instead")


def load_sweep(path: str | Path, overrides: list[str] | None = None,
               base_job: str | None = None) -> tuple[SweepSpec, dict, Path]:
    """(sweep spec, validated base job raw dict, sweep file path); ``base_job`` replaces the spec's base."""
    from .spec import load_spec

    path = Path(path)
    if not path.is_file():
        raise SpecError(f"sweep spec '{path}' does not exist", str(path), "pass a YAML file from tune/")
    raw = read_yaml(path, "sweep spec")
    sweep = build(SweepSpec, {**raw, **({"base": str(Path(base_job).resolve())} if base_job else {})}, "sweep")
    base = Path(sweep.base)
    if not base.is_absolute():
        base = (path.parent / base) if (path.parent / base).is_file() else Path(sweep.base)
    if not base.is_file():
        raise SpecError(f"base job '{sweep.base}' does not exist", f"{path}: base",
                        "give the job spec path relative to the sweep file")
    base_raw = read_yaml(base, "base job spec")
    base_raw = apply_overrides(base_raw, {**sweep.overrides, **dict(_kv(o) for o in overrides or [])})
    base_spec = load_spec(base_raw)  # validate the base before anything runs
    if sweep.score_space == "pretrained" and not getattr(base_spec.model, "pretrained", None):
        raise SpecError("score_space is 'pretrained' but the base job has no model.pretrained", f"{path}: score_space",
                        "train the autoencoder once (e.g. jobs/mnist-ae-kmeans.yaml) and pass "
                        "--set model.pretrained=RUN_DIR/model, or use score_space: embedding or features")
    check_objective(sweep, base_spec, path)
    for key, dom in sweep.search.items():  # each searched key must be a valid job key
        kind, vals = next(iter(dom.items()))
        probe = vals[0] if isinstance(vals, list) and vals else vals
        try:
            load_spec(apply_overrides(base_raw, {key: probe}))
        except SpecError as e:
            raise SpecError(f"search key '{key}': {e.what}", f"{path}: search.{key}", e.fix) from None
    return sweep, base_raw, path


def check_objective(sweep: SweepSpec, base_spec, path: Path) -> None:
    """Refuse comparing trials on a loss that the swept keys themselves reweight (e.g. a KL-anneal
    schedule): trials with different schedules would be ranked on different objectives."""
    weighting = getattr(type(base_spec.model), "LOSS_WEIGHTING", ())
    swept = [k.split(".", 1)[1] for k in sweep.search if k.startswith("model.")]
    bad = [k for k in swept if weighting and k.startswith(weighting)]
    uses = [name for name, m in (("metric", sweep.metric), ("asha_metric", sweep.asha_metric if sweep.scheduler == "asha"
                                                                        else None)) if m == "loss"]
    if bad and uses:
        better = getattr(type(base_spec.model), "UNWEIGHTED_METRIC", None)
        raise SpecError(f"the sweep compares trials on the training loss ({', '.join(uses)}: loss), but the swept "
                        f"{', '.join(bad)} change how that loss is weighted, so each trial would be judged on a "
                        "different objective", f"{path}: {uses[0]}",
                        f"set {' and '.join(uses)} to {better} (the unweighted bound)" if better else
                        "select by a label-free score (e.g. metric: silhouette) and use scheduler: none")


def _kv(item: str):
    from .spec import parse_value

    k, v = item.split("=", 1)
    return k, parse_value(v)


def param_space(sweep: SweepSpec) -> dict:
    from ray import tune

    space = {}
    for key, dom in sweep.search.items():
        kind, v = next(iter(dom.items()))
        space[key] = {"grid": lambda v: tune.grid_search(list(v)), "choice": lambda v: tune.choice(list(v)),
                      "uniform": lambda v: tune.uniform(*v), "loguniform": lambda v: tune.loguniform(*v),
                      "randint": lambda v: tune.randint(*v), "qrandint": lambda v: tune.qrandint(*v)}[kind](v)
    return space


# ----------------------------------------------------------------------------- scoring
def eval_sample(data_root: str | Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """A seeded uniform sample of ``n`` rows (features, labels) read shard by shard."""
    import pyarrow.parquet as pq

    from .data import Manifest

    m = Manifest.load(data_root)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(m.rows, min(n, m.rows), replace=False))
    X, y, offset = [], [], 0
    for f in m.files(data_root):
        cols = ["features"] + (["label"] if m.has_label else [])
        t = pq.read_table(f, columns=cols)
        sel = pick[(pick >= offset) & (pick < offset + t.num_rows)] - offset
        if len(sel):
            sub = t.take(sel)
            X.append(np.stack(sub.column("features").to_numpy(zero_copy_only=False)).astype(np.float32))
            if m.has_label:
                y.append(sub.column("label").to_numpy())
        offset += t.num_rows
    return np.concatenate(X), (np.concatenate(y) if y else None)


def score_model(model_dir: str | Path, X: np.ndarray, y: np.ndarray | None, seed: int = 0,
                space: str = "embedding", space_model: str | Path | None = None) -> dict[str, float]:
    """Label-free criteria on a sample, plus label metrics when y is given. The partition is the
    model's; silhouette, Davies-Bouldin and BIC are computed in ``space``: the model's own
    embedding, the embedding of ``space_model`` (``pretrained``), or the normalised features."""
    from sklearn.metrics import davies_bouldin_score, silhouette_score
    from sklearn.mixture import GaussianMixture

    from .artifact import load
    from .metrics import cluster_scores

    model = load(model_dir)
    lab = model.predict(X)
    if space == "pretrained":
        Z = load(space_model).transform(X)
    elif space == "features":
        Z = model.normalize(X)
    else:
        Z = model.transform(X)
    out: dict[str, float] = {"clusters_used": float(len(np.unique(lab)))}
    if 1 < len(np.unique(lab)) < len(lab):
        out["silhouette"] = float(silhouette_score(Z, lab))
        out["davies_bouldin"] = float(davies_bouldin_score(Z, lab))
    else:  # a single cluster cannot be scored: rank it last
        out["silhouette"], out["davies_bouldin"] = -1.0, float("inf")
    gmm = GaussianMixture(model.n_clusters_, covariance_type="diag", random_state=seed, reg_covar=1e-4)
    out["bic"] = float(gmm.fit(Z).bic(Z))
    if y is not None:
        out.update({k: v for k, v in cluster_scores(lab, y).items() if k in LABEL_METRICS})
    return out


def _trial(config: dict, sweep_raw: dict, base_raw: dict, data_root: str, out_root: str) -> None:
    """One Tune trial: a Ray Train run of the base job with the trial's overrides, then scoring."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from .data import Manifest
    from .engine.trainer import RUN_FILE, build_trainer, collect_artifact, finished_run, fit_trainer, run_identity
    from .spec import load_spec

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
        run_id = run_identity(trial_dir, resume)
        res = collect_artifact(fit_trainer(build_trainer(spec, trial_dir, Path(data_root), manifest, quiet=True,
                                                         callbacks=[TuneReportCallback()], run_id=run_id,
                                                         resume=resume)), trial_dir, t0)
    X, y = eval_sample(data_root, sweep.eval_sample, sweep.seed)
    scores = score_model(res.model_dir, X, y, sweep.seed, sweep.score_space, getattr(spec.model, "pretrained", None))
    losses = [h["loss"] for h in res.history if "loss" in h]
    scores["loss"] = float(losses[-1]) if losses else float("nan")
    bound = [h["neg_elbo"] for h in res.history if "neg_elbo" in h]
    if bound:
        scores["neg_elbo"] = float(bound[-1])
    if sweep.metric == "stability":  # the same trial again with another seed; ARI between the two
        from sklearn.metrics import adjusted_rand_score

        from .artifact import load

        raw2 = apply_overrides(raw, {"train.seed": spec.train.seed + 1})
        res2 = collect_artifact(fit_trainer(build_trainer(load_spec(raw2), trial_dir / "seed2", Path(data_root),
                                                          manifest, quiet=True)), trial_dir / "seed2", t0)
        scores["stability"] = float(adjusted_rand_score(load(res.model_dir).predict(X), load(res2.model_dir).predict(X)))
    tune.report({**scores, "model_dir": str(res.model_dir), "scored": 1,
                 "train_wall_s": time.time() - t0})


# ----------------------------------------------------------------------------- driver
def run_sweep(path: str | Path, out_dir: str | Path, data: str | None = None, resume: bool = False,
              overwrite: bool = False, address: str | None = None, overrides: list[str] | None = None,
              progress: bool = True, base_job: str | None = None) -> dict:
    import pandas as pd
    from ray import tune
    from ray.tune import CheckpointConfig, RunConfig, TuneConfig, Tuner

    from .data import resolve_dataset
    from .engine.ray_setup import ensure_ray, local_cpus
    from .spec import as_dict, load_spec

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
    from .engine import preflight

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
        search_alg = None
        if sweep.algorithm == "random":
            from ray.tune.search.basic_variant import BasicVariantGenerator

            search_alg = BasicVariantGenerator(random_state=sweep.seed)
        elif sweep.algorithm == "optuna":
            from ray.tune.search.optuna import OptunaSearch
            import optuna

            search_alg = OptunaSearch(metric=sweep.metric, mode=mode,
                                      sampler=optuna.samplers.TPESampler(seed=sweep.seed))
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
    selection = None
    if sweep.metric == "choose_k":  # K estimated in one shared space; the trial with that K is selected
        from .choose_k import select_in_sweep

        df, done, best, selection = select_in_sweep(df, done, sweep, spec, root, out)
    else:
        best = done.sort_values(sweep.metric, ascending=(mode == "min")).iloc[0]
    df["selected"] = df["trial"] == best["trial"]
    df.to_parquet(out / "results.parquet", index=False)
    df.to_csv(out / "results.csv", index=False)
    from .artifact import copy_artifact

    copy_artifact(best["model_dir"], out / "best_model")
    plot = _plot(df, sweep, out / f"{sweep.metric}_vs_k.png")
    summary = {"best_trial": best["trial"], "metric": sweep.metric, "score_space": sweep.score_space, "mode": mode,
               "value": float(best[sweep.metric]),
               "best_config": {k: _py(best[k]) for k in sweep.search}, "trials": int(len(df)),
               "completed": int(len(done)), "stopped_early": int((df["status"] == "stopped early").sum()),
               "best_model": str(out / "best_model"), "plot": str(plot) if plot else None}
    for k in LABEL_METRICS:
        if k in best and best[k] == best[k]:
            summary[f"best_{k}"] = float(best[k])
    from .select_k import edge_warning

    summary["warnings"] = list(selection.warnings) if selection else []
    if selection:
        summary["choose_k"] = {k: v for k, v in selection.as_dict().items() if k != "table"}
    elif "model.n_clusters" in sweep.search:
        w = edge_warning(int(best["model.n_clusters"]), sorted(int(v) for v in done["model.n_clusters"].unique()),
                         f"the K selected by {sweep.metric}")
        summary["warnings"] += [w] if w else []
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return {"summary": summary, "table": df}


def _stages_of(spec):
    from .models import get_model_class

    cls = get_model_class(spec.model_name)
    from .models.base import Normalizer

    return cls(4, spec.model, Normalizer(4)).stages()


def _py(v: Any):
    return v.item() if hasattr(v, "item") else v


def _plot(df, sweep: SweepSpec, path: Path) -> Path | None:
    """The selection metric against K (or the first searched key), labels' ACC beside when known."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xkey = "model.n_clusters" if "model.n_clusters" in df else next(iter(sweep.search))
    d = df[df["status"] == "completed"].dropna(subset=[sweep.metric]).sort_values(xkey)
    if d.empty:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(d[xkey], d[sweep.metric], "o-", label=sweep.metric)
    ax.set_xlabel(xkey)
    ax.set_ylabel(sweep.metric)
    sel = d[d["selected"]]
    ax.plot(sel[xkey], sel[sweep.metric], "r*", markersize=16, label="selected")
    if "acc" in d and d["acc"].notna().any():
        ax2 = ax.twinx()
        ax2.plot(d[xkey], d["acc"], "s--", color="gray", alpha=0.7, label="acc (labels, not used)")
        ax2.set_ylabel("acc (reported, not used for selection)")
    ax.set_title(f"sweep {sweep.name}: {sweep.metric} ({METRIC_MODES[sweep.metric]})")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
