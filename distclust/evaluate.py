"""``distclust evaluate``: join assignments with labels on id; ACC, NMI, ARI, silhouette.

The join runs in bounded memory: ids are hashed into partitions of at most
``partition_rows`` rows, and for each partition the matching rows of the labelled
data and of the assignment are read in batches and joined with Arrow's hash join;
only the cluster × label contingency matrix (which ACC, NMI and ARI need) and a
seeded sample for the silhouette survive a partition. Rows of one id always land in
one partition, so duplicate ids and unassigned rows are counted exactly.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import DataError
from .metrics import scores

BATCH_ROWS = 262_144


def _hash(ids: pa.Array, salt: int = 0) -> np.ndarray:
    """A stable 64-bit hash of ids of any type (ints, strings)."""
    return pd.util.hash_array(ids.to_numpy(zero_copy_only=False), hash_key=f"distclust{salt:07d}"[:16])


def _partition(files, columns: list[str], part: int, parts: int, key: str = "id"):
    """The rows of ``files`` whose id (column ``key``) hashes into ``part`` (read in batches)."""
    out = []
    for f in files:
        for rb in pq.ParquetFile(f).iter_batches(batch_size=BATCH_ROWS, columns=columns):
            if parts > 1:
                keep = (_hash(rb.column(key)) % np.uint64(parts)) == part
                rb = rb.filter(pa.array(keep))
            if rb.num_rows:
                out.append(pa.Table.from_batches([rb]))
    if not out:
        return None
    return pa.concat_tables(out)


def _rows(files) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def evaluate(assign_dir: str | Path, data: str | Path, silhouette_sample: int = 5000, seed: int = 0,
             json_path: str | Path | None = None, partition_rows: int = 2_000_000) -> dict:
    from sklearn.metrics import silhouette_score

    from .data import Manifest, is_dataset
    from .data.sources import parquet_files

    assign_dir, data = Path(assign_dir), Path(data)
    a_files = parquet_files(assign_dir) if assign_dir.is_dir() else []
    if not a_files:
        raise DataError(f"'{assign_dir}' holds no assignment files", str(assign_dir),
                        "pass the OUT_DIR of 'distclust assign'")
    if not data.is_dir():
        raise DataError(f"'{data}' is not a dataset folder", str(data),
                        "pass the ingested dataset (a folder made by 'distclust ingest') that was assigned")
    d_files = parquet_files(data)
    names = pq.ParquetFile(d_files[0]).schema_arrow.names
    if "label" not in names:
        raise DataError(f"'{data}' has no 'label' column, so there is nothing to compare against", str(data),
                        "ingest the data with labels (an npz 'y' array or a 'label' column)")
    # an assignment of a table is keyed by the table's own id column, which the dataset's shards also hold
    a_names = pq.ParquetFile(a_files[0]).schema_arrow.names
    key = "id" if "id" in a_names else a_names[0]
    if key not in names:
        raise DataError(f"the assignment is keyed by '{key}' but the dataset has no such column", str(data),
                        "pass the dataset ingested (with --id-column) from the table that was assigned")
    n_truth, n_assigned = _rows(d_files), _rows(a_files)
    parts = max(1, math.ceil(max(n_truth, n_assigned) / partition_rows))
    counts: dict[tuple[int, int], int] = {}
    missing = joined_rows = 0
    # a seeded sample of about `silhouette_sample` rows, chosen by a salted hash of the id
    take = min(1.0, silhouette_sample / max(n_truth, 1))
    sample_ids, sample_clusters = [], []
    for part in range(parts):
        truth = _partition(d_files, [key, "label"], part, parts, key)
        assigned = _partition(a_files, [key, "cluster"], part, parts, key)
        if truth is None:
            continue
        if assigned is None:
            missing += truth.num_rows
            continue
        if pc.count_distinct(assigned.column(key)).as_py() != assigned.num_rows:
            raise DataError("the assignment holds duplicate ids", str(assign_dir),
                            "re-run 'distclust assign --overwrite'")
        j = truth.join(assigned, key, join_type="inner")
        missing += truth.num_rows - j.num_rows
        joined_rows += j.num_rows
        code = (j.column("cluster").to_numpy().astype(np.int64) << 32) | j.column("label").to_numpy().astype(np.int64)
        for k, n in zip(*np.unique(code, return_counts=True)):
            counts[(int(k) >> 32, int(k) & 0xFFFFFFFF)] = counts.get((int(k) >> 32, int(k) & 0xFFFFFFFF), 0) + int(n)
        if take > 0 and j.num_rows:
            pick = (_hash(j.column(key), seed + 1) % np.uint64(1 << 32)) < np.uint64(int(take * (1 << 32)))
            sample_ids.append(j.column(key).filter(pa.array(pick)))
            sample_clusters.append(j.column("cluster").to_numpy()[pick])
        del truth, assigned, j
    if missing:
        raise DataError(f"{missing} of {n_truth} labelled rows have no assignment", str(assign_dir),
                        "re-run 'distclust assign' to finish it, or pass the dataset that was assigned")
    clusters = sorted({c for c, _ in counts})
    labels = sorted({lab for _, lab in counts})
    m = np.zeros((len(clusters), len(labels)), dtype=np.int64)
    ci, li = {c: i for i, c in enumerate(clusters)}, {lab: i for i, lab in enumerate(labels)}
    for (c, lab), n in counts.items():
        m[ci[c], li[lab]] = n
    result = {**scores(m), "n": int(joined_rows), "n_clusters_used": int((m.sum(1) > 0).sum())}
    result["silhouette"] = _silhouette(d_files, sample_ids, sample_clusters, data, silhouette_score,
                                       Manifest if is_dataset(data) else None, key)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=1))
    return result


def _silhouette(d_files, sample_ids, sample_clusters, data: Path, silhouette_score, manifest_cls,
                key: str = "id") -> float:
    """Silhouette of the sampled rows' features (scaled by the dataset's per-feature std)."""
    if not sample_ids:
        return float("nan")
    ids = pa.chunked_array(sample_ids).combine_chunks() if len(sample_ids) > 1 else sample_ids[0]
    cluster_of = pd.Series(np.concatenate(sample_clusters), index=ids.to_numpy(zero_copy_only=False))
    feats = []
    for f in d_files:
        for rb in pq.ParquetFile(f).iter_batches(batch_size=BATCH_ROWS, columns=list(dict.fromkeys([key, "features"]))):
            keep = pc.is_in(rb.column(key), value_set=ids)
            if pc.any(keep).as_py():
                feats.append(pa.Table.from_batches([rb.filter(keep)]))
    if not feats:
        return float("nan")
    t = pa.concat_tables(feats)   # a few thousand rows (Arrow's join takes no list payloads)
    X = np.stack(t.column("features").to_numpy(zero_copy_only=False)).astype(np.float32)
    lab = cluster_of.loc[t.column(key).to_numpy(zero_copy_only=False)].to_numpy()
    if manifest_cls is not None:
        std = np.asarray(manifest_cls.load(data).stats.std)
        X = X / np.where(std > 1e-12, std, 1.0)
    return float(silhouette_score(X, lab)) if 1 < len(set(lab.tolist())) < len(lab) else float("nan")
