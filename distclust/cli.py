"""The ``distclust`` command: thin — parse, call, print.

Errors a user can fix are printed as one paragraph (what, where, how to fix)
with exit code 2; a traceback only with ``--debug``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .engine import ray_setup  # noqa: F401  (Ray env defaults before Ray is imported)
from .errors import DistclustError


def _table(rows: list[tuple[str, str]]) -> str:
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{w}}  {v}" for k, v in rows)


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _names(v: str | None) -> list[str]:
    return [c.strip() for c in v.split(",") if c.strip()] if v else []


def cmd_ingest(a) -> int:
    from .data import ingest

    if any(v is not None for v in (a.id_column, a.label_column, a.columns, a.exclude, a.categorical)):
        import warnings

        from .data.features import FeatureOptions
        from .data.table_ingest import ingest_table

        opt = FeatureOptions(max_levels=a.max_levels, hash_above=a.hash_above, hash_buckets=a.hash_buckets,
                             numeric_transform=a.numeric_transform, categorical=_names(a.categorical))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            m = ingest_table(a.src, a.out, id_column=a.id_column, label_column=a.label_column,
                             columns=_names(a.columns), exclude=_names(a.exclude), options=opt, shards=a.shards,
                             overwrite=a.overwrite, progress=not a.quiet)
        for w in caught:
            print(f"distclust ingest: warning: {w.message}", file=sys.stderr)
        from .data.features import FeaturePipeline

        print(FeaturePipeline.from_dict(m.stats.pipeline).describe())
    else:
        m = ingest(a.src, a.out, shards=a.shards, overwrite=a.overwrite, progress=not a.quiet)
    print(f"ingested {m.rows} rows × {m.dim} features into {len(m.shards)} shards"
          f"{' with labels' if m.has_label else ''}")
    print(str(Path(a.out).resolve()))
    return 0


def cmd_train(a) -> int:
    from .engine.trainer import run_training
    from .spec import load_spec

    spec = load_spec(a.spec, a.set)
    res = run_training(spec, a.out, data=a.data, resume=a.resume, overwrite=a.overwrite, quiet=a.quiet or None)
    m = res.metrics
    rows = [("model", spec.model_name), ("clusters", str(spec.model.n_clusters)),
            ("workers", str(spec.scaling.num_workers)), ("epochs", _fmt(m.get("epochs_done", "?"))),
            ("wall time", f"{res.wall_s:.1f} s")]
    for h in res.history:
        if h.get("early_stopped"):
            rows.append(("early stop", f"stage '{h['stage']}' after epoch {h['epoch']} of {h.get('stage_epochs', '?')}"))
    for k in ("acc", "nmi", "ari", "active_clusters"):
        if k in m:
            rows.append((k, _fmt(m[k])))
    print("\ntraining finished\n" + _table(rows))
    try:  # the run report, TensorBoard scalars and MLflow (when configured); never fails the training
        from .report import log_mlflow, write_report

        print(f"report: {write_report(res.run_dir)}")
        log_mlflow(res.run_dir)
    except Exception as e:  # noqa: BLE001
        print(f"distclust train: warning: the run report failed ({type(e).__name__}: {e}); "
              f"retry with: distclust report {res.run_dir}", file=sys.stderr)
    print(str(res.model_dir))
    return 0


def cmd_assign(a) -> int:
    from .assign import run_assign

    s = run_assign(a.model, a.data, a.out, overwrite=a.overwrite, actors=a.actors, use_gpu=a.gpu,
                   rows_per_unit=a.rows_per_unit, threads_per_actor=a.threads_per_actor,
                   progress=not a.quiet, allow_shift=a.allow_shift, keep=_names(a.keep))
    print(f"assigned {s['rows']} rows in {s['seconds']:.1f} s ({s['rows_per_s']:.0f} rows/s); "
          f"{s['resumed_units']} of {s['units']} parts were already done")
    print(s["out"])
    return 0


def cmd_evaluate(a) -> int:
    from .evaluate import evaluate

    r = evaluate(a.assign_dir, a.data, json_path=a.json, silhouette_sample=a.silhouette_sample)
    print(_table([(k, _fmt(v)) for k, v in r.items()]))
    if a.json:
        print(str(Path(a.json).resolve()))
    return 0


def cmd_tune(a) -> int:
    from .tuning import run_sweep

    out = a.out or str(Path("runs") / "tune" / Path(a.sweep).stem)
    r = run_sweep(a.sweep, out, data=a.data, resume=a.resume, overwrite=a.overwrite, address=a.address,
                  overrides=a.set, progress=not a.quiet)
    s, df = r["summary"], r["table"]
    cols = [c for c in df.columns if c not in ("model_dir",)]
    print("\n" + df[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"\nselected {s['best_trial']} by {s['metric']} ({s['mode']}) = {s['value']:.4f}: {s['best_config']}"
          + (f"  [acc {s['best_acc']:.4f}, reported only]" if "best_acc" in s else ""))
    print(f"{s['completed']} of {s['trials']} trials completed, {s['stopped_early']} stopped early by ASHA")
    print(s["best_model"])
    return 0


def cmd_report(a) -> int:
    from .report import is_sweep_dir, write_report, write_sweep_report

    if is_sweep_dir(a.run_dir):
        path = write_sweep_report(a.run_dir)
    else:
        path = write_report(a.run_dir, data=a.data, sample=a.sample, projection=a.projection, seed=a.seed)
    print(str(path))
    return 0


def cmd_profile(a) -> int:
    from .report.profile import write_profile

    print(str(write_profile(a.assign_dir, a.table, out=a.out, sample=a.sample, seed=a.seed,
                            exclude=_names(a.exclude))))
    return 0


def cmd_submit(a) -> int:
    from . import jobs

    job_id = jobs.submit(a.spec, a.address, a.out, data=a.data, sets=a.set, pip=a.pip or None, job_id=a.job_id)
    print(f"submitted {job_id} to {a.address}")
    if a.no_wait:
        print(job_id)
        return 0
    final = jobs.follow(a.address, job_id)
    print(f"job {job_id}: {final}")
    if final != "SUCCEEDED":
        tail = "\n".join(jobs.logs(a.address, job_id).splitlines()[-40:])
        info = jobs.job_message(a.address, job_id)
        print(f"distclust submit: error: job {job_id} ended {final}. {info}\nLast log lines:\n{tail}", file=sys.stderr)
    print(job_id)
    return 0 if final == "SUCCEEDED" else 1


def cmd_jobs(a) -> int:
    from . import jobs

    if a.action == "status":
        print(jobs.status(a.address, a.job_id))
    elif a.action == "logs":
        if a.follow:
            print(f"job {a.job_id}: {jobs.follow(a.address, a.job_id)}")
        else:
            print(jobs.logs(a.address, a.job_id), end="")
    elif a.action == "stop":
        print("stopped" if jobs.stop(a.address, a.job_id) else "already finished")
    return 0


def cmd_models(a) -> int:
    from .models import get_model_class, model_names

    for name in model_names():
        doc = (get_model_class(name).__doc__ or "").strip().splitlines()[0]
        print(f"{name:<18} {doc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="distclust", description="Distributed deep clustering on Ray.")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("ingest", help="convert .npz/.npy/.csv/Parquet into sharded Parquet + manifest")
    s.add_argument("src")
    s.add_argument("out")
    s.add_argument("--shards", type=int, default=8)
    s.add_argument("--overwrite", action="store_true")
    s.add_argument("--quiet", action="store_true")
    g = s.add_argument_group("mixed-type tables (any of these reads SRC as a table: numbers, text, "
                             "booleans, dates, missing values)")
    g.add_argument("--id-column", help="the table's own id column (kept under its name and type; unique, no nulls)")
    g.add_argument("--label-column", help="ground-truth column for evaluation (not a feature)")
    g.add_argument("--columns", help="comma-separated feature columns (default: all but id and label)")
    g.add_argument("--exclude", help="comma-separated columns to leave out")
    g.add_argument("--categorical", help="comma-separated numeric columns to treat as categories (codes)")
    g.add_argument("--max-levels", type=int, default=64, help="frequent levels one-hot encoded per category")
    g.add_argument("--hash-above", type=int, default=1000,
                   help="categorical columns with more distinct values are hashed")
    g.add_argument("--hash-buckets", type=int, default=32)
    g.add_argument("--numeric-transform", choices=["auto", "none", "log1p", "quantile"], default="auto",
                   help="before robust scaling (auto: log1p for skewed non-negative columns)")
    s.set_defaults(fn=cmd_ingest)

    s = sub.add_parser("train", help="train a job spec with Ray Train")
    s.add_argument("spec")
    s.add_argument("--data", help="dataset (ingested folder or any file ingest reads); overrides data.path")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec key, e.g. --set model.n_clusters=20")
    s.add_argument("--out", required=True, help="run directory; the model lands in OUT/model")
    s.add_argument("--resume", action="store_true", help="continue an interrupted run in OUT")
    s.add_argument("--overwrite", action="store_true", help="replace an existing run in OUT")
    s.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("assign", help="assign clusters to every row of a dataset")
    s.add_argument("model")
    s.add_argument("data")
    s.add_argument("out")
    s.add_argument("--overwrite", action="store_true")
    s.add_argument("--actors", type=int, default=None, help="assignment actors (default: free CPUs)")
    s.add_argument("--rows-per-unit", type=int, default=500_000, help="rows per output file / resume unit")
    s.add_argument("--threads-per-actor", type=int, default=1,
                   help="torch / FAISS threads (and CPUs reserved) per actor; more actors usually beat more threads")
    s.add_argument("--gpu", action="store_true", help="run the encoder and FAISS on GPUs")
    s.add_argument("--allow-shift", action="store_true",
                   help="assign even if the data's value range is far from the training data's")
    s.add_argument("--keep", help="comma-separated columns of a raw table to copy into the output")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(fn=cmd_assign)

    s = sub.add_parser("evaluate", help="ACC / NMI / ARI / silhouette of an assignment against labels")
    s.add_argument("assign_dir")
    s.add_argument("data")
    s.add_argument("--json")
    s.add_argument("--silhouette-sample", type=int, default=5000)
    s.set_defaults(fn=cmd_evaluate)

    s = sub.add_parser("tune", help="Ray Tune sweep of a job spec, selected by a label-free metric")
    s.add_argument("sweep")
    s.add_argument("--out", help="sweep directory (default runs/tune/NAME)")
    s.add_argument("--data", help="dataset; overrides the base job's data")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a base job key")
    s.add_argument("--resume", action="store_true", help="continue an interrupted sweep in --out")
    s.add_argument("--overwrite", action="store_true")
    s.add_argument("--address", help="Ray cluster address (default: local Ray)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(fn=cmd_tune)

    s = sub.add_parser("report", help="(re)render the HTML report of a training run or a tune sweep")
    s.add_argument("run_dir", help="a 'distclust train --out' directory, or a 'distclust tune' sweep directory")
    s.add_argument("--data", help="ingested dataset for the data sections (default: the one the run used)")
    s.add_argument("--sample", type=int, default=5000, help="rows sampled for sizes, confusion and examples")
    s.add_argument("--projection", choices=["pca", "tsne"], default="pca",
                   help="2-D projection of the latents (tsne: slower, separates clusters better)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=cmd_report)

    s = sub.add_parser("profile", help="segment profiles of an assignment: sizes, medians, top levels, lift")
    s.add_argument("assign_dir", help="the OUT folder of 'distclust assign'")
    s.add_argument("table", help="the raw table that was assigned (CSV, Parquet file or folder)")
    s.add_argument("--out", help="output folder (default ASSIGN_DIR/_profile)")
    s.add_argument("--sample", type=int, default=200_000, help="rows sampled (seeded) for column statistics")
    s.add_argument("--exclude", help="comma-separated columns to leave out (e.g. a ground-truth column)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=cmd_profile)

    default_address = os.environ.get("DISTCLUST_JOB_ADDRESS", "http://127.0.0.1:8265")
    s = sub.add_parser("submit", help="submit a train or tune spec to a Ray cluster (Job Submission API)")
    s.add_argument("spec")
    s.add_argument("--address", default=default_address, help="job server, e.g. http://HEAD:8265")
    s.add_argument("--out", required=True, help="run directory ON THE CLUSTER's shared storage")
    s.add_argument("--data", help="dataset path or URI as the cluster sees it")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    s.add_argument("--pip", action="append", default=[], help="pip requirement for the job's runtime env")
    s.add_argument("--job-id", help="submission id (default: generated)")
    s.add_argument("--no-wait", action="store_true", help="return after submitting instead of following logs")
    s.set_defaults(fn=cmd_submit)

    s = sub.add_parser("jobs", help="status, logs or stop of a submitted job")
    s.add_argument("action", choices=["status", "logs", "stop"])
    s.add_argument("job_id")
    s.add_argument("--address", default=default_address)
    s.add_argument("--follow", action="store_true", help="with logs: stream until the job ends")
    s.set_defaults(fn=cmd_jobs)

    s = sub.add_parser("models", help="list the registered models")
    s.set_defaults(fn=cmd_models)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except DistclustError as e:
        if args.debug:
            raise
        print(f"distclust {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # unwritable / unreadable paths: name the path, no traceback
        if args.debug:
            raise
        where = e.filename or "a file system path"
        print(f"distclust {args.command}: error: cannot use '{where}' ({e.strerror or e}). Where: {where}. "
              "Fix: choose a path you can read and write (check the folder exists and its permissions).",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"distclust {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # not a user error: still no traceback unless asked
        if args.debug:
            raise
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else ""
        print(f"distclust {args.command}: internal error: {type(e).__name__}: {msg[:500]}. "
              "Re-run with --debug for the full traceback.", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
