"""The report of one training run: ``RUN_DIR/report/index.html`` and the PNGs it embeds."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..errors import DistclustError
from . import html, plots

EXAMPLES_PER_CLUSTER = 12


def generated_samples(model, n: int, seed: int) -> np.ndarray | None:
    """(K, n, D) samples in raw feature space for generative models (``ClusterModel.generate``), else None."""
    import torch

    with torch.no_grad():
        g = model.generate(n, seed)
    return None if g is None else g.cpu().numpy()


def _summary(cfg: dict, history: list[dict], run_dir: Path) -> list[tuple[str, object]]:
    spec = cfg.get("spec") or {}
    data = cfg.get("data") or {}
    final = next((r for r in reversed(history) if r.get("stage") == "done"), history[-1] if history else {})
    rows: list[tuple[str, object]] = [
        ("run", str(run_dir)), ("model", cfg["model"]), ("clusters (K)", cfg["n_clusters"]),
        ("data", f"{data.get('source') or data.get('path', '?')} — {data.get('rows', '?')} rows × "
                 f"{data.get('dim', cfg.get('input_dim'))} features"),
        ("workers", (spec.get("scaling") or {}).get("num_workers", "?")),
        ("seed", (spec.get("train") or {}).get("seed", "?")),
        ("epochs", final.get("epochs_done", "?")),
    ]
    if "train_time_s" in final:
        rows.append(("wall time (training)", f"{final['train_time_s']:.1f} s"))
    for k in ("loss", "acc", "nmi", "ari", "active_clusters"):
        if isinstance(final.get(k), (int, float)):
            rows.append((f"final {k}", final[k]))
    return rows


def write_report(run_dir, data: str | None = None, sample: int = 5000, projection: str = "pca",
                 projection_max: int = 2000, seed: int = 0, tensorboard: bool = True) -> Path:
    """Render ``RUN_DIR/report/index.html`` (+ PNGs next to it) and the TensorBoard scalars; returns the page.

    ``data`` overrides the ingested dataset recorded in the artifact (``config.json`` → ``data.path``);
    the data sections use a seeded sample of ``sample`` rows, the projection at most ``projection_max``
    (``pca``, the default, takes milliseconds; ``tsne`` separates clusters better but took ~40 s for
    1,800 rows on a busy 2-core machine).
    """
    from ..artifact import load
    from ..data.sample import sample_dataset

    t0 = time.time()
    run_dir = Path(run_dir).resolve()
    model_dir = run_dir / "model"
    if not (model_dir / "config.json").is_file():
        raise DistclustError(f"'{run_dir}' holds no trained model (no model/config.json)", str(run_dir),
                             "pass the run directory given to 'distclust train --out'")
    if projection not in ("tsne", "pca"):
        raise DistclustError(f"projection '{projection}' is not known", "--projection", "use tsne or pca")
    cfg = json.loads((model_dir / "config.json").read_text())
    history = json.loads((model_dir / "history.json").read_text()) if (model_dir / "history.json").is_file() else []
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    k = int(cfg["n_clusters"])
    sections = [html.section("summary", "Summary", html.table(_summary(cfg, history, run_dir)))]

    # ---- training curves -------------------------------------------------------------
    body, global_steps = "", []
    for i, (stage, recs) in enumerate(plots.stages_of(history)):
        if len(recs) == 1 and recs[0].get("stage_epochs", 1) == 0:  # a global step (e.g. k-means): a table
            global_steps.append((stage, recs[0]))
            continue
        png = plots.curves(stage, recs, out / f"curves_{i:02d}_{_slug(stage)}.png")
        body += (f"<h3>{html.esc(stage)}</h3><p class=\"note\">{len(recs)} epochs; logged: "
                 f"{html.esc(', '.join(plots.numeric_keys(recs)))}</p>"
                 + html.image(png, f"per-epoch metrics of stage {stage}"))
    for stage, r in global_steps:
        body += f"<h3>{html.esc(stage)} (global step)</h3>" + html.table(
            [(kk, v) for kk, v in r.items() if kk in plots.numeric_keys([r])])
    sections.append(html.section("curves", "Training curves", body or "<p>no per-epoch history</p>",
                                 "every numeric key the model logged, per stage; schedules (annealed weights, "
                                 "temperatures) are dashed"))

    # ---- data sections -------------------------------------------------------------
    root = data or (cfg.get("data") or {}).get("path")
    try:
        if not root or not Path(root).exists():
            raise FileNotFoundError(root)
        X, y = sample_dataset(root, sample, seed)
    except (FileNotFoundError, OSError, DistclustError) as e:
        X = y = None
        sections.append(html.section("data", "Data sections skipped", "",
                                     f"the ingested dataset '{root}' could not be read ({type(e).__name__}: "
                                     f"{str(e).splitlines()[0] if str(e) else 'missing'}); "
                                     "regenerate with: distclust report RUN_DIR --data PATH"))
    if X is not None:
        model = load(model_dir)
        labels = model.predict(X)
        sections.append(html.section(
            "sizes", "Cluster sizes", html.image(plots.cluster_sizes(labels, k, out / "cluster_sizes.png"),
                                                 "cluster sizes"), f"seeded sample of {len(X)} rows (seed {seed})"))
        if y is not None:
            from ..metrics import cluster_scores

            sc = cluster_scores(labels, y)
            names = (cfg.get("data") or {}).get("label_names")
            png = plots.confusion(labels, y, k, out / "confusion.png", names)
            sections.append(html.section(
                "confusion", "Confusion matrix", html.table([(m, sc[m]) for m in ("acc", "nmi", "ari") if m in sc])
                + html.image(png, "confusion matrix"),
                "clusters × labels on the sample, rows in Hungarian-matched order"))
        n = min(len(X), projection_max)
        idx = np.sort(np.random.default_rng(seed).permutation(len(X))[:n])
        # a model may name its own projection (manifold: UMAP of its coordinates when they have > 2 dims)
        Y2, used = plots.project_2d(model.transform(X[idx]), getattr(model.model, "report_projection", projection),
                                    seed)
        png = plots.projection(Y2, labels[idx], k, used, out / "latent_projection.png")
        sections.append(html.section("latent", "Latent space", html.image(png, "latent projection"),
                                     f"{used} of the embeddings (distclust.load(model).transform) of {n} rows"))
        side = plots.image_side(X.shape[1])
        if side:
            per = [X[labels == c][:EXAMPLES_PER_CLUSTER] for c in range(k)]
            keep = [c for c in range(k) if len(per[c])]
            png = plots.image_grid([per[c] for c in keep], [f"cluster {c}" for c in keep], side,
                                   f"real examples per cluster ({side}×{side})", out / "examples.png",
                                   EXAMPLES_PER_CLUSTER)
            sections.append(html.section("examples", "Examples per cluster", html.image(png, "examples")))
            gen = generated_samples(model.model, EXAMPLES_PER_CLUSTER, seed)
            if gen is not None:
                png = plots.image_grid(list(gen), [f"component {c}" for c in range(len(gen))], side,
                                       "generated samples per mixture component", out / "generated.png",
                                       EXAMPLES_PER_CLUSTER)
                sections.append(html.section("generated", "Generated samples", html.image(png, "generated")))

    tb_note = ""
    if tensorboard:
        from .tracking import write_tensorboard

        tb = write_tensorboard(run_dir, history)
        tb_note = f"TensorBoard scalars: tensorboard --logdir {tb}"
    sub = f"distclust report, rendered in {time.time() - t0:.1f} s. {tb_note}"
    return html.write_page(out, html.page(f"distclust run: {cfg['model']} (K={k})", sub, sections))


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in s)[:40]
