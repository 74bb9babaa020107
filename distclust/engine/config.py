"""The driver → worker contract: everything a training worker needs, typed."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainConfig:
    spec: dict                        # the validated job spec (JobSpec.to_dict())
    input_dim: int
    stats: dict                       # the dataset's FeatureStats, for the model's normaliser
    rank_files: list[list[str]]       # each rank's own Parquet shard files (read with pyarrow in the worker)
    rank_rows: list[int]
    steps_per_epoch: int              # ceil(largest rank's rows / batch): every row, every epoch
    cache: bool                       # hold the shard in memory (else stream it every epoch)
    has_label: bool
    n_classes: int | None
    data_info: dict                   # summary saved in the artifact
    run_id: str                       # this run's identity; checkpoints carry it
    quiet: bool = False
    fallback_checkpoints: list[str] = field(default_factory=list)   # --resume only: this run's dirs
    progress_board: Any = None        # Ray actor the stall watchdog reads (None: no watchdog)
