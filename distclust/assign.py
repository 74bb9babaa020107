"""``distclust assign``: stream Parquet through a trained model and FAISS, write Parquet.

Work is cut into *units* — a range of row groups of one input file — and run by
a ``ray.data`` actor pool (``map_batches`` over the unit list) whose actors load
the model once. Each unit streams its rows in batches (memory does not grow with
the number of rows) and writes one output file to a temporary name, renamed into
place when complete. A rerun of the same command skips finished units, so an
interrupted assignment resumes and the output has exactly one row per input id.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import DataError, OutputExistsError, SpecError

PLAN_FILE = "_assign.json"
PHASES = ("read", "model", "write")  # where an actor's time inside a unit goes
OUT_SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("cluster", pa.int64()),
                        pa.field("distance", pa.float32())])


@dataclass
class Unit:
    file: str
    rg_start: int
    rg_end: int
    rows: int
    out: str


def input_files(data: str | Path) -> list[Path]:
    from .data.sources import parquet_files

    p = Path(data)
    if not p.exists():
        raise DataError(f"data path '{data}' does not exist", str(data), "pass an ingested dataset or a Parquet folder")
    return parquet_files(p)


def plan_units(files: list[Path], rows_per_unit: int, raw: bool = False) -> tuple[list[Unit], int]:
    """Cut files into units of whole row groups, about ``rows_per_unit`` rows each; also return the dim
    (``raw``: a table encoded by the model's pipeline, checked by ``table_assign.prepare_raw``)."""
    units, dim = [], None
    for f in files:
        try:
            pf = pq.ParquetFile(f)
        except Exception as e:
            raise DataError(f"'{f}' is not a readable Parquet file ({type(e).__name__}: {e})", str(f),
                            "re-create it (e.g. re-run 'distclust ingest') or remove it") from None
        names = pf.schema_arrow.names
        for col in () if raw else ("id", "features"):
            if col not in names:
                raise DataError(f"'{f}' has no '{col}' column (columns: {', '.join(names)})", str(f),
                                "run 'distclust ingest' on the data first, or pass any file ingest accepts")
        t = pf.schema_arrow.field("features").type if not raw else None
        if t is not None and pa.types.is_fixed_size_list(t):
            d = t.list_size
            if dim is not None and d != dim:
                raise DataError(f"'{f}' has {d} features, other files have {dim}", str(f),
                                "assign one dataset with one feature dimension")
            dim = d
        md = pf.metadata
        start, rows = 0, 0
        for rg in range(md.num_row_groups):
            rows += md.row_group(rg).num_rows
            if rows >= rows_per_unit or rg == md.num_row_groups - 1:
                stem = Path(f).stem
                units.append(Unit(str(f), start, rg + 1, rows, f"{stem}-rg{start:05d}-{rg + 1:05d}.parquet"))
                start, rows = rg + 1, 0
    return units, dim


class _UnitAssigner:
    """Ray Data actor: loads the model once, assigns whole units (files written atomically)."""

    def __init__(self, model_dir: str, out_dir: str, batch_rows: int, threads: int, use_gpu: bool,
                 keep: list[str] | None = None):
        import faiss
        import torch

        from .artifact import load

        torch.set_num_threads(max(1, threads))
        faiss.omp_set_num_threads(max(1, threads))
        self.model = load(model_dir, device="cuda" if use_gpu else "cpu")
        self.out_dir, self.batch_rows, self.threads = Path(out_dir), batch_rows, threads
        self.keep = list(keep or [])
        # the system allocator hands freed batch buffers back; mimalloc (Arrow's default here) kept
        # ~100 MiB more per actor and let the peak creep over the first units (bench/assign_scale.py)
        pa.set_memory_pool(pa.system_memory_pool())
        self.phase = dict.fromkeys(PHASES, 0.0)  # seconds per phase, for the unit being run

    def __call__(self, batch: dict) -> dict:
        rows, secs, phases = [], [], {k: [] for k in PHASES}
        for i in range(len(batch["file"])):
            t0 = time.time()
            unit = Unit(**{k: batch[k][i].item() if hasattr(batch[k][i], "item") else batch[k][i]
                           for k in ("file", "rg_start", "rg_end", "rows", "out")})
            self.phase = dict.fromkeys(PHASES, 0.0)
            rows.append(self._run(unit))
            secs.append(time.time() - t0)
            for k in PHASES:
                phases[k].append(self.phase[k])
        from .engine.worker import peak_rss_mib

        return {"out": batch["out"], "rows": np.array(rows), "seconds": np.array(secs),
                **{f"{k}_s": np.array(v) for k, v in phases.items()},
                "peak_rss_mib": np.array([peak_rss_mib()] * len(rows))}

    def _run(self, unit: Unit) -> int:
        final = self.out_dir / unit.out
        if final.exists():
            return pq.ParquetFile(final).metadata.num_rows
        tmp = self.out_dir / f".{unit.out}.tmp-{uuid.uuid4().hex[:8]}"
        pf = pq.ParquetFile(unit.file)
        n = 0
        from .table_assign import output_schema, read_columns

        columns, idc = read_columns(self.model, pf.schema_arrow, self.keep)
        schema = output_schema(pf.schema_arrow, idc, self.keep) if idc != "id" else OUT_SCHEMA
        try:
            with pq.ParquetWriter(tmp, schema) as w:
                # one row group at a time: a reader over the unit's whole row-group range kept
                # ~2x more decoded data alive (185 vs 80 MiB for a 500k-row unit), so the actor's
                # peak grew with the unit size
                batches = (rb for rg in range(unit.rg_start, unit.rg_end)
                           for rb in pf.iter_batches(batch_size=self.batch_rows, row_groups=[rg],
                                                     columns=columns, use_threads=self.threads > 1))
                while True:
                    t = time.perf_counter()
                    rb = next(batches, None)
                    if rb is None:
                        break
                    if "features" in rb.schema.names:
                        feats = rb.column("features")
                        d = feats.type.list_size if pa.types.is_fixed_size_list(feats.type) else \
                            len(feats[0].as_py())
                        X = feats.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
                        X = X.reshape(rb.num_rows, d)
                    else:  # a raw table: the model's feature pipeline encodes it
                        X = self.model.pipeline.transform(rb, unit.file)
                    t1 = time.perf_counter()
                    cluster, dist = self.model.assign(X)
                    t2 = time.perf_counter()
                    w.write_table(pa.Table.from_arrays([rb.column(idc), pa.array(cluster), pa.array(dist),
                                                        *(rb.column(k) for k in self.keep)], schema=schema))
                    n += rb.num_rows
                    t3 = time.perf_counter()
                    self.phase["read"] += t1 - t
                    self.phase["model"] += t2 - t1
                    self.phase["write"] += t3 - t2
            os.replace(tmp, final)  # atomic: a unit's output appears whole or not at all
        finally:
            if tmp.exists():
                tmp.unlink()
            # hand Arrow's freed buffers back to the OS between units: without it the pool's
            # high-water mark creeps up unit after unit and memory is not flat in the row count
            pa.default_memory_pool().release_unused()
            _malloc_trim()
        return n


def _malloc_trim() -> None:
    """Return glibc's freed heap pages to the OS (a no-op off glibc): the batch buffers of one unit
    otherwise fragment the heap and each later unit peaks a little higher."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def check_value_range(model, data_path: Path, allow_shift: bool = False) -> None:
    """Refuse data whose values lie far outside the training data's range (e.g. raw 0-255 pixels
    for a model trained on 0-1 features): its clusters would be silently wrong."""
    from .data import Manifest, is_dataset

    info = model.config.get("data", {})
    if allow_shift or "min" not in info or not is_dataset(data_path):
        return
    st = Manifest.load(data_path).stats
    lo, hi = float(min(st.min)), float(max(st.max))
    tlo, thi = info["min"], info["max"]
    width = max(thi - tlo, 1e-12)
    if lo < tlo - width or hi > thi + width:
        raise DataError(f"the data's values span [{lo:.4g}, {hi:.4g}] but the model was trained on values in "
                        f"[{tlo:.4g}, {thi:.4g}]: the features look differently scaled or preprocessed",
                        str(data_path), "apply the same preprocessing as for the training data, or pass "
                        "--allow-shift if the shift is real")


def run_assign(model_dir: str | Path, data: str | Path, out_dir: str | Path, overwrite: bool = False,
               rows_per_unit: int = 500_000, batch_rows: int = 16384, actors: int | None = None,
               threads_per_actor: int = 1, use_gpu: bool = False, address: str | None = None,
               progress: bool = True, allow_shift: bool = False, keep: list[str] | None = None) -> dict:
    """Assign every row of ``data`` with the model in ``model_dir``; output Parquet in ``out_dir``."""
    from tqdm.auto import tqdm

    from .artifact import load
    from .data import resolve_dataset
    from .engine.ray_setup import ensure_ray

    for name, v in (("--actors", actors), ("--rows-per-unit", rows_per_unit), ("--threads-per-actor", threads_per_actor),
                    ("batch_rows", batch_rows)):
        if v is not None and (not isinstance(v, int) or v < 1):
            raise SpecError(f"{name} must be a whole number ≥ 1, got {v!r}", "distclust assign",
                            f"pass {name} 1 or more" + (" (or leave it out: one actor per free CPU)"
                                                         if name == "--actors" else ""))
    t0 = time.time()
    out = Path(out_dir).resolve()
    model = load(model_dir)  # validates the artifact before any work
    data_path = Path(str(data))
    keep = list(keep or [])
    from .table_assign import is_raw_table, prepare_raw

    raw = is_raw_table(data_path)
    if keep and not raw:
        raise DataError("--keep passes columns of a raw table through, but the data is an ingested dataset",
                        str(data), "assign the raw table (CSV or Parquet) the dataset was ingested from")
    if raw:
        files = prepare_raw(model, data_path, out, keep, progress)
    elif str(data).startswith("builtin:") or not data_path.is_dir():
        # a single file (npz, csv, …) is ingested beside the output first; folders
        # (ingested datasets, or Parquet with id/features columns) are read as they are
        data_path, _ = resolve_dataset(str(data), out.parent / f".{out.name}.input", progress=progress)
    if not raw:
        files = input_files(data_path)
    units, dim = plan_units(files, rows_per_unit, raw)
    if dim is not None and dim != model.n_features_in_:
        raise DataError(f"the data has {dim} features but the model was trained on {model.n_features_in_}",
                        str(data), "assign data with the same features as the training data")
    if not raw:
        check_value_range(model, data_path, allow_shift)
    plan = {"model": str(Path(model_dir).resolve()), "data": str(data_path.resolve()),
            "units": [asdict(u) for u in units], "keep": keep}
    if out.exists():
        old = out / PLAN_FILE
        same = old.is_file() and json.loads(old.read_text()).get("units") == plan["units"] and \
            json.loads(old.read_text()).get("model") == plan["model"]
        if overwrite:
            shutil.rmtree(out)
        elif not same:
            raise OutputExistsError(f"output '{out}' already exists and was not written by this assignment",
                                    str(out), "choose a new output folder, or pass --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.tmp-*"):  # leftovers of an interrupted run
        stale.unlink()
    (out / PLAN_FILE).write_text(json.dumps(plan, indent=1))
    todo = [u for u in units if not (out / u.out).exists()]
    total_rows = sum(u.rows for u in units)
    done_rows = total_rows - sum(u.rows for u in todo)
    peak = 0.0  # the largest actor's peak RSS (MiB)
    busy_rows, busy_s = 0, 0.0  # rows and seconds inside units (excludes Ray start-up and scheduling)
    phase_s = dict.fromkeys(PHASES, 0.0)
    if todo:
        ray = ensure_ray(address)
        n_actors = actors or max(1, min(len(todo), int(ray.available_resources().get("CPU", 1)) // threads_per_actor))
        ds = ray.data.from_items([asdict(u) for u in todo], override_num_blocks=len(todo))
        res = ds.map_batches(_UnitAssigner, batch_size=1, compute=ray.data.ActorPoolStrategy(size=n_actors),
                             num_cpus=threads_per_actor,
                             num_gpus=1 if use_gpu else 0,
                             fn_constructor_kwargs=dict(model_dir=str(Path(model_dir).resolve()), out_dir=str(out),
                                                        batch_rows=batch_rows, threads=threads_per_actor,
                                                        use_gpu=use_gpu, keep=keep))
        bar = tqdm(total=total_rows, initial=done_rows, unit="rows", desc="assign", disable=not progress,
                   mininterval=1.0)
        for row in res.iter_rows():
            bar.update(int(row["rows"]))
            peak = max(peak, float(row["peak_rss_mib"]))
            busy_rows += int(row["rows"])
            busy_s += float(row["seconds"])
            for k in PHASES:
                phase_s[k] += float(row[f"{k}_s"])
        bar.close()
    written = sum(pq.ParquetFile(out / u.out).metadata.num_rows for u in units)
    if written != total_rows:
        raise DataError(f"output holds {written} rows for {total_rows} input rows", str(out),
                        "re-run the same command to finish the missing parts")
    wall = time.time() - t0
    summary = {"rows": written, "units": len(units), "resumed_units": len(units) - len(todo),
               "actors": n_actors if todo else 0,
               "seconds": wall, "rows_per_s": (total_rows - done_rows) / max(wall, 1e-9), "out": str(out),
               "actor_peak_rss_mib": peak,
               # streaming rate of one actor while it works on units (read, encode, search, write)
               "actor_rows_per_s": busy_rows / busy_s if busy_s else None,
               "actor_seconds": {"units": busy_s, **phase_s}}
    (out / "_SUCCESS.json").write_text(json.dumps(summary, indent=1))
    return summary
