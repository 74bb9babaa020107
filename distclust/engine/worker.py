"""The per-worker training function (``train_fn(config)``) that runs every model.

It builds the model, resumes from the latest checkpoint if there is one, then
runs the model's stages: optional ``on_start`` global pass, then epochs of DDP
steps over this worker's shard, a report per epoch (metrics, and a checkpoint
every ``checkpoint_every`` epochs), and finally the artifact as last checkpoint.
"""
from __future__ import annotations

import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import DistclustError
from .context import WorkerContext
from .stopping import should_stop

ERROR_MARK = "DISTCLUST_ERROR::"
STATE_FILE = "state.pt"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def quiet_library_logs() -> None:
    """Keep worker output to distclust's own progress lines (Ray Train/Data INFO, FAISS loader)."""
    import logging

    names = ["ray.train", "ray.data", "ray.tune", "faiss", "faiss.loader"]
    try:  # Train V2 logs every report at INFO under the module's *file path* as logger name
        import ray.train.v2._internal.execution.context as v2ctx

        names.append(v2ctx.__file__)
    except ImportError:
        pass
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False
        DataContext.get_current().print_on_execution_start = False
    except Exception:
        pass


def peak_rss_mib() -> float:
    """This process's peak resident memory (Linux ru_maxrss is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker_placement(rank: int, world: int, device) -> list[dict]:
    """Where every rank runs (node id, host, device), gathered on all ranks; saved in the artifact."""
    import socket

    import ray
    import torch.distributed as dist

    me = {"rank": rank, "node_id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(),
          "device": str(device)}
    if world > 1 and dist.is_available() and dist.is_initialized():
        out = [None] * world
        dist.all_gather_object(out, me)
        return out
    return [me]


def _fmt_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _unregistered_state(dirs: list[str], device):
    """The newest whole checkpoint among ``dirs`` (newest first) that Ray had not yet registered.

    A run killed between a worker writing its checkpoint and the controller recording it leaves a
    complete directory that ``ray.train.get_checkpoint()`` does not return; resuming from it instead
    of from scratch is what a user who pressed Ctrl-C expects. A directory still being copied when the
    run died fails to load and is skipped.
    """
    for d in dirs:
        try:
            return torch.load(Path(d, STATE_FILE), map_location=device, weights_only=False)
        except Exception:  # noqa: BLE001 - partial copy: try the previous one
            continue
    return None


def train_fn(config: dict) -> None:
    """Entry point of every Ray Train worker."""
    try:
        _train(config)
    except DistclustError as e:  # carry the user-facing message across Ray intact
        raise RuntimeError(ERROR_MARK + json.dumps({"type": type(e).__name__, "what": e.what,
                                                    "where": e.where, "fix": e.fix})) from None


def _train(config: dict) -> None:
    import ray.train
    import ray.train.torch
    from ray.train import Checkpoint

    from ..artifact import save_artifact
    from ..spec import spec_from_dict
    from ..models import Normalizer, get_model_class
    from ..data.manifest import FeatureStats

    spec = spec_from_dict(config["spec"])
    quiet_library_logs()
    ctx_train = ray.train.get_context()
    rank, world = ctx_train.get_world_rank(), ctx_train.get_world_size()
    threads = max(1, int(spec.scaling.cpus_per_worker))
    torch.set_num_threads(threads)
    device = ray.train.torch.get_device() if spec.scaling.use_gpu else torch.device("cpu")
    quiet = spec.train.quiet or config.get("quiet", False)

    seed = spec.train.seed
    seed_everything(seed)  # identical initial weights on every rank
    cls = get_model_class(spec.model_name)
    stats = FeatureStats(**config["stats"])
    model = cls(config["input_dim"], spec.model, Normalizer.from_stats(stats, spec.data.normalize)).to(device)
    stages = model.stages()

    # ---- resume ------------------------------------------------------------------
    state = None
    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        state = _unregistered_state(config.get("fallback_checkpoints") or [], device)
    if ckpt is not None:
        d = ckpt.to_directory()
        if Path(d, STATE_FILE).is_file():
            state = torch.load(Path(d, STATE_FILE), map_location=device, weights_only=False)
        elif Path(d, "config.json").is_file():  # the run had finished: hand back its artifact
            hist = json.loads(Path(d, "history.json").read_text()) or [{}]
            last = dict(hist[-1])
            losses = [h["loss"] for h in hist if "loss" in h]
            if losses:
                last.setdefault("loss", losses[-1])
            ray.train.report({**{k: v for k, v in last.items() if isinstance(v, (int, float, str))},
                              "resumed_finished": 1},
                             checkpoint=Checkpoint.from_directory(d) if rank == 0 else None)
            return
    start_stage, start_epoch, history = 0, 0, []
    global_step = 0
    if state is not None:
        model.load_state_dict(state["model"])
        start_stage, start_epoch = state["stage_index"], state["next_epoch"]
        history, global_step = state["history"], state["global_step"]
        if rank == 0 and not quiet:
            where = stages[start_stage].name if start_stage < len(stages) else "the end"
            print(f"[distclust] resuming from checkpoint: stage '{where}', epoch {start_epoch}", flush=True)
    seed_everything(seed + 7919 * (rank + 1) + 104729 * global_step)  # per-rank streams (dropout, sampling)

    ddp = model
    if world > 1:
        ddp = ray.train.torch.prepare_model(model, move_to_device=False,
                                            parallel_strategy_kwargs={"find_unused_parameters": cls.find_unused_parameters})

    workers = worker_placement(rank, world, device)
    rank_rows = config["rank_rows"][rank]
    steps = config["steps_per_epoch"]
    ctx = WorkerContext(model, ray.train.get_dataset_shard("train"), rank, world, device, seed,
                        spec.train.batch_size, rank_rows, steps, spec.train.shuffle_buffer,
                        n_classes=config.get("n_classes"))
    ctx.global_step = global_step
    if config.get("cache"):
        ctx.cache_shard()
    eval_every = spec.train.eval_every if config.get("n_classes") else 0
    total_epochs = sum(s.epochs for s in stages)
    done_epochs = sum(s.epochs for s in stages[:start_stage]) + start_epoch
    t_run = time.time()

    last_loss: list[float] = []  # every report carries the latest training loss (schedulers such as ASHA need it)

    def report(metrics: dict, stage_index: int, next_epoch: int, optimizer, with_ckpt: bool, final_dir=None):
        if "loss" in metrics:
            last_loss[:] = [metrics["loss"]]
        elif last_loss:
            metrics["loss"] = last_loss[0]
        history.append(metrics)
        if rank == 0 and not quiet:
            show = [f"{k} {v:.4g}" for k, v in metrics.items()
                    if k not in ("stage", "epoch", "stage_index", "epochs_done", "samples_per_s", "time_s", "peak_rss_mib")
                    and isinstance(v, float)]
            done = metrics.get("epochs_done", 0)
            rate = (time.time() - t_run) / max(done - t0_done, 1)
            eta = _fmt_eta(rate * (total_epochs - done))
            print(f"[{metrics['stage']}] epoch {metrics['epoch']}/{metrics.get('stage_epochs', 0)}  "
                  + "  ".join(show[:8]) + f"  {metrics.get('samples_per_s', 0):.0f} samples/s  ETA {eta}",
                  flush=True)
        checkpoint = None
        if rank == 0 and (with_ckpt or final_dir):
            if final_dir is not None:
                checkpoint = Checkpoint.from_directory(final_dir)
            else:
                tmp = tempfile.mkdtemp(prefix="distclust-ckpt-")
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict() if optimizer else None,
                            "stage_index": stage_index, "next_epoch": next_epoch, "history": history,
                            "global_step": ctx.global_step}, Path(tmp, STATE_FILE))
                checkpoint = Checkpoint.from_directory(tmp)
        ray.train.report({k: v for k, v in metrics.items() if isinstance(v, (int, float, str))},
                         checkpoint=checkpoint)

    t0_done = done_epochs
    for si in range(start_stage, len(stages)):
        stage = stages[si]
        ctx.stage, ctx.stop_requested = stage.name, False
        first_epoch = start_epoch if si == start_stage else 0
        params = list(stage.parameters()) if stage.parameters else list(model.parameters())
        optimizer = torch.optim.Adam(params, lr=stage.lr, weight_decay=stage.weight_decay) if stage.epochs else None
        if state is not None and si == start_stage and first_epoch > 0 and optimizer and state.get("optimizer"):
            optimizer.load_state_dict(state["optimizer"])
        start_metrics = {}
        if first_epoch == 0 and stage.on_start is not None:
            start_metrics = stage.on_start(ctx) or {}
        if stage.epochs == 0:  # a pure global step (e.g. k-means): report once, with a checkpoint
            m = {"stage": stage.name, "epoch": 0, "stage_epochs": 0, "epochs_done": done_epochs, **start_metrics}
            if eval_every and model.fitted():
                m.update(ctx.label_metrics())
            report(m, si + 1, 0, None, with_ckpt=True)
            continue
        for epoch in range(first_epoch, stage.epochs):
            ctx.epoch = epoch
            model.train()
            t0 = time.time()
            sums: dict[str, torch.Tensor] = {}
            n_batches = n_rows = 0
            for step, batch in enumerate(ctx.epoch_batches(done_epochs)):
                if stage.on_step is not None:
                    extra = stage.on_step(ctx, epoch * steps + step)
                    for k, v in (extra or {}).items():
                        start_metrics[k] = v
                x = batch["features"]
                model.train_step, model.train_epoch = ctx.global_step, done_epochs
                out = ddp(x, stage.name)
                optimizer.zero_grad(set_to_none=True)
                out["loss"].backward()
                optimizer.step()
                ctx.global_step += 1
                for k, v in out.items():
                    v = v.detach().float()
                    sums[k] = sums[k] + v if k in sums else v
                n_batches += 1
                n_rows += x.shape[0]
            if n_batches == 0:
                raise DistclustError(f"worker {rank} got no batches in epoch {epoch}", "training data",
                                     "check that every shard holds rows (re-ingest with fewer shards)")
            keys = sorted(sums)
            red = ctx.all_reduce(torch.stack([sums[k] for k in keys] + [torch.tensor(float(n_batches),
                                                                                   device=device)]))
            elapsed = time.time() - t0
            rows_all = ctx.all_reduce(torch.tensor(float(n_rows), device=device)).item()
            done_epochs += 1
            m = {"stage": stage.name, "epoch": epoch + 1, "stage_epochs": stage.epochs, "epochs_done": done_epochs,
                 **{k: (red[i] / red[-1]).item() for i, k in enumerate(keys)},
                 "samples_per_s": rows_all / max(elapsed, 1e-9), "time_s": elapsed,
                 "peak_rss_mib": ctx.all_reduce(torch.tensor(peak_rss_mib(), device=device),
                                                op=torch.distributed.ReduceOp.MAX).item()}
            m.update({k: float(v) for k, v in start_metrics.items()})
            start_metrics = {}
            if stage.on_epoch_end is not None:
                m.update(stage.on_epoch_end(ctx, epoch) or {})
            if eval_every and model.fitted() and (epoch + 1) % eval_every == 0:
                m.update(ctx.label_metrics())
            stop_reason = "stopping rule met" if ctx.stop_requested else ""
            if not ctx.stop_requested and spec.train.early_stop_patience:
                seen = [h[stage.monitor] for h in history if h.get("stage") == stage.name and stage.monitor in h]
                if stage.monitor not in m:
                    raise DistclustError(f"early stopping watches '{stage.monitor}', which stage '{stage.name}' "
                                         "does not report", "train.early_stop_patience",
                                         "set train.early_stop_patience: 0 for this model")
                if should_stop(seen + [m[stage.monitor]], spec.train.early_stop_patience,
                               spec.train.early_stop_min_delta, stage.min_epochs):
                    ctx.stop_requested = True
                    m["early_stopped"] = 1
                    stop_reason = (f"early stopping: {stage.monitor} has not improved by "
                                   f"{spec.train.early_stop_min_delta:.2%} for {spec.train.early_stop_patience} epochs")
            last = epoch + 1 == stage.epochs or ctx.stop_requested
            with_ckpt = (epoch + 1) % spec.train.checkpoint_every == 0 or last
            next_stage, next_epoch = (si + 1, 0) if last else (si, epoch + 1)
            report(m, next_stage, next_epoch, optimizer, with_ckpt)
            if ctx.stop_requested:
                if rank == 0 and not quiet:
                    print(f"[{stage.name}] {stop_reason}; stage ends after epoch {epoch + 1}", flush=True)
                break

    # ---- artifact: written by rank 0, handed to the driver as the final checkpoint -------------
    final_metrics = {"stage": "done", "epoch": 0, "stage_epochs": 0, "epochs_done": done_epochs,
                     "train_time_s": time.time() - t_run}
    if config.get("n_classes"):
        final_metrics.update(ctx.label_metrics() if model.fitted() else {})
    if last_loss:
        final_metrics["loss"] = last_loss[0]
    final_dir = None
    if rank == 0:
        final_dir = tempfile.mkdtemp(prefix="distclust-artifact-")
        save_artifact(model, final_dir, spec=spec, data_info=config["data_info"], history=history + [final_metrics],
                      extra={"workers": workers})
    report(final_metrics, len(stages), 0, None, with_ckpt=False, final_dir=final_dir)
