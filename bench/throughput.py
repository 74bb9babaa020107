"""Training throughput, side by side in one run: a plain PyTorch loop, the in-process loop, Ray Train.

    python bench/throughput.py [--rows 20000] [--epochs 4] [--rounds 3] [--models ae,dec,concrete-gmvae]
                               [--configs plain,inprocess,ray-1x2,ray-2x1] [--batch-size 256] [--out-name throughput]

Configurations (``--configs``), for every model:

- ``plain``: a single-process PyTorch loop over tensors in memory (shuffled batches, Adam), the
  same model code (its ``forward`` and its stage hooks: DEC's target refreshes, the GMVAE's
  annealing clock), 2 torch threads, no records, no reductions, no checkpoints;
- ``inprocess``: ``train_inprocess`` (the product's one loop, ``engine/loop.py``) on the same
  arrays, 2 threads;
- ``ray-1x2``: ``run_training`` (Ray Train) with 1 worker × 2 CPUs over the ingested Parquet shards;
- ``ray-2x1``: ``run_training`` with 2 workers × 1 CPU (DDP, gloo).

Models (``--models``): ``ae`` (DEC's 784-500-500-2000-10 autoencoder, the ``pretrain`` stage of
jobs/mnist-ae-kmeans.yaml), ``dec`` (the ``cluster`` stage of jobs/mnist-dec.yaml from an
untrained autoencoder, one target refresh per epoch, ``tol: 0`` so no early end) and
``concrete-gmvae`` (jobs/mnist-concrete-gmvae.yaml). The configurations run interleaved in rounds
(round 1: every model × A B C D, round 2: again …) because the machine is shared and noisy; a
configuration's figure is the median over rounds of its median samples/s over epochs 2..E.

Between-epoch overhead: the time between one epoch's last step and the next epoch's first
(records, checkpoint, early-stopping decision, Ray's report), from the records' ``started_at``
and ``time_s``, as % of the epoch's step time. Ray start-up and data set-up are reported
apart (``setup_s``) and are not in samples/s.

Without ``--data`` it reads the first ``--rows`` rows of MNIST (``mnist.npz`` in the shared
datasets); ``--synthetic`` uses random 784-d pixels instead (tests). Writes
bench/results/<out-name>.json after every run.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATASETS, ROOT, WORK, command, reset_work, save  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

CONFIGS = {"plain": None, "inprocess": None, "ray-1x2": (1, 2.0), "ray-2x1": (2, 1.0)}
MODELS = {  # model key → (job file, measured stage)
    "ae": ("mnist-ae-kmeans", "pretrain"),
    "dec": ("mnist-dec", "cluster"),
    "concrete-gmvae": ("mnist-concrete-gmvae", "train"),
}
THREADS = 2   # the plain and in-process loops: the cores of this machine (Ray: cpus_per_worker)


def make_spec(model: str, epochs: int, rows: int, batch: int, world: int, cpus: float, checkpoint_every: int):
    from distclust.spec import load_spec

    job, _ = MODELS[model]
    over = ["train.seed=0", "train.quiet=true", "train.eval_every=0", f"train.batch_size={batch}",
            f"train.checkpoint_every={checkpoint_every}", f"scaling.num_workers={world}",
            f"scaling.cpus_per_worker={cpus}"]
    if model == "ae":
        over += [f"model.pretrain_epochs={epochs}", "model.kmeans_nredo=1"]
    elif model == "dec":
        # one target refresh per epoch whatever the worker count (update_interval counts a worker's steps)
        over += ["model.pretrain_epochs=0", f"model.cluster_epochs={epochs}", "model.tol=0", "model.kmeans_nredo=1",
                 f"model.update_interval={math.ceil(rows / world / batch)}"]
    else:
        over += [f"model.epochs={epochs}"]
    return load_spec(ROOT / "jobs" / f"{job}.yaml", over)


def epoch_figures(epochs: list[dict]) -> dict:
    """``epochs``: [{samples_per_s, time_s, started_at}] of the measured stage, in order."""
    steady = epochs[1:] or epochs                      # epochs 2..E (the first warms up)
    gaps = [max(b["started_at"] - a["started_at"] - a["time_s"], 0.0) for a, b in zip(epochs, epochs[1:])]
    med_t = statistics.median(e["time_s"] for e in steady)
    return {"samples_per_s": statistics.median(e["samples_per_s"] for e in steady),
            "epoch_s": med_t,
            "between_epochs_s": statistics.median(gaps) if gaps else None,
            "overhead_pct": 100.0 * statistics.median(gaps) / med_t if gaps else None,
            "per_epoch_samples_per_s": [round(e["samples_per_s"], 1) for e in epochs]}


# --------------------------------------------------------------------------- (a) the plain loop
def run_plain(spec, X: np.ndarray, stage_name: str) -> dict:
    """A minimal single-process loop around the model's forward and its stage hooks."""
    from distclust.engine.context import WorkerContext
    from distclust.engine.inprocess import _stats
    from distclust.engine.seeding import seed_everything
    from distclust.models import Normalizer, get_model_class

    torch.set_num_threads(THREADS)
    t_start = time.time()
    seed_everything(spec.train.seed)
    model = get_model_class(spec.model_name)(X.shape[1], spec.model, Normalizer.from_stats(_stats(X), spec.data.normalize))
    Xt = torch.from_numpy(X)
    bs, n = spec.train.batch_size, len(X)
    steps = math.ceil(n / bs)
    ctx = WorkerContext.in_memory(model, Xt, None, "cpu", spec.train.seed, bs)   # only for the hooks' global passes
    g = torch.Generator().manual_seed(spec.train.seed)
    measured, gstep = [], 0
    for stage in model.stages():
        ctx.stage, ctx.epoch = stage.name, 0
        if stage.on_start is not None:
            stage.on_start(ctx)
        if stage.epochs == 0:
            continue
        params = list(stage.parameters()) if stage.parameters else list(model.parameters())
        opt = torch.optim.Adam(params, lr=stage.lr, weight_decay=stage.weight_decay)
        model.train()
        for epoch in range(stage.epochs):
            ctx.epoch = epoch
            t0 = time.time()
            perm = torch.randperm(n, generator=g)
            for s in range(steps):
                if stage.on_step is not None:
                    stage.on_step(ctx, epoch * steps + s)
                model.train_step, model.train_epoch = gstep, epoch
                out = model(Xt[perm[s * bs:(s + 1) * bs]], stage.name)
                opt.zero_grad(set_to_none=True)
                out["loss"].backward()
                opt.step()
                gstep += 1
                ctx.global_step = gstep
            dt = time.time() - t0
            if stage.name == stage_name:
                measured.append({"samples_per_s": n / dt, "time_s": dt, "started_at": t0})
    return {**epoch_figures(measured), "wall_s": time.time() - t_start}


# --------------------------------------------------------------------------- (b) in-process, (c/d) Ray
def from_history(history: list[dict], stage_name: str, wall: float) -> dict:
    eps = [h for h in history if h.get("stage") == stage_name and h.get("epoch", 0) > 0]
    train_s = next((h.get("train_time_s") for h in history if h.get("stage") == "done"), None)
    return {**epoch_figures(eps), "wall_s": wall, "setup_s": wall - train_s if train_s is not None else None}


def run_inprocess(spec, X: np.ndarray, stage_name: str) -> dict:
    from distclust.engine.inprocess import train_inprocess

    t = time.time()
    res = train_inprocess(spec, X=X, quiet=True, threads=THREADS)
    return from_history(res.history, stage_name, time.time() - t)


def run_ray(spec, data: Path, out: Path, stage_name: str, keep_ray: bool) -> dict:
    from distclust.engine.trainer import run_training

    t = time.time()
    try:
        res = run_training(spec, out, data=str(data), overwrite=True, quiet=True)
    finally:
        if not keep_ray:   # the plain and in-process loops then run without Ray's daemons beside them
            import ray

            ray.shutdown()
    return from_history(res.history, stage_name, time.time() - t)


# --------------------------------------------------------------------------- driver
def load_rows(a) -> tuple[np.ndarray, str]:
    if a.synthetic:
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, size=(a.rows, 784)).astype(np.float32), f"synthetic uniform pixels, {a.rows} rows"
    path = Path(a.data) if a.data else DATASETS / "mnist.npz"
    if not path.is_file():
        raise SystemExit(f"{path} not found: pass --data, set DISTCLUST_DATASETS, or use --synthetic")
    X = np.load(path)["X"][:a.rows]
    return X.reshape(len(X), -1).astype(np.float32), f"first {len(X)} rows of {path.name}"


def summarise(runs: list[dict], models, configs) -> dict:
    table = {}
    for m in models:
        row = {}
        for c in configs:
            rs = [r for r in runs if r["model"] == m and r["config"] == c and "samples_per_s" in r]
            if not rs:
                continue
            ov = [r["overhead_pct"] for r in rs if r.get("overhead_pct") is not None]
            row[c] = {"samples_per_s": statistics.median(r["samples_per_s"] for r in rs),
                      "overhead_pct": statistics.median(ov) if ov else None,
                      "setup_s": statistics.median([r["setup_s"] for r in rs if r.get("setup_s") is not None] or [0]),
                      "rounds": len(rs)}
        base = row.get("plain", {}).get("samples_per_s")
        for c, v in row.items():
            v["ratio_to_plain"] = v["samples_per_s"] / base if base else None
        table[m] = row
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=4, help="epochs of the measured stage (figures: epochs 2..E)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--checkpoint-every", type=int, default=1, help="train.checkpoint_every (1: the product default)")
    ap.add_argument("--data", default=None, help=".npz with X (default: MNIST from the shared datasets)")
    ap.add_argument("--synthetic", action="store_true", help="random 784-d pixels instead of MNIST")
    ap.add_argument("--keep-ray", action="store_true", help="keep one Ray running between Ray runs")
    ap.add_argument("--work", default=str(WORK / "throughput"))
    ap.add_argument("--out-name", default="throughput")
    ap.add_argument("--out", default=None, help="write the JSON here instead of bench/results/<out-name>.json")
    ap.add_argument("--markdown", default=None, metavar="JSON", help="print the table of an earlier result and exit")
    a = ap.parse_args()
    if a.markdown:
        print(markdown(json.loads(Path(a.markdown).read_text())))
        return
    models = [m for m in a.models.split(",") if m]
    configs = [c for c in a.configs.split(",") if c]
    for bad in [m for m in models if m not in MODELS] + [c for c in configs if c not in CONFIGS]:
        raise SystemExit(f"unknown model or configuration '{bad}': models {', '.join(MODELS)}; "
                         f"configurations {', '.join(CONFIGS)}")
    if a.epochs < 2:
        raise SystemExit("--epochs must be 2 or more (epoch 1 is a warm-up)")

    from distclust.data import ingest

    X, source = load_rows(a)
    work = reset_work(a.work)
    np.savez(work / "train.npz", X=X)
    data = work / "data"
    ingest(work / "train.npz", data, shards=8, progress=False)
    res = {"command": command("throughput.py"), "data": source, "rows": len(X), "epochs": a.epochs,
           "rounds": a.rounds, "batch_size": a.batch_size, "checkpoint_every": a.checkpoint_every,
           "machine": f"{platform.node()}: {__import__('os').cpu_count()} cores, shared with other jobs",
           "torch": torch.__version__, "runs": []}
    for rnd in range(a.rounds):
        for m in models:
            stage = MODELS[m][1]
            for c in configs:
                world, cpus = CONFIGS[c] or (1, float(THREADS))
                spec = make_spec(m, a.epochs, len(X), a.batch_size, world, cpus, a.checkpoint_every)
                t = time.time()
                try:
                    if c == "plain":
                        r = run_plain(spec, X, stage)
                    elif c == "inprocess":
                        r = run_inprocess(spec, X, stage)
                    else:
                        r = run_ray(spec, data, work / f"run-{m}-{c}", stage, a.keep_ray)
                except Exception as e:  # noqa: BLE001 - record it and go on with the other configurations
                    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
                    r = {"error": f"{type(e).__module__}.{type(e).__name__}: {' / '.join(lines[:3])[:600]}"}
                    traceback.print_exc()
                r = {"round": rnd + 1, "model": m, "config": c, **r, "started": time.strftime("%H:%M:%S", time.localtime(t))}
                res["runs"].append(r)
                print(f"round {rnd + 1} {m:15s} {c:10s} " + (
                    f"{r['samples_per_s']:8.0f} samples/s  overhead {r['overhead_pct'] or 0:5.1f}%  wall {r['wall_s']:.0f}s"
                    if "samples_per_s" in r else r["error"]), flush=True)
                res["summary"] = summarise(res["runs"], models, configs)
                write(a, res)
    print_table(res["summary"], configs)
    write(a, res)


def write(a, res: dict) -> None:
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=1, default=str))
    else:
        save(a.out_name, res, echo=False)


def markdown(res: dict) -> str:
    """The docs table: per model and configuration, median samples/s, ratio to the plain loop, the
    between-epoch gap (seconds and % of the measured epoch) and the rounds that finished."""
    names = {"plain": "plain PyTorch loop", "inprocess": "in-process loop (`train_inprocess`)",
             "ray-1x2": "Ray Train 1 worker × 2 CPUs", "ray-2x1": "Ray Train 2 workers × 1 CPU"}
    lines = ["| model | configuration | samples/s (median) | × plain | between epochs | % of epoch | rounds |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for m, row in res["summary"].items():
        for c, v in row.items():
            gaps = [r["between_epochs_s"] for r in res["runs"] if r["model"] == m and r["config"] == c
                    and r.get("between_epochs_s") is not None]
            gap = f"{statistics.median(gaps):.3f} s" if gaps else "–"
            ov = f"{v['overhead_pct']:.1f} %" if v.get("overhead_pct") is not None else "–"
            ratio = f"{v['ratio_to_plain']:.2f}" if v.get("ratio_to_plain") is not None else "–"
            lines.append(f"| {m} | {names.get(c, c)} | {v['samples_per_s']:,.0f} | {ratio} | {gap} | {ov} | {v['rounds']} |")
    return "\n".join(lines)


def print_table(summary: dict, configs) -> None:
    print("model            " + "".join(f"{c:>22s}" for c in configs))
    for m, row in summary.items():
        cells = []
        for c in configs:
            v = row.get(c)
            cells.append(f"{v['samples_per_s']:8.0f} ({v['ratio_to_plain'] or 0:4.2f}x)".rjust(22) if v else " " * 22)
        print(f"{m:17s}" + "".join(cells))


if __name__ == "__main__":
    main()
