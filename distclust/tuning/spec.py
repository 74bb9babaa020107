"""The sweep spec (``tune/*.yaml``): fields, validation, the base job it sweeps, its search space."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SpecError
from ..spec import apply_overrides, read_yaml
from ..validation import build, param, require

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
    algorithm: str = param("grid", choices=("grid", "random", "optuna"))
    num_samples: int = param(1, ge=1)
    # None: choose_k when model.n_clusters is searched, else silhouette
    metric: str | None = param(None, choices=tuple(METRIC_MODES))
    # DEC, IDEC and VaDE reshape their own embedding around the K clusters they were given: on
    # MNIST every K scored a silhouette of ~0.9 there and the smallest K won. Comparing all
    # trials' partitions in one space that does not depend on K avoids that.
    score_space: str = param("embedding", choices=SCORE_SPACES)
    labels_for_selection: bool = False
    # a trial whose partition leaves some of its K clusters empty ranks after every trial that uses
    # them all (silhouette and Davies-Bouldin reward fewer, bigger clusters)
    require_all_clusters: bool = True
    scheduler: str = param("asha", choices=("asha", "none"))
    asha_grace_period: int = 1
    asha_reduction_factor: int = 2
    asha_metric: str = "loss"
    max_concurrent_trials: int = param(1, ge=1)
    trial_cpus: float = 0.01          # the trial driver itself; its Train workers ask for their own
    eval_sample: int = 5000
    seed: int = 0
    select_replicates: int = param(10, ge=2)   # choose_k: half-splits per K and reference data sets
    select_restarts: int = param(10, ge=1)     # choose_k: k-means restarts per half-split fit

    def __post_init__(self) -> None:
        if self.metric is None:   # the default depends on what is searched
            self.metric = "choose_k" if "model.n_clusters" in self.search else "silhouette"

    def check(self, s: str) -> None:
        require(self.metric not in LABEL_METRICS or self.labels_for_selection, f"{s}.metric",
                f"'{s}.metric' is '{self.metric}', a label metric, but labels_for_selection is false",
                "choose a label-free metric (silhouette, davies_bouldin, bic, loss, stability) or set "
                "labels_for_selection: true")
        if self.metric == "choose_k":
            from ..choose_k import check_sweep

            check_sweep(self, s)
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
    from ..spec import load_spec

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
    from ..spec import parse_value

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
