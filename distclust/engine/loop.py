"""The one training loop: stages, epochs, steps, metric reduction, early stopping, resume state.

It imports nothing from Ray. It talks to the outside through two small objects:

- a *context* (``WorkerContext``): this worker's batches, its rank and world size,
  collectives (all-reduce, gather, broadcast — no-ops in one process) and the run's
  clocks (``stage``, ``epoch``, ``epochs_done``, ``global_step``), which models read
  for their annealing schedules;
- a *reporter* (``Reporter``): where each epoch's record, checkpoint and progress line
  go. The Ray Train worker's reporter calls ``ray.train.report``; the in-process one
  (``engine/inprocess.py``) keeps them in memory and on disk.

So ``distclust train`` (Ray Train, DDP), ``Clusterer(workers=0)``, the tests and the
benchmarks all run exactly this code.
"""
from __future__ import annotations

import math

import time
from typing import Callable, Protocol

import torch

from . import records as R
from .seeding import seed_everything
from .stopping import should_stop


class StageError(Exception):
    """A user-facing problem found by the loop (e.g. a worker with no batches); carries what/where/fix."""


class Reporter(Protocol):
    rank: int

    def record(self, record: dict, checkpoint: Callable[[], dict] | None) -> None:
        """One history record; ``checkpoint()`` builds the resume state when one is due (rank 0 calls it)."""

    def progress(self, text: str) -> None:
        """A human-readable progress line (printed by rank 0 unless quiet)."""

    def heartbeat(self, step: int) -> None:
        """Called after every optimiser step: cheap, rate-limited by the reporter (stall watchdog)."""


def peak_rss_mib() -> float:
    """This process's peak resident memory (Linux ru_maxrss is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def fmt_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def make_optimizer(stage, params):
    """The stage's optimiser (Adam, or SGD with momentum as in DEC-keras) and its per-epoch schedule
    (step decay, or cosine decay to 1 % of the lr)."""
    if stage.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=stage.lr, momentum=stage.momentum, weight_decay=stage.weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=stage.lr, weight_decay=stage.weight_decay)
    sched = None
    if stage.lr_cosine and stage.epochs > 1:
        last = stage.epochs - 1
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(e, last) / last)))
    elif stage.lr_decay_every:
        floor = stage.lr_floor / stage.lr if stage.lr_floor else 0.0
        decay, every = stage.lr_decay, stage.lr_decay_every
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: max(decay ** (e // every), floor))
    return opt, sched


def _as_logged(v, device) -> torch.Tensor:
    """A logged value as a float tensor on the loop's device (models may return floats or CPU tensors)."""
    if isinstance(v, torch.Tensor):
        v = v.detach()
        return (v if v.device == device else v.to(device)).float()
    return torch.tensor(float(v), device=device)


def wrap_ddp(model, ctx):
    """DDP over the process group the launcher set up (Ray Train here); the model itself in one process."""
    import torch.distributed as dist

    if ctx.world_size <= 1 or not (dist.is_available() and dist.is_initialized()):
        return model
    from torch.nn.parallel import DistributedDataParallel

    kw = {"device_ids": [ctx.device.index or 0]} if ctx.device.type == "cuda" else {}
    return DistributedDataParallel(model, find_unused_parameters=type(model).find_unused_parameters, **kw)


def run_loop(model, ctx, reporter: Reporter, train, state: dict | None = None,
             label_metrics: bool = True) -> list[dict]:
    """Run ``model``'s stages from ``state`` (a checkpoint's resume state) or the start.

    ``train`` is the job's ``TrainSpec``. Returns the history, closed by a ``done`` record.
    """
    stages = model.stages()
    watched = set(train.early_stop_stages) or {s.name for s in stages}
    if unknown := watched - {s.name for s in stages}:
        raise StageError(f"train.early_stop_stages names {sorted(unknown)}, which model '{model.name}' does not have "
                         f"(its stages: {[s.name for s in stages]})", "train.early_stop_stages",
                         "list stage names of this model, or leave early_stop_stages empty to watch every stage")
    device = ctx.device
    start_stage, start_epoch, history = 0, 0, []
    if state is not None:
        model.load_state_dict(state["model"])
        start_stage, start_epoch = state["stage_index"], state["next_epoch"]
        history, ctx.global_step = list(state["history"]), state["global_step"]
        if reporter.rank == 0:
            where = stages[start_stage].name if start_stage < len(stages) else "the end"
            reporter.progress(f"[distclust] resuming from checkpoint: stage '{where}', epoch {start_epoch}")
    seed_everything(ctx.seed + 7919 * (ctx.rank + 1) + 104729 * ctx.global_step)  # per-rank streams
    ddp = wrap_ddp(model, ctx)
    eval_every = train.eval_every if (label_metrics and ctx.n_classes) else 0
    total_epochs = sum(s.epochs for s in stages)
    ctx.epochs_done = sum(s.epochs for s in stages[:start_stage]) + start_epoch
    first_done, t_run = ctx.epochs_done, time.time()
    last_loss: list[float] = []   # every record carries the latest training loss (ASHA needs one)

    def emit(m: dict, stage_index: int, next_epoch: int, optimizer, scheduler, with_ckpt: bool) -> None:
        if R.LOSS in m:
            last_loss[:] = [m[R.LOSS]]
        elif last_loss:
            m[R.LOSS] = last_loss[0]
        history.append(m)
        if reporter.rank == 0:
            show = [f"{k} {v:.4g}" for k, v in m.items() if k not in R.NOT_IN_PROGRESS and isinstance(v, float)]
            rate = (time.time() - t_run) / max(ctx.epochs_done - first_done, 1)
            reporter.progress(f"[{m[R.STAGE]}] epoch {m[R.EPOCH]}/{m.get(R.STAGE_EPOCHS, 0)}  " + "  ".join(show[:8])
                              + f"  {m.get(R.SAMPLES_PER_S, 0):.0f} samples/s"
                              + f"  ETA {fmt_eta(rate * (total_epochs - ctx.epochs_done))}")

        def checkpoint() -> dict:
            return {"model": model.state_dict(), "optimizer": optimizer.state_dict() if optimizer else None,
                    "scheduler": scheduler.state_dict() if scheduler else None,
                    "stage_index": stage_index, "next_epoch": next_epoch, "history": history,
                    "global_step": ctx.global_step}

        reporter.record(m, checkpoint if with_ckpt else None)

    for si in range(start_stage, len(stages)):
        stage = stages[si]
        ctx.stage, ctx.stop_requested = stage.name, False
        first_epoch = start_epoch if si == start_stage else 0
        params = list(stage.parameters()) if stage.parameters else list(model.parameters())
        optimizer, scheduler = make_optimizer(stage, params) if stage.epochs else (None, None)
        if state is not None and si == start_stage and first_epoch > 0 and optimizer and state.get("optimizer"):
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None and state.get("scheduler"):
                scheduler.load_state_dict(state["scheduler"])
        start_metrics = {}
        if first_epoch == 0 and stage.on_start is not None:
            start_metrics = stage.on_start(ctx) or {}
        if stage.epochs == 0:   # a pure global step (e.g. k-means): one record, with a checkpoint
            m = {R.STAGE: stage.name, R.EPOCH: 0, R.STAGE_EPOCHS: 0, R.EPOCHS_DONE: ctx.epochs_done,
                 **{k: float(v) for k, v in start_metrics.items()}}
            if eval_every and model.fitted():
                m.update(ctx.label_metrics())
            emit(m, si + 1, 0, None, None, with_ckpt=True)
            continue
        for epoch in range(first_epoch, stage.epochs):
            ctx.epoch = epoch
            model.train()
            t0 = time.time()
            sums: dict[str, torch.Tensor] = {}
            n_batches = n_rows = 0
            for step, batch in enumerate(ctx.epoch_batches(ctx.epochs_done)):
                if stage.on_step is not None:
                    start_metrics.update(stage.on_step(ctx, epoch * ctx.steps_per_epoch + step) or {})
                x = batch["features"]
                model.train_step, model.train_epoch = ctx.global_step, ctx.epochs_done
                out = ddp(x, stage.name)
                optimizer.zero_grad(set_to_none=True)
                out["loss"].backward()
                optimizer.step()
                ctx.global_step += 1
                for k, v in out.items():
                    v = _as_logged(v, device)
                    sums[k] = sums[k] + v if k in sums else v
                n_batches += 1
                n_rows += x.shape[0]
                reporter.heartbeat(ctx.global_step)
            if scheduler is not None:
                scheduler.step()
            if n_batches == 0:
                raise StageError(f"worker {ctx.rank} got no batches in epoch {epoch}", "training data",
                                 "check that every shard holds rows (re-ingest with fewer shards)")
            keys = sorted(sums)
            red = ctx.all_reduce(torch.stack([sums[k] for k in keys] + [
                torch.tensor(float(n_batches), device=device), torch.tensor(float(n_rows), device=device)]))
            red = red.cpu()
            elapsed = time.time() - t0
            ctx.epochs_done += 1
            m = {R.STAGE: stage.name, R.EPOCH: epoch + 1, R.STAGE_EPOCHS: stage.epochs, R.EPOCHS_DONE: ctx.epochs_done,
                 **{k: float(red[i] / red[-2]) for i, k in enumerate(keys)},
                 R.SAMPLES_PER_S: float(red[-1]) / max(elapsed, 1e-9), R.TIME_S: elapsed, R.STARTED_AT: t0,
                 R.PEAK_RSS_MIB: float(ctx.all_reduce(torch.tensor(peak_rss_mib(), device=device), op="max"))}
            if optimizer is not None and (scheduler is not None or stage.optimizer != "adam"):
                m["lr"] = float(optimizer.param_groups[0]["lr"])
            m.update({k: float(v) for k, v in start_metrics.items()})
            start_metrics = {}
            if stage.on_epoch_end is not None:
                m.update(stage.on_epoch_end(ctx, epoch) or {})
            if eval_every and model.fitted() and (epoch + 1) % eval_every == 0:
                m.update(ctx.label_metrics())
            stop_reason = "stopping rule met" if ctx.stop_requested else ""
            if not ctx.stop_requested and train.early_stop_patience and stage.name in watched:
                if stage.monitor not in m:
                    raise StageError(f"early stopping watches '{stage.monitor}', which stage '{stage.name}' "
                                     "does not report", "train.early_stop_patience",
                                     "set train.early_stop_patience: 0 for this model")
                seen = [h[stage.monitor] for h in history if h.get(R.STAGE) == stage.name and stage.monitor in h]
                if should_stop(seen + [m[stage.monitor]], train.early_stop_patience, train.early_stop_min_delta,
                               stage.min_epochs):
                    ctx.stop_requested = True
                    m[R.EARLY_STOPPED] = 1
                    stop_reason = (f"early stopping: {stage.monitor} has not improved by "
                                   f"{train.early_stop_min_delta:.2%} for {train.early_stop_patience} epochs")
            last = epoch + 1 == stage.epochs or ctx.stop_requested
            with_ckpt = (epoch + 1) % train.checkpoint_every == 0 or last
            next_stage, next_epoch = (si + 1, 0) if last else (si, epoch + 1)
            emit(m, next_stage, next_epoch, optimizer, scheduler, with_ckpt)
            if ctx.stop_requested:
                if reporter.rank == 0:
                    reporter.progress(f"[{stage.name}] {stop_reason}; stage ends after epoch {epoch + 1}")
                break

    final = {R.STAGE: R.DONE, R.EPOCH: 0, R.STAGE_EPOCHS: 0, R.EPOCHS_DONE: ctx.epochs_done,
             R.TRAIN_TIME_S: time.time() - t_run}
    if label_metrics and ctx.n_classes and model.fitted():
        final.update(ctx.label_metrics())
    if last_loss:
        final[R.LOSS] = last_loss[0]
    history.append(final)
    return history
