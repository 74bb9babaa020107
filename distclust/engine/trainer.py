"""The driver side of training: data → per-worker shard files → ``TorchTrainer`` → artifact.

``ScalingConfig``, ``RunConfig`` and the data split are built here and only here.
Each worker gets its own disjoint list of shard files, which it reads itself with
pyarrow (``data/shard_reader.py``), so a run is reproducible for a given seed and
worker count, every row belongs to exactly one worker, reads never wait for CPUs the
workers hold, and all workers take the same number of steps per epoch. Each run has
its own identity (``run.json``), the name of its checkpoint folder; the driver checks
that the cluster can place the job before starting it (``preflight.py``) and fails a
run that stops making progress (``watchdog.py``).
"""
from __future__ import annotations

import json
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..errors import DistclustError, OutputExistsError, SpecError
from .ray_setup import ensure_ray, local_cpus
from .worker import ERROR_MARK, train_fn

RUN_FILE = "run.json"       # the run's identity, in its output directory
CACHE_LIMIT_BYTES = 2 << 30  # data.materialize "auto": a worker holds its shard in memory below 2 GiB


@dataclass
class TrainResult:
    run_dir: Path
    model_dir: Path
    metrics: dict
    history: list
    wall_s: float
    already_finished: bool = False


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
        unfinished = (out / RUN_FILE).is_file() or (out / "ray").exists()
        if overwrite:
            shutil.rmtree(out)
        elif (out / "model").exists() and not resume:
            raise OutputExistsError(f"run directory '{out}' already holds a trained model", str(out),
                                    "pass a new --out, or --overwrite to replace it")
        elif unfinished and not resume:
            raise OutputExistsError(f"run directory '{out}' holds an unfinished run", str(out),
                                    "pass --resume to continue it from its last checkpoint, --overwrite to start "
                                    "again, or a new --out")
    out.mkdir(parents=True, exist_ok=True)


# what a resumed run may change: how it is watched and where it runs, not what it trains
RESUME_MAY_CHANGE = ("train.quiet", "train.stall_timeout_s", "train.max_failures", "train.checkpoint_every",
                     "train.eval_every", "scaling.", "data.path", "data.materialize", "name")


def check_resume_spec(saved: dict, spec: dict, out: Path) -> None:
    """Refuse to resume a run with a spec that trains something else: the checkpoint's optimiser state
    (its lr included) and epoch counters would silently win over the new values."""
    from ..spec import flat_items

    a, b = dict(flat_items(saved)), dict(flat_items(spec))
    diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and not k.startswith(RESUME_MAY_CHANGE)]
    if diff:
        shown = "; ".join(f"{k}: {a.get(k)!r} → {b.get(k)!r}" for k in diff[:5]) + (" …" if len(diff) > 5 else "")
        raise SpecError(f"--resume was given a spec that differs from the run being resumed ({shown})", str(out),
                        "resume with the run's own spec and overrides, or start again with --overwrite or a new --out")


def run_identity(out: Path, resume: bool, spec: dict | None = None) -> str:
    """This run's id: read back from ``out/run.json`` when resuming, else a new one written there
    (with the spec, so a resume with a different one is refused: ``check_resume_spec``).

    The id names the run's Ray Train folder under the storage path and is stored in every checkpoint, so
    runs (and sweep trials) that share one ``scaling.storage_path`` never see each other's checkpoints.
    """
    f = out / RUN_FILE
    spec = json.loads(json.dumps(spec, default=str)) if spec is not None else None   # as run.json holds it
    if resume and f.is_file():
        info = json.loads(f.read_text())
        if spec is not None and info.get("spec") is not None:
            check_resume_spec(info["spec"], spec, out)
        return info["run_id"]
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    info = {"run_id": run_id, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if spec is not None:
        info["spec"] = spec
    f.write_text(json.dumps(info, indent=1))
    return run_id


@dataclass
class PreparedRun:
    """A ``TorchTrainer`` and what the driver needs to watch it."""

    trainer: object
    run_id: str
    board: object | None
    stall_timeout_s: float
    storage_dir: Path


def build_trainer(spec, out: Path, root: Path, manifest, quiet: bool, loop=None, callbacks=None,
                  run_id: str | None = None, resume: bool = False) -> PreparedRun:
    """The ``TorchTrainer`` for ``spec`` over the ingested dataset at ``root`` (the one place where
    ScalingConfig, RunConfig and the per-worker data split are made)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from ..data import split_files
    from ..spec import as_dict
    from . import preflight, watchdog
    from .config import TrainConfig, steps_per_epoch

    k = spec.model.n_clusters
    if k > manifest.rows:
        raise SpecError(f"model.n_clusters is {k} but the data has only {manifest.rows} rows", "model.n_clusters",
                        f"use at most {manifest.rows} clusters, or more data")
    sc = spec.scaling
    world = sc.num_workers
    splits = split_files(manifest, root, world)
    max_rows = max(r for _, r in splits)
    steps = steps_per_epoch(max_rows, world, spec.train.batch_size, spec.train.epoch_rows)

    ensure_ray(sc.address, None if sc.address else local_cpus(world, sc.cpus_per_worker, sc.local_num_cpus))
    preflight.check_training(spec)
    rank_bytes = max_rows * manifest.dim * 4
    cache = spec.data.materialize == "always" or (
        spec.data.materialize == "auto" and rank_bytes < CACHE_LIMIT_BYTES)
    run_id = run_id or f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    storage = Path(sc.storage_path or out / "ray")
    name = f"distclust-{run_id}"
    board = watchdog.make_board() if spec.train.stall_timeout_s > 0 else None
    fallback = sorted((storage / name).glob("checkpoint_*"), reverse=True) if resume else []
    cfg = TrainConfig(
        spec=spec.to_dict(), input_dim=manifest.dim, stats=as_dict(manifest.stats),
        rank_files=[f for f, _ in splits], rank_rows=[r for _, r in splits], steps_per_epoch=steps, cache=cache,
        has_label=manifest.has_label, n_classes=manifest.n_classes if manifest.has_label else None,
        data_info={"path": str(root), "rows": manifest.rows, "dim": manifest.dim,
                   "has_label": manifest.has_label, "label_names": manifest.label_names,
                   "source": manifest.source, "min": float(min(manifest.stats.min)),
                   "max": float(max(manifest.stats.max)), "normalize": spec.data.normalize},
        run_id=run_id, quiet=quiet, fallback_checkpoints=[str(d) for d in fallback], progress_board=board)
    resources = {"CPU": sc.cpus_per_worker}
    if sc.use_gpu:
        resources["GPU"] = sc.gpus_per_worker
    trainer = TorchTrainer(
        loop or train_fn,
        train_loop_config={"train_config": cfg},
        scaling_config=ScalingConfig(num_workers=world, use_gpu=sc.use_gpu, resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if sc.use_gpu else "gloo"),
        run_config=RunConfig(name=name, storage_path=str(storage),
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             failure_config=FailureConfig(max_failures=spec.train.max_failures),
                             callbacks=callbacks),
    )
    return PreparedRun(trainer, run_id, board, spec.train.stall_timeout_s, storage / name)


def fit_trainer(run: PreparedRun):
    """``trainer.fit()`` under the stall watchdog, with errors raised inside workers surfaced as
    DistclustError."""
    from . import watchdog

    try:
        result = watchdog.fit_watched(run.trainer.fit, run.board, run.stall_timeout_s, "train.stall_timeout_s")
    except DistclustError:
        raise
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


def finished_run(out: Path, t0: float) -> TrainResult | None:
    """The result of a run in ``out`` that had already finished (``--resume`` then has nothing to do)."""
    model_dir = out / "model"
    if not (model_dir / "config.json").is_file():
        return None
    history = json.loads((model_dir / "history.json").read_text())
    return TrainResult(out, model_dir, history[-1] if history else {}, history, time.time() - t0,
                       already_finished=True)


def run_training(spec, out_dir, data: str | None = None, resume: bool = False, overwrite: bool = False,
                 quiet: bool | None = None) -> TrainResult:
    """Train ``spec`` with Ray Train; the artifact lands in ``out_dir/model``.

    With ``resume`` the run in ``out_dir`` continues from its own last checkpoint (and a run that had
    finished is returned as it is, ``already_finished`` set); without it a run never reads checkpoints,
    not even ones under a shared ``scaling.storage_path``.
    """
    from ..data import resolve_dataset

    t0 = time.time()
    out = Path(out_dir).resolve()
    quiet = spec.train.quiet if quiet is None else quiet
    fresh = not out.exists() or overwrite or not any(out.iterdir())
    prepare_run_dir(out, resume, overwrite)
    if resume and (done := finished_run(out, t0)) is not None:
        return done
    run_id = run_identity(out, resume, spec.to_dict())
    try:
        root, manifest = resolve_dataset(data or spec.data.path, out / "data", spec.data.shards, progress=not quiet)
        result = fit_trainer(build_trainer(spec, out, root, manifest, quiet, run_id=run_id, resume=resume))
    except BaseException:
        if fresh and not _has_checkpoints(spec, out, run_id):  # nothing worth resuming: leave no partial output
            shutil.rmtree(out, ignore_errors=True)
        raise
    return collect_artifact(result, out, t0)


def _has_checkpoints(spec, out: Path, run_id: str) -> bool:
    storage = Path(spec.scaling.storage_path or out / "ray")
    return any((storage / f"distclust-{run_id}").glob("checkpoint_*"))


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
