"""Shared helpers for benchmark scripts: the repository on sys.path, dataset paths, work folders,
result files.

Every script starts with ``sys.path.insert(0, <bench folder>); from common import ...``: importing
this module puts the repository root first on ``sys.path`` and on ``PYTHONPATH`` (for Ray's worker
processes), so ``import distclust`` is this checkout's, not another checkout installed in editable mode.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path[:2]:
    sys.path.insert(0, str(ROOT))
# Ray workers are new processes: they find this checkout through PYTHONPATH (an editable install of
# another checkout would otherwise win there)
if os.environ.get("PYTHONPATH", "").split(os.pathsep)[0] != str(ROOT):
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)


def _datasets() -> Path:
    if os.environ.get("DISTCLUST_DATASETS"):
        return Path(os.environ["DISTCLUST_DATASETS"])
    # ../shared/datasets from a checkout in /work/main; /work/wt/<name> worktrees sit one level deeper
    for cand in (ROOT.parent / "shared" / "datasets", ROOT.parent.parent / "shared" / "datasets"):
        if cand.is_dir():
            return cand
    return ROOT.parent / "shared" / "datasets"


DATASETS = _datasets()
RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "bench" / "_work"


def reset_work(path: str | Path) -> Path:
    """An empty work folder (removed first if it exists)."""
    path = Path(path)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def command(script: str) -> str:
    """The command line that produced a result file (``python bench/<script> <args>``)."""
    return f"python bench/{script} " + " ".join(sys.argv[1:])


def dataset(name: str) -> Path:
    p = DATASETS / name
    if not p.exists():
        raise SystemExit(f"benchmark data {p} not found: set DISTCLUST_DATASETS to the folder holding {name}")
    return p


def save(name: str, result: dict, echo: bool = True) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    if echo:
        print(json.dumps(result, indent=1, default=str))
    return path


def training_split(data, rows: int, work: Path):
    """Load an .npz (X, y), start ``work`` afresh, and ingest its first ``rows`` rows to ``work/data``
    (sharded Parquet for ``run_training``). Returns all of X (float32) and y (int64)."""
    import numpy as np

    from distclust.data import ingest

    d = np.load(data)
    X, y = d["X"].astype(np.float32), d["y"].astype(np.int64)
    reset_work(work)
    np.savez(work / "train.npz", X=X[:rows], y=y[:rows])
    ingest(work / "train.npz", work / "data", shards=8, progress=False)
    return X, y


def spec_from(model: dict, train: dict | None = None, normalize: str = "none", name: str = "bench"):
    """A validated job spec from a model section (``model["name"]`` names the model) and train keys,
    for ``train_inprocess`` (one process: ``scaling.num_workers`` 1)."""
    from distclust.spec import load_spec

    return load_spec({"name": name, "data": {"normalize": normalize}, "model": dict(model),
                      "train": dict(train or {}), "scaling": {"num_workers": 1}})


def model_section(spec, name: str, drop=()) -> dict:
    """``spec``'s model keys as a section for model ``name`` (keys that model lacks, and ``drop``, left out)."""
    import dataclasses

    from distclust.models import get_model_class

    keep = {f.name for f in dataclasses.fields(get_model_class(name).Params)} - set(drop)
    return {"name": name, **{k: v for k, v in dataclasses.asdict(spec.model).items() if k in keep}}
