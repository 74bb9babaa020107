"""Run and sweep reports: a self-contained HTML page with its PNGs, plus TensorBoard/MLflow logging.

``write_report(run_dir)`` renders ``RUN_DIR/report/index.html`` for a training run;
``write_sweep_report(sweep_dir)`` does the same for a ``distclust tune`` directory;
``report(path)`` picks one by looking at the directory.
"""
from __future__ import annotations

from pathlib import Path

from .run import write_report
from .sweep import is_sweep_dir, write_sweep_report
from .tracking import log_mlflow, read_scalars, write_tensorboard


def report(path, **kw) -> Path:
    """Render the report of a run directory or a sweep directory; returns the index.html path."""
    return write_sweep_report(path) if is_sweep_dir(path) else write_report(path, **kw)


__all__ = ["report", "write_report", "write_sweep_report", "is_sweep_dir", "write_tensorboard", "read_scalars",
           "log_mlflow"]
