"""The driver side of training: data → per-worker shards → ``TorchTrainer`` → artifact.

``ScalingConfig``, ``RunConfig`` and the data split are built here and only here.
Each worker gets its own disjoint list of shard files (``ShardFilesDataConfig``),
so a run is reproducible for a given seed and worker count, every row belongs
to exactly one worker, and all workers take the same number of steps per epoch.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import DistclustError, OutputExistsError, SpecError
from .ray_setup import ensure_ray, use_datasource_v2, local_cpus
from .worker import ERROR_MARK, train_fn

RUN_NAME = "train"
CACHE_LIMIT_BYTES = 2 << 30  # data.materialize "auto": a worker holds its shard in memory below 2 GiB


@dataclass
class TrainResult:
    run_dir: Path
    model_dir: Path
    metrics: dict
    history: list
    wall_s: float


def _data_config_cls():
    from ray.train import DataConfig

    class ShardFilesDataConfig(DataConfig):
        """Give rank r the dataset built from its own shard files (no dynamic splitting)."""

        def __init__(self, per_rank):
            super().__init__(datasets_to_split=[])
            self.per_rank = per_rank

        def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
            if len(self.per_rank) != world_size:
                raise ValueError(f"{len(self.per_rank)} shard lists for {world_size} workers")
            return [{name: self.per_rank[r].iterator() for name in datasets} for r in range(world_size)]

    return ShardFilesDataConfig


def _worker_error(exc: BaseException) -> DistclustError | None:
    """Recover a user-facing error raised inside a worker from Ray's wrapping."""
    seen = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if id(e) in seen or e is None:
            continue
        seen.add(id(e))
        text = str(e)
        if ERROR_MARK in text:
            payload = text.split(ERROR_MARK, 1)[1]
            try:
                d, _ = json.JSONDecoder().raw_decode(payload)
                return DistclustError(d["what"], d.get("where"), d.get("fix"))
            except ValueError:
                return DistclustError(payload.splitlines()[0])
        stack.extend([e.__cause__, e.__context__, *getattr(e, "worker_failures", {}).values()]
                     if hasattr(e, "worker_failures") else [e.__cause__, e.__context__])
    return None


def prepare_run_dir(out: Path, resume: bool, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if overwrite:
            shutil.rmtree(out)
        elif (out / "model").exists() and not resume:
            raise OutputExistsError(f"run directory '{out}' already holds a trained model", str(out),
                                    "pass a new --out, or --overwrite to replace it")
        elif (out / "ray").exists() and not resume:
            raise OutputExistsError(f"run directory '{out}' holds an unfinished run", str(out),
                                    "pass --resume to continue it from its last checkpoint, --overwrite to start "
                                    "again, or a new --out")
    out.mkdir(parents=True, exist_ok=True)


def build_trainer(spec, out: Path, root: Path, manifest, quiet: bool, loop=None, callbacks=None):
    """The ``TorchTrainer`` for ``spec`` over the ingested dataset at ``root`` (the one place where
    ScalingConfig, RunConfig and the per-worker data split are made)."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from ..data import split_files
    from ..spec import as_dict

    k = spec.model.n_clusters
    if k > manifest.rows:
        raise SpecError(f"model.n_clusters is {k} but the data has only {manifest.rows} rows", "model.n_clusters",
                        f"use at most {manifest.rows} clusters, or more data")
    sc = spec.scaling
    world = sc.num_workers
    splits = split_files(manifest, root, world)
    min_rows = min(r for _, r in splits)
    steps = max(1, math.ceil(min_rows / spec.train.batch_size))

    ensure_ray(sc.address, None if sc.address else local_cpus(world, sc.cpus_per_worker, sc.local_num_cpus))
    rank_bytes = max(r for _, r in splits) * manifest.dim * 4
    cache = spec.data.materialize == "always" or (
        spec.data.materialize == "auto" and rank_bytes < CACHE_LIMIT_BYTES)
    columns = ["id", "features"] + (["label"] if manifest.has_label else [])
    per_rank = []
    # the V1 Parquet reader: V2 (Ray 2.60's default) adds listing tasks and footer-reader actors,
    # new worker processes that cost seconds per epoch stream here (see RAY_DATA_USE_DATASOURCE_V2)
    ray.data.DataContext.get_current().use_datasource_v2 = use_datasource_v2()
    for files, _ in splits:
        # read tasks ask for a quarter CPU: training workers that hold whole CPUs cannot starve them
        ds = ray.data.read_parquet(files, columns=columns, override_num_blocks=len(files), num_cpus=0.25)
        ds.context.execution_options.preserve_order = True  # same seed, same batches
        per_rank.append(ds)
    config = {
        "spec": spec.to_dict(),
        "input_dim": manifest.dim,
        "stats": as_dict(manifest.stats),
        "rank_rows": [r for _, r in splits],
        "rank_files": [f for f, _ in splits],
        "steps_per_epoch": steps,
        "n_classes": manifest.n_classes if manifest.has_label else None,
        "quiet": quiet,
        "cache": cache,
        "data_info": {"path": str(root), "rows": manifest.rows, "dim": manifest.dim,
                      "has_label": manifest.has_label, "label_names": manifest.label_names,
                      "source": manifest.source, "min": float(min(manifest.stats.min)),
                      "max": float(max(manifest.stats.max)), "normalize": spec.data.normalize},
    }
    resources = {"CPU": sc.cpus_per_worker}
    if sc.use_gpu:
        resources["GPU"] = sc.gpus_per_worker
    storage = sc.storage_path or str(out / "ray")
    run_root = Path(storage, RUN_NAME)
    if run_root.is_dir():  # resuming: checkpoints on disk that the killed controller may not have recorded
        config["fallback_checkpoints"] = [str(d) for d in sorted(run_root.glob("checkpoint_*"), reverse=True)]
    return TorchTrainer(
        loop or train_fn,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=world, use_gpu=sc.use_gpu, resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if sc.use_gpu else "gloo"),
        run_config=RunConfig(name=RUN_NAME, storage_path=storage,
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             failure_config=FailureConfig(max_failures=spec.train.max_failures),
                             callbacks=callbacks),
        datasets={"train": per_rank[0]},
        dataset_config=_data_config_cls()(per_rank),
    )


def fit_trainer(trainer):
    """``trainer.fit()`` with errors raised inside workers surfaced as DistclustError."""
    try:
        result = trainer.fit()
    except Exception as e:  # Ray wraps worker errors: surface ours, re-raise the rest
        err = _worker_error(e)
        if err is not None:
            raise err from None
        raise
    if getattr(result, "error", None):
        err = _worker_error(result.error)
        if err is not None:
            raise err from None
        raise result.error
    return result


def run_training(spec, out_dir, data: str | None = None, resume: bool = False, overwrite: bool = False,
                 quiet: bool | None = None) -> TrainResult:
    """Train ``spec`` with Ray Train; the artifact lands in ``out_dir/model``."""
    from ..data import resolve_dataset

    t0 = time.time()
    out = Path(out_dir).resolve()
    quiet = spec.train.quiet if quiet is None else quiet
    fresh = not out.exists() or overwrite
    prepare_run_dir(out, resume, overwrite)
    try:
        root, manifest = resolve_dataset(data or spec.data.path, out / "data", spec.data.shards, progress=not quiet)
        result = fit_trainer(build_trainer(spec, out, root, manifest, quiet))
    except BaseException:
        if fresh and not (out / "ray").exists():  # nothing worth resuming: leave no partial output
            shutil.rmtree(out, ignore_errors=True)
        raise
    return collect_artifact(result, out, t0)


def collect_artifact(result, out: Path, t0: float) -> TrainResult:
    """Copy the final checkpoint (the artifact written by rank 0) to ``out/model``."""
    from ..artifact import copy_artifact

    if result.checkpoint is None:
        raise DistclustError("training finished without producing a model", str(out),
                             "see the worker logs above; re-run with --debug")
    with result.checkpoint.as_directory() as d:
        model_dir = copy_artifact(d, out / "model")
    history = json.loads((model_dir / "history.json").read_text())
    (out / "metrics.json").write_text(json.dumps(history, indent=1))
    final = history[-1] if history else {}
    return TrainResult(out, model_dir, final, history, time.time() - t0)
