"""Metrics to the tools users already run: TensorBoard always (tensorboardX), MLflow when configured.

Both read the run's ``history.json`` after training, so every model's per-epoch
scalars (losses, label metrics, annealed weights and temperatures, throughput)
arrive without touching the training loop. Tags are ``STAGE/KEY``; the step is
the run's global epoch count (``epochs_done``); the closing record is ``final/KEY``.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ..spec import flat_items
from .plots import BOOKKEEPING


def scalars(history: list[dict]):
    """(tag, value, step) for every finite numeric entry of the history."""
    for r in history:
        stage = "final" if r.get("stage") == "done" else str(r.get("stage", "run"))
        step = int(r.get("epochs_done", 0))
        for k, v in r.items():
            if k in BOOKKEEPING or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                continue
            yield f"{stage}/{k}", float(v), step


def write_tensorboard(run_dir, history: list[dict] | None = None) -> Path:
    """Write the run's scalars to ``RUN_DIR/tensorboard`` (replacing earlier event files); returns the folder."""
    from tensorboardX import SummaryWriter

    run_dir = Path(run_dir)
    if history is None:
        history = json.loads((run_dir / "model" / "history.json").read_text())
    logdir = run_dir / "tensorboard"
    logdir.mkdir(parents=True, exist_ok=True)
    for old in logdir.glob("events.out.tfevents.*"):  # regenerating must not duplicate the curves
        old.unlink()
    w = SummaryWriter(logdir=str(logdir))
    try:
        for tag, v, step in scalars(history):
            w.add_scalar(tag, v, step)
    finally:
        w.close()
    return logdir


def read_scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    """Read back the scalars of every event file in ``logdir``: tag → [(step, value)] (TFRecord framing)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    out: dict[str, list[tuple[int, float]]] = {}
    for f in sorted(Path(logdir).glob("events.out.tfevents.*")):
        data = f.read_bytes()
        pos = 0
        while pos + 12 <= len(data):
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            ev = Event.FromString(data[pos + 12:pos + 12 + n])
            pos += 12 + n + 4
            for v in ev.summary.value:
                out.setdefault(v.tag, []).append((int(ev.step), float(v.simple_value)))
    return out


def log_mlflow(run_dir) -> str | None:
    """Log params and per-epoch metrics to MLflow when ``MLFLOW_TRACKING_URI`` is set and mlflow imports;
    otherwise do nothing. Returns the MLflow run id (or None)."""
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    try:
        import mlflow
    except ImportError:
        return None
    run_dir = Path(run_dir)
    cfg = json.loads((run_dir / "model" / "config.json").read_text())
    history = json.loads((run_dir / "model" / "history.json").read_text())
    spec = cfg.get("spec") or {}
    mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or f"distclust-{spec.get('name', cfg['model'])}")
    with mlflow.start_run(run_name=run_dir.name) as run:
        params = {k: str(v)[:500] for k, v in flat_items(spec)} or {f"model.{k}": str(v) for k, v in cfg["params"].items()}
        mlflow.log_params(params)
        for tag, v, step in scalars(history):
            mlflow.log_metric(tag.replace("/", "."), v, step=step)
        report = run_dir / "report" / "index.html"
        if report.is_file():
            mlflow.log_artifact(str(report))
        return run.info.run_id
