"""What the loop and a model's hooks may do on a worker: iterate its shard, run a global
pass with an all-reduce, gather a sample, broadcast. Works with 1 or many workers
(collectives become no-ops when there is no process group); imports nothing from Ray."""
from __future__ import annotations

import math
from typing import Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist

from .. import metrics as M


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class WorkerContext:
    """What the loop and a model's hooks see of their worker: its shard (a ``ShardReader``), its rank,
    the collectives, and the run's clocks (stage, epoch, global step)."""

    def __init__(self, model, reader, rank: int, world_size: int, device: torch.device, seed: int,
                 batch_size: int, steps_per_epoch: int, n_classes: int | None = None,
                 eval_batch_size: int = 4096):
        self.model = model                # the unwrapped ClusterModel
        self.reader = reader              # this worker's ShardReader (pyarrow; no Ray)
        self.rank, self.world_size = rank, world_size
        self.device, self.seed = device, seed
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.steps_per_epoch = steps_per_epoch
        self.n_classes = n_classes
        self.stage: str = ""
        self.epoch = 0                    # epoch within the current stage
        self.epochs_done = 0              # training epochs finished since the start of the run
        self.global_step = 0              # optimiser steps since the start of the run
        self.stop_requested = False
        self.heartbeat = lambda step, force=False: None   # the stall watchdog's: set by the launcher

    @property
    def rank_rows(self) -> int:
        return self.reader.rows

    @classmethod
    def in_memory(cls, model, X: torch.Tensor, y: torch.Tensor | None, device, seed: int, batch_size: int,
                  eval_batch_size: int = 8192, shuffle_buffer: int = 20000) -> "WorkerContext":
        """A single-process context over tensors already in memory (no Ray, no process group)."""
        from ..data.shard_reader import ShardReader

        n = len(X)
        tensors = {"id": torch.arange(n), "features": torch.as_tensor(X, dtype=torch.float32)}
        if y is not None:
            tensors["label"] = torch.as_tensor(y, dtype=torch.int64)
        reader = ShardReader.from_tensors(tensors, shuffle_buffer, device)
        return cls(model, reader, 0, 1, torch.device(device), seed, batch_size, math.ceil(n / batch_size),
                   n_classes=int(tensors["label"].max()) + 1 if y is not None else None,
                   eval_batch_size=eval_batch_size)

    # -- iteration ----------------------------------------------------------------
    def batches(self, batch_size: int | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """Every row of this worker's shard once, in a fixed order, as tensors on the device."""
        for b in self.reader.iter_once(batch_size or self.batch_size):
            yield {k: v.to(self.device, non_blocking=True) for k, v in b.items()}
            self.heartbeat(self.global_step)   # global passes count as progress

    def epoch_batches(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        """Shuffled training batches; every worker yields exactly ``steps_per_epoch`` (DDP needs equal
        steps), wrapping around its shard when it is smaller than the largest one."""
        seed = (self.seed * 1_000_003 + epoch * 7919 + self.rank) % (2 ** 31)
        for b in self.reader.epoch_batches(self.batch_size, self.steps_per_epoch, seed):
            yield {k: v.to(self.device, non_blocking=True) for k, v in b.items()}

    # -- collectives --------------------------------------------------------------
    def all_reduce(self, t: torch.Tensor, op=None) -> torch.Tensor:
        """Sum (or ``op``: a ``dist.ReduceOp`` or "max" / "min") of ``t`` over all ranks."""
        if _distributed():
            if isinstance(op, str):
                op = {"max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN, "sum": dist.ReduceOp.SUM}[op]
            t = t.clone()
            dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
        return t

    def broadcast(self, t: torch.Tensor, src: int = 0) -> torch.Tensor:
        if _distributed():
            t = t.clone().contiguous()
            dist.broadcast(t, src=src)
        return t

    def all_gather(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate a (n_rank, ...) tensor of every rank along dim 0 (ranks may differ in n)."""
        if not _distributed():
            return t
        n = torch.tensor([t.shape[0]], device=t.device)
        sizes = [torch.zeros_like(n) for _ in range(self.world_size)]
        dist.all_gather(sizes, n)
        sizes = [int(s.item()) for s in sizes]
        pad = torch.zeros((max(sizes) - t.shape[0], *t.shape[1:]), dtype=t.dtype, device=t.device)
        buf = [torch.zeros((max(sizes), *t.shape[1:]), dtype=t.dtype, device=t.device) for _ in sizes]
        dist.all_gather(buf, torch.cat([t, pad]))
        return torch.cat([b[:s] for b, s in zip(buf, sizes)])

    @torch.no_grad()
    def global_pass(self, fn: Callable[[dict], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Sum ``fn(batch)`` over this worker's whole shard, then over all workers (exact)."""
        was_training = self.model.training
        self.model.eval()
        acc: dict[str, torch.Tensor] = {}
        for batch in self.batches(batch_size=self.eval_batch_size):
            for k, v in fn(batch).items():
                v = v.detach().to(torch.float64)
                acc[k] = acc[k] + v if k in acc else v
        self.model.train(was_training)
        # every rank must reduce the same keys even if its shard was empty
        keys = sorted(acc)
        shapes = [acc[k].shape for k in keys]
        if _distributed():
            # agree on keys/shapes from rank 0 (all ranks run the same fn)
            obj = [list(zip(keys, [tuple(s) for s in shapes]))]
            dist.broadcast_object_list(obj, src=0)
            keys = [k for k, _ in obj[0]]
            shapes = [s for _, s in obj[0]]
        out = {}
        for k, shape in zip(keys, shapes):
            v = acc.get(k, torch.zeros(shape, dtype=torch.float64, device=self.device))
            out[k] = self.all_reduce(v.to(self.device))
        return out

    @torch.no_grad()
    def gather_sample(self, fn: Callable[[dict], torch.Tensor], max_rows: int) -> torch.Tensor:
        """``fn(batch)`` rows from a seeded uniform sample of at most ``max_rows`` rows over all workers.

        Each worker contributes ``ceil(max_rows / world)`` of its rows (all if it has fewer); every
        rank receives the concatenation, in rank order.
        """
        was_training = self.model.training
        self.model.eval()
        quota = math.ceil(max_rows / self.world_size)
        keep = None
        if self.rank_rows > quota:
            rng = np.random.default_rng(self.seed * 7 + self.rank)
            keep = np.zeros(self.rank_rows, dtype=bool)
            keep[rng.choice(self.rank_rows, quota, replace=False)] = True
        parts, seen = [], 0
        for batch in self.batches(batch_size=self.eval_batch_size):
            n = len(next(iter(batch.values())))
            if keep is not None:   # fn runs on the sampled rows only: a 10M-row shard costs a read, not a forward
                mask = torch.from_numpy(keep[seen:seen + n].copy()).to(self.device)
                seen += n
                if not bool(mask.any()):
                    continue
                batch = {k: v[mask] for k, v in batch.items()}
            parts.append(fn(batch).float())
        self.model.train(was_training)
        local = torch.cat(parts) if parts else torch.zeros((0,), device=self.device)
        return self.all_gather(local)

    # -- metrics ------------------------------------------------------------------
    @torch.no_grad()
    def label_metrics(self) -> dict[str, float]:
        """ACC/NMI/ARI of the current clustering against the labels, exact over all workers."""
        K, C = self.model.n_clusters, int(self.n_classes or 0)
        if C <= 0:
            return {}

        def count(batch):
            pred = self.model.predict(batch["features"]).long()
            idx = pred * C + batch["label"].long().clamp(0, C - 1)
            return {"cont": torch.bincount(idx, minlength=K * C).reshape(K, C)}

        cont = self.global_pass(count)["cont"].cpu().numpy().astype(np.int64)
        s = M.scores(cont)
        sizes = cont.sum(1)
        s["active_clusters"] = float((sizes > 0).sum())
        return s

    def request_stop(self) -> None:
        """Ask the engine to end the current stage after this epoch (e.g. DEC's tolerance rule)."""
        self.stop_requested = True
