"""Job specs: YAML → validated dataclasses, with ``--set key=value`` overrides.

A job spec has four sections::

    name: digits-ae-kmeans
    data:    {path: builtin:digits, normalize: minmax}
    model:   {name: ae-kmeans, n_clusters: 10, ...model-specific keys}
    train:   {batch_size: 256, seed: 0, ...}
    scaling: {num_workers: 2, cpus_per_worker: 1, use_gpu: false, ...}

Every key is checked: an unknown key names its section and suggests the close
match, a value of the wrong type or out of range says what is allowed.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import SpecError, did_you_mean

NORMALIZE_CHOICES = ("none", "standard", "minmax", "global-minmax")


from .validation import build, param


def flat_items(d: Mapping | None, prefix: str = ""):
    """(dotted key, value) pairs of a nested spec dict, e.g. ("model.lr", 0.001)."""
    for k, v in (d or {}).items():
        if isinstance(v, Mapping):
            yield from flat_items(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def as_dict(obj) -> dict:
    return dataclasses.asdict(obj)


# --------------------------------------------------------------------------- sections
@dataclass
class DataSpec:
    """Where the data is and how features are normalised inside the model."""

    path: str | None = None          # ingested Parquet folder, any file ingest reads, or builtin:NAME
    normalize: str = param("none", choices=NORMALIZE_CHOICES)
    shards: int = param(8, ge=1)     # shards written when a raw file must be ingested first
    # auto | always | never: each worker holds its shard in memory (auto: < 2 GiB)
    materialize: str = param("auto", choices=("auto", "always", "never"))


@dataclass
class TrainSpec:
    """Settings of the shared training loop (not of a model)."""

    batch_size: int = param(256, ge=1)
    seed: int = 0
    checkpoint_every: int = param(1, ge=1)        # epochs between checkpoints
    eval_every: int = param(1, ge=0, fix="use 0 (never) or a positive number of epochs")  # label metrics
    # rows per epoch over all workers (0 = the whole data set): big tables keep a schedule's optimiser
    # steps fixed as they grow; successive epochs draw different rows (a fresh shuffle each epoch)
    epoch_rows: int = param(0, ge=0, fix="use 0 (every row every epoch) or a number of rows such as 20000")
    shuffle_buffer: int = param(20000, ge=0, fix="use 0 (no shuffle) or more rows")  # each worker's buffer
    max_failures: int = param(0, ge=-1, fix="use -1 (retry forever), 0 or more")  # Ray Train restarts
    # stop a stage after this many epochs without improvement (0 = off)
    early_stop_patience: int = param(0, ge=0, fix="use 0 (train every epoch) or a positive number of epochs such as 5")
    # the stages early stopping watches, by name (empty: every stage), e.g. [vade] to leave pretraining alone
    early_stop_stages: list[str] = param(factory=list)
    # an improvement is a relative drop of at least this much
    early_stop_min_delta: float = param(1e-3, ge=0, lt=1, fix="use a relative improvement in [0, 1), e.g. 0.001 (0.1 %)")
    # fail a run with no finished step for this long (0 = wait forever)
    stall_timeout_s: float = param(900.0, ge=0, fix="use a number of seconds such as 900, or 0 to turn the "
                                                    "stall watchdog off")
    quiet: bool = False


@dataclass
class ScalingSpec:
    """How many Ray Train workers, on what, against which cluster."""

    num_workers: int = param(2, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = param(1.0, gt=0)
    gpus_per_worker: float = param(1.0, gt=0)
    address: str | None = None       # Ray address; null = start a local Ray
    storage_path: str | None = None  # checkpoints; default RUN_DIR/ray (shared storage on a cluster)
    local_num_cpus: int | None = None  # logical CPUs of a local Ray (default: max(cores, workers*cpus+1))
    autoscaling: bool = False        # the cluster adds nodes on demand: the pre-flight check only warns


@dataclass
class JobSpec:
    name: str
    data: DataSpec
    model_name: str
    model: Any                       # the model's own Params dataclass
    train: TrainSpec
    scaling: ScalingSpec
    source: str = "<dict>"
    raw: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "data": as_dict(self.data),
                "model": {"name": self.model_name, **as_dict(self.model)},
                "train": as_dict(self.train), "scaling": as_dict(self.scaling)}


TOP_KEYS = ("name", "data", "model", "train", "scaling")


def parse_value(text: str) -> Any:
    """Parse the VALUE of ``--set KEY=VALUE`` as YAML (so 1e-3, [1,2], true work)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict, overrides: list[str] | dict | None) -> dict:
    """Apply ``section.key=value`` overrides (CLI ``--set``) to a raw spec dict."""
    raw = copy.deepcopy(raw)
    items = overrides.items() if isinstance(overrides, dict) else []
    if isinstance(overrides, list):
        parsed = []
        for item in overrides:
            if "=" not in item:
                raise SpecError(f"override '{item}' has no '='", "--set",
                                "write overrides as --set section.key=value, e.g. --set model.n_clusters=20")
            k, v = item.split("=", 1)
            parsed.append((k.strip(), parse_value(v)))
        items = parsed
    for key, value in items:
        parts = key.split(".")
        if parts[0] not in TOP_KEYS:
            raise SpecError(f"override key '{key}' does not start with a spec section.{did_you_mean(parts[0], TOP_KEYS)}",
                            "--set", f"start the key with one of {', '.join(TOP_KEYS)}")
        node = raw
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise SpecError(f"override key '{key}' goes through a non-mapping", "--set", "check the key path")
        node[parts[-1]] = value
    return raw


def read_yaml(path: Path, what: str):
    """YAML file → object; a syntax error becomes one line naming the line and column."""
    try:
        return yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        loc = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(f"{what} is not valid YAML ({problem}{loc})", str(path), "fix the YAML syntax") from None


def load_spec(source: str | Path | Mapping, overrides: list[str] | dict | None = None) -> JobSpec:
    """Load and validate a job spec from a YAML path or a mapping."""
    if isinstance(source, Mapping):
        raw, where = dict(source), "<dict>"
    else:
        path = Path(source)
        if not path.is_file():
            raise SpecError(f"job spec '{path}' does not exist", str(path),
                            "pass the path of a YAML job spec, e.g. jobs/digits-ae-kmeans.yaml")
        raw = read_yaml(path, "job spec")
        where = str(path)
        if not isinstance(raw, dict):
            raise SpecError("job spec must be a YAML mapping", where, "start the file with 'name:', 'model:' …")
    raw = apply_overrides(raw, overrides)
    return spec_from_dict(raw, where)


def spec_from_dict(raw: dict, where: str = "<dict>") -> JobSpec:
    from .models.registry import get_model_class

    for key in raw:
        if key not in TOP_KEYS:
            raise SpecError(f"unknown top-level key '{key}'.{did_you_mean(key, TOP_KEYS)}", where,
                            f"allowed top-level keys are: {', '.join(TOP_KEYS)}")
    model_raw = raw.get("model")
    if not isinstance(model_raw, dict) or "name" not in model_raw:
        raise SpecError("the spec has no 'model.name'", where,
                        "add a model section, e.g. model: {name: ae-kmeans, n_clusters: 10}")
    model_cls = get_model_class(model_raw["name"])
    try:
        model = build(model_cls.Params, model_raw, "model", ignore=("name",))
        model.check_training("model")     # training-only checks (a saved model loads without them)
        return JobSpec(
            name=str(raw.get("name") or model_raw["name"]),
            data=build(DataSpec, raw.get("data"), "data"),
            model_name=model_cls.name,
            model=model.resolved(),
            train=build(TrainSpec, raw.get("train"), "train"),
            scaling=build(ScalingSpec, raw.get("scaling"), "scaling"),
            source=where,
            raw=raw,
        )
    except SpecError as e:
        if where != "<dict>" and e.where and where not in e.where:
            raise SpecError(e.what, f"{where}: {e.where}", e.fix) from None
        raise
