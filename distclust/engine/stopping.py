"""Early stopping: end a stage once its monitored metric has stopped improving.

The decision is a pure function of the stage's per-epoch history, so it is the
same on every rank (the metric is all-reduced before it is recorded) and it
survives a resume (the history travels in the checkpoint).
"""
from __future__ import annotations

import math
from typing import Sequence


def epochs_without_improvement(values: Sequence[float], min_delta: float) -> int:
    """Epochs since the metric (lower is better) last dropped by ``min_delta`` relative to its best."""
    best, since = math.inf, 0
    for v in values:
        if math.isfinite(v) and (not math.isfinite(best) or v < best - min_delta * abs(best)):
            best, since = v, 0
        else:
            since += 1
    return since


def should_stop(values: Sequence[float], patience: int, min_delta: float, min_epochs: int = 0) -> bool:
    """True when early stopping is on (``patience`` > 0), ``min_epochs`` have run, and the
    last ``patience`` epochs brought no relative improvement of ``min_delta``."""
    if patience <= 0 or len(values) < max(min_epochs, 1):
        return False
    return epochs_without_improvement(values, min_delta) >= patience
