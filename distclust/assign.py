"""``distclust assign``: stream Parquet through a trained model and FAISS, write Parquet.

Work is cut into *units* — a range of row groups of one input file — and run by a
pool of Ray actors (``ray.util.ActorPool``) that load the model once and read their
units themselves with pyarrow, so no other Ray task ever waits for the CPUs the
actors hold. Each unit streams its rows in batches (memory does not grow with the
number of rows) and writes one output file — named after the input file's path
relative to the input root, so equal file names in different (e.g. Hive partition)
folders never collide — to a temporary name, renamed into place when complete. A
rerun of the same command skips finished units. The final check verifies every
unit's row count against its input and that ids are unique.
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

from .errors import DataError, DistclustError, OutputExistsError, SpecError

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


def _out_stem(f: Path, root: Path | None) -> str:
    """The output name of input ``f``: its path relative to the input root, folders kept
    (``region=a/part-0``), so that equal file names in different folders stay apart."""
    try:
        rel = Path(f).resolve().relative_to(Path(root).resolve()) if root is not None else Path(Path(f).name)
    except ValueError:
        rel = Path(Path(f).name)
    return str(rel.with_suffix(""))


def plan_units(files: list[Path], rows_per_unit: int, root: Path | None = None,
               raw: bool = False) -> tuple[list[Unit], int]:
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
                stem = _out_stem(f, root)
                units.append(Unit(str(f), start, rg + 1, rows, f"{stem}-rg{start:05d}-{rg + 1:05d}.parquet"))
                start, rows = rg + 1, 0
    outs = [u.out for u in units]
    assert len(set(outs)) == len(outs), "two units map to one output file"
    return units, dim


class _UnitAssigner:
    """Ray actor: loads the model once, assigns whole units (files written atomically)."""

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

    def run(self, unit: dict) -> dict:
        """Assign one unit (skipped when its output exists); its rows, seconds per phase, peak RSS."""
        from .engine.loop import peak_rss_mib

        t0 = time.time()
        self.phase = dict.fromkeys(PHASES, 0.0)
        rows = self._run(Unit(**unit))
        return {"out": unit["out"], "rows": rows, "seconds": time.time() - t0,
                **{f"{k}_s": v for k, v in self.phase.items()}, "peak_rss_mib": peak_rss_mib()}

    def _run(self, unit: Unit) -> int:
        final = self.out_dir / unit.out
        if final.exists():
            return pq.ParquetFile(final).metadata.num_rows
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
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


def check_output(out: Path, units: list[Unit]) -> int:
    """Every unit's output holds exactly its input's rows, and ids are unique over the whole output.

    Reads one unit's id column at a time (min, max, distinct count); only when the units' id ranges
    overlap (ids not sorted by file) are all ids gathered for the global check. Returns the row count.
    """
    import pyarrow.compute as pc

    total, ranges = 0, []
    for u in units:
        f = out / u.out
        id_name = pq.ParquetFile(f).schema_arrow.names[0]   # the id column comes first (its own name for tables)
        ids = pq.read_table(f, columns=[id_name]).column(0)
        if len(ids) != u.rows:
            raise DataError(f"output '{u.out}' holds {len(ids)} rows but its input '{u.file}' (row groups "
                            f"{u.rg_start}-{u.rg_end - 1}) holds {u.rows}", str(f),
                            "delete that output file and re-run the same command to redo it")
        total += len(ids)
        if len(ids):
            if pc.count_distinct(ids).as_py() != len(ids):
                raise DataError(f"input '{u.file}' holds duplicate ids", u.file,
                                "give every row a unique id (re-ingest the data with 'distclust ingest')")
            mm = pc.min_max(ids)
            ranges.append((mm["min"].as_py(), mm["max"].as_py(), u))
    ranges.sort(key=lambda r: r[0])
    if any(b[0] <= a[1] for a, b in zip(ranges, ranges[1:])):
        all_ids = pa.chunked_array([c for u in units for c in pq.read_table(
            out / u.out, columns=[pq.ParquetFile(out / u.out).schema_arrow.names[0]]).column(0).chunks])
        if pc.count_distinct(all_ids).as_py() != total:
            raise DataError("the input holds the same id in more than one file", str(out),
                            "give every row a unique id (re-ingest the data with 'distclust ingest')")
    return total


def _pool_size(ray, todo: int, threads: int, actors: int | None) -> int:
    if actors:
        return min(actors, todo)
    return max(1, min(todo, int(ray.available_resources().get("CPU", threads)) // threads))


def run_assign(model_dir: str | Path, data: str | Path, out_dir: str | Path, overwrite: bool = False,
               rows_per_unit: int = 500_000, batch_rows: int = 16384, actors: int | None = None,
               threads_per_actor: int = 1, use_gpu: bool = False, address: str | None = None,
               progress: bool = True, allow_shift: bool = False, stall_timeout_s: float = 900.0,
               keep: list[str] | None = None) -> dict:
    """Assign every row of ``data`` with the model in ``model_dir``; output Parquet in ``out_dir``."""
    from tqdm.auto import tqdm

    from .artifact import load
    from .data import resolve_dataset
    from .engine import preflight
    from .engine.ray_setup import ensure_ray
    from .engine.watchdog import StallError, describe_pending

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
    units, dim = plan_units(files, rows_per_unit, data_path if data_path.is_dir() else data_path.parent, raw)
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
    for stale in out.rglob(".*.tmp-*"):  # leftovers of an interrupted run
        stale.unlink()
    (out / PLAN_FILE).write_text(json.dumps(plan, indent=1))
    todo = [u for u in units if not (out / u.out).exists()]
    total_rows = sum(u.rows for u in units)
    done_rows = total_rows - sum(u.rows for u in todo)
    peak = 0.0  # the largest actor's peak RSS (MiB)
    busy_rows, busy_s = 0, 0.0  # rows and seconds inside units (excludes Ray start-up and scheduling)
    phase_s = dict.fromkeys(PHASES, 0.0)
    n_actors = 0
    if todo:
        ray = ensure_ray(address)
        bundle = {"CPU": float(threads_per_actor), **({"GPU": 1.0} if use_gpu else {})}
        preflight.check_bundles(preflight.node_resources(), bundle, 1, "distclust assign (one actor)",
                                {"CPU": "--threads-per-actor", "use_gpu": "--use-gpu (leave it out)"})
        n_actors = _pool_size(ray, len(todo), threads_per_actor, actors)
        cls = ray.remote(num_cpus=threads_per_actor, num_gpus=1 if use_gpu else 0)(_UnitAssigner)
        pool = [cls.remote(model_dir=str(Path(model_dir).resolve()), out_dir=str(out), batch_rows=batch_rows,
                           threads=threads_per_actor, use_gpu=use_gpu, keep=keep) for _ in range(n_actors)]
        bar = tqdm(total=total_rows, initial=done_rows, unit="rows", desc="assign", disable=not progress,
                   mininterval=1.0)
        queue = list(todo)
        running = {}
        for actor in pool:  # one unit in flight per actor; the next goes to whichever finishes first
            if queue:
                u = queue.pop(0)
                running[actor.run.remote(asdict(u))] = actor
        last_progress = time.monotonic()
        while running:
            ready, _ = ray.wait(list(running), num_returns=1, timeout=5.0)
            if not ready:
                if stall_timeout_s and time.monotonic() - last_progress > stall_timeout_s:
                    pending = describe_pending()
                    for a in pool:
                        ray.kill(a)
                    raise StallError(f"assignment made no progress for {stall_timeout_s:g} s "
                                     f"({len(running)} units in flight): {pending}", "--stall-timeout",
                                     "free or add the resources it waits for, pass fewer --actors, or raise "
                                     "--stall-timeout (0 waits forever); finished parts are kept: re-run to resume")
                continue
            last_progress = time.monotonic()
            ref = ready[0]
            actor = running.pop(ref)
            try:
                row = ray.get(ref)
            except ray.exceptions.RayTaskError as e:   # a unit failed: stop, and say why in our words
                for a in pool:
                    ray.kill(a)
                cause = getattr(e, "cause", None)
                if isinstance(cause, DistclustError):
                    raise cause from None
                raise
            if queue:
                running[actor.run.remote(asdict(queue.pop(0)))] = actor
            bar.update(int(row["rows"]))
            peak = max(peak, float(row["peak_rss_mib"]))
            busy_rows += int(row["rows"])
            busy_s += float(row["seconds"])
            for k in PHASES:
                phase_s[k] += float(row[f"{k}_s"])
        bar.close()
        for a in pool:
            ray.kill(a)
    written = check_output(out, units)
    wall = time.time() - t0
    summary = {"rows": written, "units": len(units), "resumed_units": len(units) - len(todo),
               "actors": n_actors,
               "seconds": wall, "rows_per_s": (total_rows - done_rows) / max(wall, 1e-9), "out": str(out),
               "actor_peak_rss_mib": peak,
               # streaming rate of one actor while it works on units (read, encode, search, write)
               "actor_rows_per_s": busy_rows / busy_s if busy_s else None,
               "actor_seconds": {"units": busy_s, **phase_s}}
    (out / "_SUCCESS.json").write_text(json.dumps(summary, indent=1))
    return summary
