"""A seeded uniform sample of an ingested dataset's rows, read shard by shard (scoring, reports, K choice)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def sample_dataset(data_root: str | Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """A seeded uniform sample of ``n`` rows (features, labels) read shard by shard."""
    import pyarrow.parquet as pq

    from .manifest import Manifest

    m = Manifest.load(data_root)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(m.rows, min(n, m.rows), replace=False))
    X, y, offset = [], [], 0
    for f in m.files(data_root):
        cols = ["features"] + (["label"] if m.has_label else [])
        t = pq.read_table(f, columns=cols)
        sel = pick[(pick >= offset) & (pick < offset + t.num_rows)] - offset
        if len(sel):
            sub = t.take(sel)
            X.append(np.stack(sub.column("features").to_numpy(zero_copy_only=False)).astype(np.float32))
            if m.has_label:
                y.append(sub.column("label").to_numpy())
        offset += t.num_rows
    return np.concatenate(X), (np.concatenate(y) if y else None)
