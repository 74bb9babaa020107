"""The report of a ``distclust tune`` sweep: summary, trials table, and the selection metric against K."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import DistclustError
from . import html


def is_sweep_dir(path) -> bool:
    p = Path(path)
    return (p / "results.parquet").is_file() and (p / "summary.json").is_file()


def write_sweep_report(sweep_dir) -> Path:
    """Render ``SWEEP_DIR/report/index.html`` from ``results.parquet`` and ``summary.json``."""
    import pandas as pd

    from .plots import sweep_metric_plot

    d = Path(sweep_dir).resolve()
    if not is_sweep_dir(d):
        raise DistclustError(f"'{d}' is not a finished sweep (no results.parquet / summary.json)", str(d),
                             "pass the --out directory of a completed 'distclust tune' run")
    s = json.loads((d / "summary.json").read_text())
    df = pd.read_parquet(d / "results.parquet")
    out = d / "report"
    out.mkdir(parents=True, exist_ok=True)
    rows = [("sweep", str(d)), ("selection metric", f"{s['metric']} ({s['mode']})"),
            ("selected trial", s["best_trial"]), ("selected value", s["value"]),
            ("selected config", json.dumps(s["best_config"])),
            ("trials", f"{s['completed']} of {s['trials']} completed, {s['stopped_early']} stopped early"),
            ("best model", s["best_model"])]
    rows += [(k, s[k]) for k in ("best_acc", "best_nmi", "best_ari") if k in s]
    rows += [("warning", w) for w in s.get("warnings", [])]
    sections = [html.section("summary", "Summary", html.table(rows))]
    cols = [c for c in df.columns if c not in ("model_dir", "selected")]
    sel = list(df["selected"]) if "selected" in df else None
    sections.append(html.section("trials", "Trials", html.grid_table(cols, df[cols].values.tolist(), sel),
                                 "the selected trial is highlighted; label metrics are reported, "
                                 "not used for selection unless the sweep says so"))
    png = sweep_metric_plot(df, d.name, s["metric"], s["mode"], list(s["best_config"]), out / f"{s['metric']}_vs_k.png")
    if png:
        sections.append(html.section("metric", f"{s['metric']} against K", html.image(png, "selection metric")))
    if (d / "choose_k.json").is_file():  # metric: choose_k — every criterion's curve over K
        from .plots import k_selection

        c = json.loads((d / "choose_k.json").read_text())
        png = k_selection(c["table"], c["choices"], c["chosen"], out / "choose_k.png", f"sweep {d.name}")
        note = f"chosen K = {c['chosen']}: {c['reason']}. " + " ".join(f"Warning: {w}." for w in c["warnings"])
        sections.append(html.section("choose-k", "Choosing K: per-K curves", html.image(png, "K selection"), note))
    return html.write_page(out, html.page(f"distclust sweep: {d.name}", "distclust report (sweep)", sections))
