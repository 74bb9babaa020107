"""The driver → worker contract: everything a training worker needs, typed."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


def steps_per_epoch(max_rank_rows: int, world: int, batch_size: int, epoch_rows: int = 0) -> int:
    """Optimiser steps per epoch, equal on every rank: the largest rank's rows once (smaller ranks wrap),
    or, with ``train.epoch_rows``, that many rows over all workers (capped at the whole data set), so a
    schedule keeps its step count however large the table grows."""
    rows = max_rank_rows if not epoch_rows else min(max_rank_rows, math.ceil(epoch_rows / world))
    return max(1, math.ceil(rows / batch_size))


@dataclass
class TrainConfig:
    spec: dict                        # the validated job spec (JobSpec.to_dict())
    input_dim: int
    stats: dict                       # the dataset's FeatureStats, for the model's normaliser
    rank_files: list[list[str]]       # each rank's own Parquet shard files (read with pyarrow in the worker)
    rank_rows: list[int]
    steps_per_epoch: int              # steps_per_epoch(): every row every epoch, or train.epoch_rows
    cache: bool                       # hold the shard in memory (else stream it every epoch)
    has_label: bool
    n_classes: int | None
    data_info: dict                   # summary saved in the artifact
    run_id: str                       # this run's identity; checkpoints carry it
    quiet: bool = False
    fallback_checkpoints: list[str] = field(default_factory=list)   # --resume only: this run's dirs
    progress_board: Any = None        # Ray actor the stall watchdog reads (None: no watchdog)
