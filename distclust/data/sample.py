"""A seeded uniform sample of an ingested dataset's rows, read shard by shard (scoring, reports, K choice)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def sample_dataset(data_root: str | Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """A seeded uniform sample of ``n`` rows (features, labels) read shard by shard."""
    import pyarrow.parquet as pq

    from .manifest import Manifest
    from .shard_reader import features_matrix

    m = Manifest.load(data_root)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(m.rows, min(n, m.rows), replace=False))
    X, y, offset = [], [], 0
    cols = ["features"] + (["label"] if m.has_label else [])
    for f in m.files(data_root):
        pf = pq.ParquetFile(f)
        for g in range(pf.metadata.num_row_groups):   # one row group at a time: memory ~ a row group
            n_g = pf.metadata.row_group(g).num_rows
            sel = pick[(pick >= offset) & (pick < offset + n_g)] - offset
            offset += n_g
            if not len(sel):
                continue
            sub = pf.read_row_group(g, columns=cols).take(sel)
            X.append(features_matrix(sub.column("features")))
            if m.has_label:
                y.append(sub.column("label").to_numpy())
    return np.concatenate(X), (np.concatenate(y) if y else None)

