"""Shared helpers for benchmark scripts: dataset paths, a peak-memory sampler, result files."""
from __future__ import annotations

import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATASETS = Path(os.environ.get("DISTCLUST_DATASETS", ROOT.parent / "shared" / "datasets"))
RESULTS = ROOT / "bench" / "results"


def dataset(name: str) -> Path:
    p = DATASETS / name
    if not p.exists():
        raise SystemExit(f"benchmark data {p} not found: set DISTCLUST_DATASETS to the folder holding {name}")
    return p


def save(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    print(json.dumps(result, indent=1, default=str))
    return path


def training_split(data, rows: int, work: Path):
    """Load an .npz (X, y), start ``work`` afresh, and ingest its first ``rows`` rows to ``work/data``
    (sharded Parquet for ``run_training``). Returns all of X (float32) and y (int64)."""
    import shutil

    import numpy as np

    from distclust.data import ingest

    d = np.load(data)
    X, y = d["X"].astype(np.float32), d["y"].astype(np.int64)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    np.savez(work / "train.npz", X=X[:rows], y=y[:rows])
    ingest(work / "train.npz", work / "data", shards=8, progress=False)
    return X, y
