"""The keys of a history record: one definition that the loop writes and the CLI, report,
tracking and tuning read.

A run's history is a list of records, one per finished epoch of a training stage, one
per global stage (e.g. k-means, 0 epochs) and a closing ``done`` record. Besides the
bookkeeping keys below a record holds the stage's all-reduced metrics (``loss`` …),
what its hooks returned, and label metrics (``acc``, ``nmi``, ``ari``) when the data
has labels.
"""
from __future__ import annotations

STAGE = "stage"                 # stage name ("done" for the closing record)
EPOCH = "epoch"                 # 1-based epoch within the stage (0 for global stages / done)
STAGE_EPOCHS = "stage_epochs"   # epochs the stage was configured for
EPOCHS_DONE = "epochs_done"     # training epochs finished since the start of the run
SAMPLES_PER_S = "samples_per_s"
TIME_S = "time_s"                # seconds of the epoch's steps (first batch to the all-reduce)
STARTED_AT = "started_at"       # wall clock (Unix s) when the epoch's steps began: gaps between epochs
PEAK_RSS_MIB = "peak_rss_mib"
EARLY_STOPPED = "early_stopped"
TRAIN_TIME_S = "train_time_s"
LOSS = "loss"
DONE = "done"

# keys that describe where a record sits in the run, not a measured value: plots and
# trackers skip them
BOOKKEEPING = (STAGE, EPOCH, STAGE_EPOCHS, EPOCHS_DONE, STARTED_AT, "stage_index", "resumed_finished")
# keys the per-epoch progress line leaves out (shown in their own form or not at all)
NOT_IN_PROGRESS = (*BOOKKEEPING, SAMPLES_PER_S, TIME_S, PEAK_RSS_MIB)


def scalars(record: dict) -> dict:
    """The JSON- and Ray-reportable part of a record (numbers and strings)."""
    return {k: v for k, v in record.items() if isinstance(v, (int, float, str))}
