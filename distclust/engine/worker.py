"""The Ray Train worker: set-up, then the one loop (``engine/loop.py``) with a Ray reporter.

Set-up builds the model, this rank's ``ShardReader`` over its own files (read with
pyarrow in this process: no Ray Data tasks that could wait for CPUs the workers
hold), finds this run's checkpoint when resuming, and hands the loop a reporter
whose records go to ``ray.train.report`` (with a checkpoint when one is due). Rank 0
writes the artifact and reports it as the final checkpoint.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from ..errors import DistclustError
from .config import TrainConfig
from .loop import StageError, run_loop
from .records import scalars
from .seeding import seed_everything

ERROR_MARK = "DISTCLUST_ERROR::"
STATE_FILE = "state.pt"
BEAT_EVERY_S = 5.0


def quiet_library_logs() -> None:
    """Keep worker output to distclust's own progress lines (Ray Train INFO, FAISS loader)."""
    import logging

    names = ["ray.train", "ray.data", "ray.tune", "faiss", "faiss.loader"]
    try:  # Train V2 logs every report at INFO under the module's *file path* as logger name
        import ray.train.v2._internal.execution.context as v2ctx

        names.append(v2ctx.__file__)
    except ImportError:
        pass
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)


def worker_placement(rank: int, world: int, device) -> list[dict]:
    """Where every rank runs (node id, host, device), gathered on all ranks; saved in the artifact."""
    import socket

    import ray
    import torch.distributed as dist

    me = {"rank": rank, "node_id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(),
          "device": str(device)}
    if world > 1 and dist.is_available() and dist.is_initialized():
        out = [None] * world
        dist.all_gather_object(out, me)
        return out
    return [me]


class RayReporter:
    """Records to ``ray.train.report`` (checkpoints from rank 0), progress lines to stdout,
    heartbeats to the driver's stall watchdog."""

    def __init__(self, rank: int, run_id: str, quiet: bool, board=None):
        self.rank, self.run_id, self.quiet, self.board = rank, run_id, quiet, board
        self._last_beat = 0.0

    def record(self, record: dict, checkpoint) -> None:
        import ray.train
        from ray.train import Checkpoint

        if self.rank == 0 and checkpoint is not None:
            # report() copies the directory to the run's storage before it returns; the local copy
            # goes with the context (left behind, every checkpoint of every run piled up in /tmp)
            with tempfile.TemporaryDirectory(prefix=f"distclust-ckpt-{self.run_id}-") as tmp:
                torch.save({**checkpoint(), "run_id": self.run_id}, Path(tmp, STATE_FILE))
                ray.train.report(scalars(record), checkpoint=Checkpoint.from_directory(tmp))
        else:
            ray.train.report(scalars(record), checkpoint=None)
        self.heartbeat(-1, force=True)

    def final(self, record: dict, artifact_dir: str | None, remove: bool = True) -> None:
        """Report the artifact as the run's last checkpoint; ``remove`` deletes the local folder once
        report() has copied it to the run's storage (the driver reads that copy)."""
        import ray.train
        from ray.train import Checkpoint

        ray.train.report(scalars(record), checkpoint=Checkpoint.from_directory(artifact_dir) if artifact_dir else None)
        if artifact_dir and remove:
            shutil.rmtree(artifact_dir, ignore_errors=True)

    def progress(self, text: str) -> None:
        if self.rank == 0 and not self.quiet:
            print(text, flush=True)

    def heartbeat(self, step: int, force: bool = False) -> None:
        now = time.monotonic()
        if self.board is not None and (force or now - self._last_beat >= BEAT_EVERY_S):
            self._last_beat = now
            self.board.beat.remote(self.rank, step)


def _load_state(d: Path, device, run_id: str) -> dict | None:
    state = torch.load(d / STATE_FILE, map_location=device, weights_only=False)
    if state.get("run_id") != run_id:
        raise DistclustError(f"checkpoint '{d}' belongs to run {state.get('run_id')}, not to this run ({run_id})",
                             str(d), "resume a run with its own --out directory, or start a new run")
    return state


def _unregistered_state(dirs: list[str], device, run_id: str):
    """The newest whole checkpoint of this run that Ray had not yet registered (``--resume`` only).

    A run killed between a worker writing its checkpoint and the controller recording it leaves a
    complete directory that ``ray.train.get_checkpoint()`` does not return. A directory still being
    copied when the run died fails to load and is skipped.
    """
    for d in dirs:
        try:
            return _load_state(Path(d), device, run_id)
        except DistclustError:
            raise
        except Exception:  # noqa: BLE001 - partial copy: try the previous one
            continue
    return None


def make_context(cfg: TrainConfig, train, model, rank: int, world: int, device):
    """Rank ``rank``'s context over its own shard files (read in this process with pyarrow)."""
    from ..data.shard_reader import ShardReader, columns_for
    from .context import WorkerContext

    reader = ShardReader(cfg.rank_files[rank], cfg.rank_rows[rank], columns_for(cfg.has_label), cfg.cache,
                         train.shuffle_buffer, device)
    return WorkerContext(model, reader, rank, world, device, train.seed, train.batch_size, cfg.steps_per_epoch,
                         n_classes=cfg.n_classes)


def train_fn(config: dict) -> None:
    """Entry point of every Ray Train worker."""
    try:
        _train(config["train_config"])
    except (DistclustError, StageError) as e:  # carry the user-facing message across Ray intact
        what, where, fix = (e.what, e.where, e.fix) if isinstance(e, DistclustError) else e.args
        raise RuntimeError(ERROR_MARK + json.dumps({"type": type(e).__name__, "what": what,
                                                    "where": where, "fix": fix})) from None


def _train(cfg: TrainConfig) -> None:
    import ray.train
    import ray.train.torch

    from ..artifact import save_artifact
    from ..data.manifest import FeatureStats
    from ..models import Normalizer, get_model_class
    from ..spec import spec_from_dict

    spec = spec_from_dict(cfg.spec)
    quiet_library_logs()
    tctx = ray.train.get_context()
    rank, world = tctx.get_world_rank(), tctx.get_world_size()
    torch.set_num_threads(max(1, int(spec.scaling.cpus_per_worker)))
    device = ray.train.torch.get_device() if spec.scaling.use_gpu else torch.device("cpu")
    quiet = spec.train.quiet or cfg.quiet
    reporter = RayReporter(rank, cfg.run_id, quiet, cfg.progress_board)
    reporter.heartbeat(0, force=True)

    seed_everything(spec.train.seed)  # identical initial weights on every rank
    cls = get_model_class(spec.model_name)
    model = cls(cfg.input_dim, spec.model, Normalizer.from_stats(FeatureStats(**cfg.stats), spec.data.normalize))
    model = model.to(device)

    # ---- resume: only this run's checkpoints (Ray's retry, or --resume) -------------------------
    state = None
    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        state = _unregistered_state(cfg.fallback_checkpoints, device, cfg.run_id)
    else:
        with ckpt.as_directory() as found:  # the stored folder itself, or a download removed on exit
            d = Path(found)
            if (d / STATE_FILE).is_file():
                state = _load_state(d, device, cfg.run_id)
            elif (d / "config.json").is_file():  # the run had finished: hand back its artifact
                hist = json.loads((d / "history.json").read_text()) or [{}]
                reporter.final({**scalars(hist[-1]), "resumed_finished": 1}, str(d) if rank == 0 else None,
                               remove=False)
                return

    ctx = make_context(cfg, spec.train, model, rank, world, device)
    ctx.heartbeat = reporter.heartbeat
    workers = worker_placement(rank, world, device)
    history = run_loop(model, ctx, reporter, spec.train, state)

    # ---- artifact: written by rank 0, handed to the driver as the final checkpoint -------------
    final_dir = None
    if rank == 0:
        final_dir = tempfile.mkdtemp(prefix=f"distclust-artifact-{cfg.run_id}-")
        save_artifact(model, final_dir, spec=spec, data_info=cfg.data_info, history=history,
                      extra={"workers": workers, "run_id": cfg.run_id})
    reporter.final(history[-1], final_dir)
