"""The ``distclust`` command: thin — parse, call, print.

Errors a user can fix are printed as one paragraph (what, where, how to fix)
with exit code 2; a traceback only with ``--debug``.
"""
from __future__ import annotations

import argparse
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
    if res.already_finished:
        print(f"the run in {res.run_dir} had already finished: nothing to resume")
        print(str(res.model_dir))
        return 0
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
                   progress=not a.quiet, allow_shift=a.allow_shift, stall_timeout_s=a.stall_timeout,
                   keep=_names(a.keep))
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


def cmd_dpgmm(a) -> int:
    import json
    import tempfile

    from .dpgmm_posthoc import fit_dpgmm_artifact, label_report, merged_clusters

    with tempfile.TemporaryDirectory(prefix="distclust-dpgmm-") as tmp:
        res, z, y = fit_dpgmm_artifact(a.model, a.data, tmp, k_max=a.k_max, covariance_type=a.covariance,
                                       threshold=a.threshold, seed=a.seed, max_iter=a.max_iter,
                                       cluster_scale=a.cluster_scale, dof_prior=a.dof_prior)
        out = {**res.summary(), "clusters_merged": merged_clusters(res, z, seed=a.seed)}
        if y is not None:
            out["labels"] = label_report(res, z, y)
        del z
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    rows = [("components kept", str(out["n_active"])),
            ("clusters (components merged, DEMP)", str(out["clusters_merged"])), ("iterations", str(out["n_iter"])),
            ("converged", str(out["converged"]))]
    rows += [(f"  component {c['k']}", f"weight {c['weight']:.3f}  rows {c['size']}") for c in out["components"]]
    rows += [(k, _fmt(v)) for k, v in out.get("labels", {}).items()]
    print(_table(rows))
    return 0


def cmd_tune(a) -> int:
    from .tuning import run_sweep

    out = a.out or str(Path("runs") / "tune" / Path(a.sweep).stem)
    r = run_sweep(a.sweep, out, data=a.data, resume=a.resume, overwrite=a.overwrite, address=a.address,
                  overrides=a.set, progress=not a.quiet, base_job=a.base)
    s, df = r["summary"], r["table"]
    cols = [c for c in df.columns if c not in ("model_dir",)]
    print("\n" + df[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"\nselected {s['best_trial']} by {s['metric']} ({s['mode']}) = {s['value']:.4f}: {s['best_config']}"
          + (f"  [acc {s['best_acc']:.4f}, reported only]" if "best_acc" in s else ""))
    if "choose_k" in s:
        c = s["choose_k"]
        print(f"chosen K = {c['chosen']}: {c['reason']}; per criterion: "
              + ", ".join(f"{k} {v}" for k, v in c["choices"].items()))
    print(f"{s['completed']} of {s['trials']} trials completed, {s['stopped_early']} stopped early by ASHA")
    for w in s.get("warnings", []):
        print(f"distclust tune: warning: {w}", file=sys.stderr)
    print(s["best_model"])
    return 0


def cmd_choose_k(a) -> int:
    from .choose_k import run_choose_k

    out = a.out or str(Path("runs") / "choose-k" / Path(a.spec).stem)
    sel = run_choose_k(a.spec, a.data, a.k, out, space=a.space, model=a.model, sample=a.sample,
                       replicates=a.replicates, seed=a.seed, sets=a.set, overwrite=a.overwrite, progress=not a.quiet,
                       restarts=a.restarts)
    cols = ("k", "stability", "ref_stability", "excess_stability", "prediction_strength", "gap", "gap_sd")
    print("\n" + "  ".join(f"{c:>10}" for c in cols))
    for r in sel.table:
        print("  ".join(f"{r[c]:>10}" if c == "k" else f"{r[c]:>10.4f}" for c in cols))
    print(f"\nper criterion: {', '.join(f'{c} {v}' for c, v in sel.choices.items())}")
    print(f"chosen K = {sel.chosen}: {sel.reason} ({sel.rows} rows, {sel.seconds:.1f} s)")
    for w in sel.warnings:
        print(f"distclust choose-k: warning: {w}", file=sys.stderr)
    print(str(Path(out).resolve() / "choose_k.json"))
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
    from . import submit as jobs

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
    from . import submit as jobs

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


def _sub(sub, name: str, help: str, description: str, examples: str):
    """A subcommand whose --help says what it does, every argument, and examples."""
    return sub.add_parser(name, help=help, description=description, epilog="examples:\n" + examples,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def _flags(s, **helps: str) -> None:
    """The options several subcommands share, each with its own help: set, overwrite, quiet, resume
    (flags or repeated KEY=VALUE) and seed (an int, default 0)."""
    for name, help in helps.items():
        if name == "set":
            s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=help)
        elif name == "seed":
            s.add_argument("--seed", type=int, default=0, help=help)
        else:
            s.add_argument(f"--{name}", action="store_true", help=help)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="distclust", description="Distributed deep clustering on Ray: ingest data, "
                                "train a model with Ray Train, assign millions of rows, evaluate, sweep, submit.",
                                epilog="run 'distclust COMMAND --help' for a command's arguments and examples")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = _sub(sub, "ingest", "convert .npz/.npy/.csv/Parquet into sharded Parquet + manifest",
             "Convert a data file into sharded Parquet (id, features, label?) plus a manifest with feature "
             "statistics, in bounded memory.",
             "  distclust ingest /data/mnist.npz data/mnist --shards 8\n"
             "  distclust ingest builtin:digits data/digits\n"
             "  distclust ingest customers.parquet data/customers --id-column customer_id --label-column segment")
    s.add_argument("src", help="source: .npz (X, y), .npy, .csv, a Parquet file or folder, or builtin:digits; a table with --id-column")
    s.add_argument("out", help="output folder for the sharded dataset")
    s.add_argument("--shards", type=int, default=8, help="number of Parquet shards (≥ the number of workers)")
    _flags(s, overwrite="replace OUT if it exists", quiet="no progress bar")
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
    g.add_argument("--hash-buckets", type=int, default=32, help="hash buckets of a hashed categorical column")
    g.add_argument("--numeric-transform", choices=["auto", "none", "log1p", "quantile"], default="auto",
                   help="before robust scaling (auto: log1p for skewed non-negative columns)")
    s.set_defaults(fn=cmd_ingest)

    s = _sub(sub, "train", "train a job spec with Ray Train",
             "Train the model of a job spec with Ray Train (DDP over the data's shards). The model lands in "
             "OUT/model; each run has its own identity (OUT/run.json) and only --resume reads its checkpoints.",
             "  distclust train jobs/digits-ae-kmeans.yaml --out runs/digits\n"
             "  distclust train jobs/mnist-dec.yaml --data data/mnist --out runs/mnist-dec --set model.n_clusters=12\n"
             "  distclust train jobs/mnist-dec.yaml --data data/mnist --out runs/mnist-dec --resume")
    s.add_argument("spec", help="job spec YAML (see jobs/)")
    s.add_argument("--data", help="dataset (ingested folder or any file ingest reads); overrides data.path")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec key, e.g. --set model.n_clusters=20 (repeatable)")
    s.add_argument("--out", required=True, help="run directory; the model lands in OUT/model")
    s.add_argument("--resume", action="store_true",
                   help="continue the run in OUT from its own last checkpoint (a finished run is left as it is)")
    _flags(s, overwrite="replace an existing run in OUT", quiet="no per-epoch lines")
    s.set_defaults(fn=cmd_train)

    s = _sub(sub, "assign", "assign clusters to every row of a dataset",
             "Stream every row of DATA through the model and FAISS; write Parquet (id, cluster, distance) to OUT, "
             "one row per input id, in bounded memory. Re-running the same command resumes.",
             "  distclust assign runs/mnist-dec/model data/mnist out/mnist-dec\n"
             "  distclust assign runs/digits/model /lake/events/ out/events --actors 8")
    s.add_argument("model", help="model directory (RUN_DIR/model, or the run directory)")
    s.add_argument("data", help="ingested dataset, a Parquet folder with id/features columns (any layout, "
                                "Hive-partitioned included), or any file ingest reads")
    s.add_argument("out", help="output folder (keeps the input's folder layout)")
    _flags(s, overwrite="replace OUT if it holds another assignment")
    s.add_argument("--actors", type=int, default=None, help="assignment actors (default: one per free CPU)")
    s.add_argument("--rows-per-unit", type=int, default=500_000, help="rows per output file / resume unit")
    s.add_argument("--threads-per-actor", type=int, default=1,
                   help="torch / FAISS threads (and CPUs reserved) per actor; more actors usually beat more threads")
    s.add_argument("--gpu", action="store_true", help="run the encoder and FAISS on GPUs")
    s.add_argument("--allow-shift", action="store_true",
                   help="assign even if the data's value range is far from the training data's")
    s.add_argument("--stall-timeout", type=float, default=900.0,
                   help="fail when no part finishes for this many seconds (0 = wait forever)")
    s.add_argument("--keep", help="comma-separated columns of a raw table to copy into the output")
    _flags(s, quiet="no progress bar")
    s.set_defaults(fn=cmd_assign)

    s = _sub(sub, "evaluate", "ACC / NMI / ARI / silhouette of an assignment against labels",
             "Join an assignment with the dataset's labels on id (streaming, bounded memory) and print ACC "
             "(Hungarian), NMI, ARI and a sampled silhouette.",
             "  distclust evaluate out/mnist-dec data/mnist --json out/mnist-dec.json")
    s.add_argument("assign_dir", help="the OUT folder of 'distclust assign'")
    s.add_argument("data", help="the ingested dataset that was assigned (with labels)")
    s.add_argument("--json", help="also write the scores to this JSON file")
    s.add_argument("--silhouette-sample", type=int, default=5000, help="rows sampled for the silhouette")
    s.set_defaults(fn=cmd_evaluate)

    s = _sub(sub, "tune", "Ray Tune sweep of a job spec, selected by a label-free metric",
             "Run a Ray Tune sweep (tune/*.yaml) over a base job spec; each trial is a Ray Train run; the best "
             "trial is chosen without labels.",
             "  distclust tune tune/digits-k.yaml\n"
             "  distclust tune tune/digits-k.yaml --data data/mnist --out runs/tune/mnist-k --set model.pretrain_epochs=20")
    s.add_argument("sweep", help="sweep spec YAML (see tune/)")
    s.add_argument("--out", help="sweep directory (default runs/tune/NAME)")
    s.add_argument("--data", help="dataset; overrides the base job's data")
    s.add_argument("--base", help="job spec to sweep instead of the sweep's base (e.g. with tune/select-k.yaml)")
    _flags(s, set="override a base job key", resume="continue an interrupted sweep in --out",
           overwrite="replace an existing sweep in --out")
    s.add_argument("--address", help="Ray cluster address (default: local Ray)")
    _flags(s, quiet="no progress lines")
    s.set_defaults(fn=cmd_tune)

    s = _sub(sub, "choose-k", "estimate the number of clusters without labels (stability, gap, DP)",
             "Estimate K without labels: train the spec's model once (or take --model), then score every K of the "
             "range on one shared embedding by clustering stability, prediction strength, the gap statistic and a "
             "DP mixture's components merged into clusters (Hennig's DEMP), and combine them (docs/choosing-k.md).",
             "  distclust choose-k jobs/digits-ae-kmeans.yaml --k 5..30\n"
             "  distclust choose-k jobs/mnist-ae-kmeans.yaml --data data/mnist --k 5..30 --model runs/mnist-ae/model")
    s.add_argument("spec", help="job spec whose model gives the representation (trained once)")
    s.add_argument("--data", help="dataset; overrides the spec's data.path")
    s.add_argument("--k", required=True, help="K values to search: LO..HI, LO..HI:STEP or a list 4,6,8")
    s.add_argument("--out", help="output directory (default runs/choose-k/NAME)")
    s.add_argument("--space", default="embedding", help="embedding (the spec's model, trained once) or features")
    s.add_argument("--model", help="use this trained artifact's embedding instead of training the spec")
    s.add_argument("--sample", type=int, default=10_000, help="rows (seeded sample) the criteria use")
    s.add_argument("--replicates", type=int, default=10, help="half-splits per K and reference data sets")
    s.add_argument("--restarts", type=int, default=10, help="k-means restarts (best inertia) per half-split fit")
    _flags(s, seed="seed of the sample, splits and references", set="override a job spec key",
           overwrite="replace an existing output folder", quiet="no progress lines")
    s.set_defaults(fn=cmd_choose_k)

    s = _sub(sub, "report", "(re)render the HTML report of a training run or a tune sweep",
             "Write RUN_DIR/report/index.html: curves, cluster sizes, confusion matrix, latent projection, examples.",
             "  distclust report runs/digits\n  distclust report runs/tune/digits-k")
    s.add_argument("run_dir", help="a 'distclust train --out' directory, or a 'distclust tune' sweep directory")
    s.add_argument("--data", help="ingested dataset for the data sections (default: the one the run used)")
    s.add_argument("--sample", type=int, default=5000, help="rows sampled for sizes, confusion and examples")
    s.add_argument("--projection", choices=["pca", "tsne"], default="pca",
                   help="2-D projection of the latents (tsne: slower, separates clusters better)")
    _flags(s, seed="seed of the sample and the projection")
    s.set_defaults(fn=cmd_report)

    s = _sub(sub, "profile", "segment profiles of an assignment: sizes, medians, top levels, lift",
             "Profile each segment of an assignment of a raw table: size and share, numeric medians and their "
             "standardised difference from the whole, top categorical levels with lift, missing rates, and the "
             "columns that separate each segment most (HTML with plots, CSV and JSON).",
             "  distclust profile out/customers data/customers.parquet --exclude segment")
    s.add_argument("assign_dir", help="the OUT folder of 'distclust assign'")
    s.add_argument("table", help="the raw table that was assigned (CSV, Parquet file or folder)")
    s.add_argument("--out", help="output folder (default ASSIGN_DIR/_profile)")
    s.add_argument("--sample", type=int, default=200_000, help="rows sampled (seeded) for column statistics")
    s.add_argument("--exclude", help="comma-separated columns to leave out (e.g. a ground-truth column)")
    _flags(s, seed="seed of the row sample")
    s.set_defaults(fn=cmd_profile)

    default_address = os.environ.get("DISTCLUST_JOB_ADDRESS", "http://127.0.0.1:8265")
    s = _sub(sub, "submit", "submit a train or tune spec to a Ray cluster (Job Submission API)",
             "Upload the project and run 'distclust train' (jobs/*.yaml) or 'distclust tune' (tune/*.yaml) on a "
             "Ray cluster. The job is checked against the cluster's resources before it is submitted; then its "
             "logs are followed until it ends (unless --no-wait).",
             "  distclust submit jobs/digits-ae-kmeans.yaml --address http://HEAD:8265 --out /shared/runs/digits\n"
             "  distclust submit tune/digits-k.yaml --out /shared/runs/tune-k --no-wait")
    s.add_argument("spec", help="job spec (jobs/*.yaml) or sweep spec (tune/*.yaml) inside the project folder")
    s.add_argument("--address", default=default_address,
                   help="job server, e.g. http://HEAD:8265 (default: $DISTCLUST_JOB_ADDRESS or http://127.0.0.1:8265)")
    s.add_argument("--out", required=True, help="run directory ON THE CLUSTER's shared storage")
    s.add_argument("--data", help="dataset path or URI as the cluster sees it")
    _flags(s, set="override a spec key")
    s.add_argument("--pip", action="append", default=[], help="pip requirement for the job's runtime env")
    s.add_argument("--job-id", help="submission id (default: generated)")
    s.add_argument("--no-wait", action="store_true", help="return after submitting instead of following logs")
    s.set_defaults(fn=cmd_submit)

    s = _sub(sub, "jobs", "status, logs or stop of a submitted job",
             "Follow a job submitted with 'distclust submit'.",
             "  distclust jobs status distclust-train-digits-1a2b3c\n"
             "  distclust jobs logs distclust-train-digits-1a2b3c --follow")
    s.add_argument("action", choices=["status", "logs", "stop"], help="what to do with the job")
    s.add_argument("job_id", help="the id printed by 'distclust submit'")
    s.add_argument("--address", default=default_address, help="job server, e.g. http://HEAD:8265")
    s.add_argument("--follow", action="store_true", help="with logs: stream until the job ends")
    s.set_defaults(fn=cmd_jobs)

    s = _sub(sub, "dpgmm", "how many clusters a trained model's embedding holds (DP mixture)",
             "Fit a truncated Dirichlet-process Gaussian mixture (variational, scikit-learn's priors) to the "
             "embeddings of a trained model, streamed in batches, and print the components that keep weight and "
             "the clusters they form when merged by Hennig's DEMP (docs/choosing-k.md); "
             "with labels in the data also ACC / NMI / ARI / completeness of that clustering.",
             "  distclust dpgmm runs/mnist-ae/model data/mnist --k-max 30\n"
             "  distclust dpgmm runs/mnist-ae data/mnist --cluster-scale 0.3 --json dp.json")
    s.add_argument("model", help="a model directory (RUN_DIR/model) or its run directory")
    s.add_argument("data", help="the data to embed (an ingested folder or any file ingest reads)")
    s.add_argument("--k-max", type=int, default=30, help="truncation: the most components (default 30)")
    s.add_argument("--covariance", choices=("diag", "full"), default="diag")
    s.add_argument("--threshold", type=float, default=0.01, help="weight above which a component is kept")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--max-iter", type=int, default=300)
    s.add_argument("--cluster-scale", type=float, default=None,
                   help="prior within-cluster variance as a fraction of the data variance (default: sklearn's prior)")
    s.add_argument("--dof-prior", type=float, default=None, help="strength of that prior in pseudo-rows")
    s.add_argument("--json", help="also write the result to this JSON file")
    s.set_defaults(fn=cmd_dpgmm)

    s = _sub(sub, "models", "list the registered models", "List every registered model with one line about it.",
             "  distclust models")
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
