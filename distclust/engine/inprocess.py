"""The same training loop in one process, without Ray: ``Clusterer(workers=0)``, benchmarks, the GPU check.

``train_inprocess`` builds the model exactly as a Ray Train worker does (same seeding,
same normaliser, same stages), wraps the data in a one-rank ``WorkerContext`` (arrays in
memory, or an ingested dataset read with pyarrow) and runs ``engine/loop.py``. Records stay
in memory; with ``out_dir`` the artifact is written there (``out_dir/model``) and a resume
state after every checkpointed epoch (``out_dir/state.pt``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .config import steps_per_epoch
from ..errors import DistclustError
from .loop import StageError, run_loop
from .seeding import seed_everything


class LocalReporter:
    """Records in a list, progress lines on stdout, checkpoints to a file (rank 0 of one)."""

    rank = 0

    def __init__(self, quiet: bool = False, state_path: Path | None = None):
        self.quiet, self.state_path = quiet, state_path
        self.records: list[dict] = []

    def record(self, record: dict, checkpoint) -> None:
        self.records.append(record)
        if checkpoint is not None and self.state_path is not None:
            tmp = self.state_path.with_suffix(".tmp")
            torch.save(checkpoint(), tmp)
            tmp.replace(self.state_path)

    def progress(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    def heartbeat(self, step: int, force: bool = False) -> None:
        pass


@dataclass
class InProcessResult:
    model: torch.nn.Module
    history: list
    wall_s: float
    model_dir: Path | None = None
    records: list = field(default_factory=list)


def _stats(X: np.ndarray):
    from ..data.manifest import FeatureStats

    X = np.asarray(X, dtype=np.float64)
    return FeatureStats(mean=X.mean(0).tolist(), std=X.std(0).tolist(), min=X.min(0).tolist(), max=X.max(0).tolist())


def train_inprocess(spec, X=None, y=None, data: str | Path | None = None, device: str | torch.device | None = None,
                    out_dir: str | Path | None = None, quiet: bool | None = None, resume: bool = False,
                    threads: int | None = None) -> InProcessResult:
    """Train ``spec`` in this process on arrays ``X`` (``y`` optional) or the ingested dataset ``data``."""
    from ..artifact import save_artifact
    from ..data.shard_reader import ShardReader, columns_for
    from ..models import Normalizer, get_model_class
    from .context import WorkerContext

    t0 = time.time()
    device = torch.device(device or ("cuda" if spec.scaling.use_gpu and torch.cuda.is_available() else "cpu"))
    if threads:
        torch.set_num_threads(threads)
    quiet = spec.train.quiet if quiet is None else quiet
    tr = spec.train
    if X is not None:
        X = np.asarray(X, dtype=np.float32)
        stats, dim, n_classes = _stats(X), X.shape[1], (int(np.max(y)) + 1 if y is not None else None)
        data_info = {"path": None, "rows": len(X), "dim": dim, "has_label": y is not None,
                     "min": float(X.min()), "max": float(X.max()), "normalize": spec.data.normalize}
    else:
        from ..data import Manifest, resolve_dataset

        root, m = resolve_dataset(str(data or spec.data.path), Path(out_dir or ".") / "data", spec.data.shards,
                                  progress=not quiet)
        stats, dim, n_classes = m.stats, m.dim, (m.n_classes if m.has_label else None)
        data_info = {"path": str(root), "rows": m.rows, "dim": dim, "has_label": m.has_label,
                     "label_names": m.label_names, "source": m.source, "min": float(min(m.stats.min)),
                     "max": float(max(m.stats.max)), "normalize": spec.data.normalize}
    seed_everything(tr.seed)
    cls = get_model_class(spec.model_name)
    model = cls(dim, spec.model, Normalizer.from_stats(stats, spec.data.normalize)).to(device)
    if X is not None:
        ctx = WorkerContext.in_memory(model, torch.from_numpy(X), None if y is None else torch.as_tensor(y),
                                      device, tr.seed, tr.batch_size, shuffle_buffer=tr.shuffle_buffer)
        ctx.steps_per_epoch = steps_per_epoch(len(X), 1, tr.batch_size, tr.epoch_rows)
    else:
        files = Manifest.load(root).files(root)
        reader = ShardReader(files, m.rows, columns_for(m.has_label), spec.data.materialize != "never",
                             tr.shuffle_buffer, device)
        ctx = WorkerContext(model, reader, 0, 1, device, tr.seed, tr.batch_size,
                            steps_per_epoch(m.rows, 1, tr.batch_size, tr.epoch_rows), n_classes=n_classes)
    state_path = Path(out_dir) / "state.pt" if out_dir else None
    if state_path is not None:
        state_path.parent.mkdir(parents=True, exist_ok=True)
    state = torch.load(state_path, map_location=device, weights_only=False) \
        if resume and state_path is not None and state_path.is_file() else None
    reporter = LocalReporter(quiet, state_path)
    try:
        history = run_loop(model, ctx, reporter, tr, state)
    except StageError as e:   # the loop's user-facing errors, as the Ray path reports them
        raise DistclustError(*e.args) from None
    model_dir = None
    if out_dir is not None:
        model_dir = save_artifact(model, Path(out_dir) / "model", spec=spec, data_info=data_info, history=history,
                                  extra={"workers": [{"rank": 0, "device": str(device)}], "run_id": "in-process"})
    return InProcessResult(model, history, time.time() - t0, model_dir, reporter.records)
