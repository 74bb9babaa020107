"""A digits job trained by N DDP ranks in plain processes (gloo, no Ray), through the product's loop.

Separates what Ray Train adds from what data parallelism itself does: each rank gets a contiguous
share of scikit-learn's digits (as the ingested shards do), the job's per-worker batch, its own
shuffle and noise seeds, and ``engine/loop.py`` wraps the model in DDP exactly as a Ray worker does.
Prints ACC on all rows and the largest difference between the ranks' parameters at the end (0 when
DDP kept them in sync).

    python bench/ddp_ranks.py gmvae --ranks 2 --seeds 0 1 2            # 2 ranks × the job's batch
    python bench/ddp_ranks.py gmvae --ranks 1 --seeds 0 --set train.batch_size=64
    python bench/ddp_ranks.py gmvae --ranks 2 --seeds 3 4 --record KEY  # also append to digits_jobs.json
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT  # noqa: E402


def _rank(rank: int, world: int, job: str, overrides: list[str], port: int, queue) -> None:
    import numpy as np
    import torch
    import torch.distributed as dist
    from sklearn.datasets import load_digits

    from distclust.engine.config import steps_per_epoch
    from distclust.engine.context import WorkerContext
    from distclust.engine.inprocess import LocalReporter, _stats
    from distclust.engine.loop import run_loop
    from distclust.engine.seeding import seed_everything
    from distclust.metrics import cluster_scores
    from distclust.models import Normalizer, get_model_class
    from distclust.spec import load_spec

    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32)
    spec = load_spec(job, overrides=overrides + ["train.quiet=true"])
    tr = spec.train
    seed_everything(tr.seed)   # as a Ray worker: the same seed on every rank before the model is built
    model = get_model_class(spec.model_name)(X.shape[1], spec.model,
                                             Normalizer.from_stats(_stats(X), spec.data.normalize))
    lo, hi = rank * len(X) // world, (rank + 1) * len(X) // world
    ctx = WorkerContext.in_memory(model, torch.from_numpy(X[lo:hi]), None, "cpu", tr.seed, tr.batch_size)
    ctx.rank, ctx.world_size = rank, world
    largest = -(-len(X) // world)   # the largest rank's rows: the split above differs by at most one row
    ctx.steps_per_epoch = steps_per_epoch(largest, world, tr.batch_size, tr.epoch_rows)   # the driver's rule
    reporter = LocalReporter(quiet=True)
    reporter.rank = rank
    run_loop(model, ctx, reporter, tr, None, label_metrics=False)
    sums = torch.stack([p.detach().double().sum() for p in model.parameters()])
    drift = 0.0
    if world > 1:
        every = [torch.zeros_like(sums) for _ in range(world)]
        dist.all_gather(every, sums)
        drift = max(float((s - sums).abs().max()) for s in every)
    if rank == 0:
        with torch.no_grad():
            pred = model.eval().predict(torch.from_numpy(X)).numpy()
        s = cluster_scores(pred, y)
        queue.put({"acc": round(float(s["acc"]), 4), "nmi": round(float(s["nmi"]), 4), "param_drift": drift})
    if world > 1:
        dist.destroy_process_group()


def main() -> None:
    import torch.multiprocessing as mp

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="the model part of jobs/digits-<model>.yaml")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--set", action="append", default=[], help="job overrides (KEY=VALUE)")
    ap.add_argument("--record", help="append each run to bench/results/digits_jobs.json[KEY]")
    args = ap.parse_args()
    job = str(ROOT / "jobs" / f"digits-{args.model}.yaml")
    ctx = mp.get_context("spawn")
    for seed in args.seeds:
        overrides = args.set + [f"train.seed={seed}"]
        q = ctx.Queue()
        procs = [ctx.Process(target=_rank, args=(r, args.ranks, job, overrides, 29400 + seed % 500, q))
                 for r in range(args.ranks)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        if any(p.exitcode for p in procs):
            raise SystemExit(f"seed {seed}: a rank failed (exit codes {[p.exitcode for p in procs]})")
        res = q.get()
        entry = {"model": args.model, "ranks": args.ranks, "overrides": " ".join(overrides), **res}
        print(entry, flush=True)
        if args.record:
            from digits_inprocess import record

            record(args.record, entry, "python bench/ddp_ranks.py MODEL --ranks N --seeds S... --record KEY "
                                       "[--set KEY=VALUE] (plain gloo processes, no Ray, one thread each)")


if __name__ == "__main__":
    main()
