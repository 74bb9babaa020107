"""``distclust evaluate``: join assignments with labels on id; ACC, NMI, ARI, silhouette."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from .errors import DataError
from .metrics import contingency, scores


def _read_column_table(files, columns):
    import pyarrow as pa

    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files])


def evaluate(assign_dir: str | Path, data: str | Path, silhouette_sample: int = 5000, seed: int = 0,
             json_path: str | Path | None = None) -> dict:
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
    assigned = _read_column_table(a_files, [key, "cluster"]).to_pandas()
    truth = _read_column_table(d_files, list(dict.fromkeys(["id", key, "label"]))).to_pandas()
    if assigned[key].duplicated().any():
        raise DataError("the assignment holds duplicate ids", str(assign_dir), "re-run 'distclust assign --overwrite'")
    joined = truth.merge(assigned, on=key, how="inner")
    if len(joined) < len(truth):
        raise DataError(f"{len(truth) - len(joined)} of {len(truth)} labelled rows have no assignment", str(assign_dir),
                        "re-run 'distclust assign' to finish it, or pass the dataset that was assigned")
    m = contingency(joined["cluster"].to_numpy(), joined["label"].to_numpy())
    result = {**scores(m), "n": int(len(joined)), "n_clusters_used": int((m.sum(1) > 0).sum())}
    # silhouette on a seeded sample of the (normalised-by-std) features
    rng = np.random.default_rng(seed)
    n_s = min(silhouette_sample, len(joined))
    pick = set(rng.choice(joined["id"].to_numpy(), n_s, replace=False).tolist())
    feats, labs = [], []
    lab_of = dict(zip(joined["id"].to_numpy().tolist(), joined["cluster"].to_numpy().tolist()))
    for f in d_files:
        t = pq.read_table(f, columns=["id", "features"])
        ids = t.column("id").to_numpy()
        sel = np.fromiter((i in pick for i in ids), bool, len(ids))
        if sel.any():
            X = np.stack(t.column("features").to_numpy(zero_copy_only=False)[sel])
            feats.append(X)
            labs.extend(lab_of[i] for i in ids[sel])
    X, lab = np.concatenate(feats).astype(np.float32), np.asarray(labs)
    if is_dataset(data):
        std = np.asarray(Manifest.load(data).stats.std)
        X = X / np.where(std > 1e-12, std, 1.0)
    result["silhouette"] = float(silhouette_score(X, lab)) if 1 < len(set(lab.tolist())) < len(lab) else float("nan")
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=1))
    return result
