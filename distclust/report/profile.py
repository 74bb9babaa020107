"""``distclust profile ASSIGN_DIR TABLE``: what distinguishes each segment, for people who market to it.

Sizes and shares are exact (every assigned row). The per-column statistics come from a
seeded uniform sample of assigned rows (``sample``, default 200,000) joined with the raw
table by the id column, so memory is bounded for any table size:

- numeric (and date) columns: median per segment, and the difference of the segment's mean
  from the whole table's, in standard deviations of the whole;
- categorical columns (text, booleans): each segment's top levels with their share and
  lift (share in the segment / share in the whole);
- missing rates per column;
- separation: for each segment and column, the total-variation distance between the
  segment's distribution and the rest's (numbers binned by deciles of the whole; missing
  is a bin). 0 = same distribution, 1 = disjoint; one scale for every column type.

Writes ``index.html`` (figures embedded), ``profile.json`` and CSV tables into OUT.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import DataError

TOP_LEVELS = 3          # levels listed per categorical column and segment
MAX_LEVELS = 30         # levels kept per categorical column for separation (the rest pooled as 'other')
TOP_COLUMNS = 5         # most separating columns listed per segment


def _assign_files(assign_dir: Path) -> list[Path]:
    files = sorted(p for p in assign_dir.glob("*.parquet") if not p.name.startswith((".", "_")))
    if not assign_dir.is_dir() or not files:
        raise DataError(f"'{assign_dir}' holds no assignment files", str(assign_dir),
                        "pass the OUT folder of 'distclust assign'")
    names = pq.read_schema(files[0]).names
    if "cluster" not in names:
        raise DataError(f"'{files[0].name}' has no 'cluster' column", str(assign_dir),
                        "pass the OUT folder of 'distclust assign'")
    return files


def _sample_assignments(files: list[Path], id_col: str, n: int, seed: int):
    """Exact segment sizes, and a uniform sample of (id, cluster) rows (bottom-n of random keys)."""
    rng = np.random.default_rng(seed)
    sizes: dict[int, int] = {}
    keys = np.zeros(0)
    ids: pa.Array | None = None
    clusters = np.zeros(0, np.int64)
    for f in files:
        for b in pq.ParquetFile(f).iter_batches(batch_size=262_144, columns=[id_col, "cluster"]):
            c = b.column("cluster").to_numpy(zero_copy_only=False)
            u, k = np.unique(c, return_counts=True)
            for a, m in zip(u.tolist(), k.tolist()):
                sizes[a] = sizes.get(a, 0) + m
            r = rng.random(b.num_rows)
            if len(keys) >= n:
                keep = np.nonzero(r < keys.max())[0]
            else:
                keep = np.arange(b.num_rows)
            new_ids = b.column(id_col).take(pa.array(keep))
            keys = np.concatenate([keys, r[keep]])
            clusters = np.concatenate([clusters, c[keep]])
            ids = new_ids if ids is None else pa.concat_arrays([ids, new_ids])
            if len(keys) > n:
                idx = np.argpartition(keys, n - 1)[:n]
                keys, clusters, ids = keys[idx], clusters[idx], ids.take(pa.array(idx))
    return sizes, ids, clusters


def _sample_rows(table: str | Path, id_col: str, ids: pa.Array, where: str) -> pa.Table:
    """The raw table's rows whose id is in ``ids`` (a streaming filter; memory ~ the sample)."""
    from ..data.tables import check_columns, iter_batches, schema_of

    schema = schema_of(table)
    check_columns(schema, [id_col], where, "id column")
    parts = []
    value_set = ids.cast(schema.field(id_col).type) if ids.type != schema.field(id_col).type else ids
    for b in iter_batches(table, None, 262_144):
        mask = pc.is_in(b.column(id_col), value_set=value_set)
        if pc.any(mask).as_py():
            parts.append(pa.Table.from_batches([b]).filter(mask))
    if not parts:
        raise DataError("no id of the assignment occurs in the table", where,
                        f"pass the table that was assigned (ids are matched on '{id_col}')")
    return pa.concat_tables(parts, promote_options="permissive")


def _kinds(t: pa.Table, id_col: str, exclude: list[str]) -> tuple[list[str], list[str]]:
    from ..data.tables import ROW_NUMBER_NAMES, type_kind

    num, cat = [], []
    for f in t.schema:
        if f.name in (id_col, "cluster") or f.name in ROW_NUMBER_NAMES or f.name in exclude:
            continue
        k = type_kind(f.type)
        if k in ("numeric", "temporal"):
            num.append(f.name)
        elif k in ("string", "bool"):
            cat.append(f.name)
    return num, cat


def _tvd(a: np.ndarray, b: np.ndarray, bins: int) -> float:
    """Total-variation distance between the distributions of two code arrays over 0..bins-1."""
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    pa_ = np.bincount(a, minlength=bins) / len(a)
    pb = np.bincount(b, minlength=bins) / len(b)
    return float(0.5 * np.abs(pa_ - pb).sum())


def compute_profile(assign_dir: str | Path, table: str | Path, sample: int = 200_000, seed: int = 0,
                    exclude: list[str] | None = None) -> dict:
    """Every figure of the profile as a JSON-able dict (see the module docstring)."""
    import pandas as pd

    from ..data.features import numeric_values

    assign_dir = Path(assign_dir)
    files = _assign_files(assign_dir)
    id_col = pq.read_schema(files[0]).names[0]
    sizes, ids, clusters = _sample_assignments(files, id_col, sample, seed)
    raw = _sample_rows(table, id_col, ids, str(table))
    key = pa.table({id_col: ids, "cluster": pa.array(clusters)})
    if raw.schema.field(id_col).type != key.schema.field(id_col).type:
        key = key.set_column(0, id_col, key.column(id_col).cast(raw.schema.field(id_col).type))
    joined = raw.join(key, id_col, join_type="inner")
    seg = joined.column("cluster").to_numpy()
    num, cat = _kinds(joined, id_col, list(exclude or []))
    total = sum(sizes.values())
    segments = sorted(sizes)
    out: dict = {"rows": total, "sampled_rows": int(joined.num_rows), "id_column": id_col, "seed": seed,
                 "segments": [{"segment": int(s), "size": int(sizes[s]), "share": sizes[s] / total}
                              for s in segments],
                 "numeric": [], "categorical": [], "missing": [], "separation": []}
    masks = {s: seg == s for s in segments}
    for c in num:
        temporal = pa.types.is_date(joined.schema.field(c).type) or pa.types.is_timestamp(joined.schema.field(c).type)
        x = numeric_values(joined.column(c))
        miss = np.isnan(x)
        ok = x[~miss]
        mean, std = (float(ok.mean()), float(ok.std())) if len(ok) else (float("nan"), float("nan"))
        values = np.unique(ok)
        if len(values) <= 12:     # few values (0/1 flags, small counts): one bin per value, not deciles
            edges = values[1:]
        else:
            edges = np.unique(np.quantile(ok, np.linspace(0.1, 0.9, 9)))
        codes = np.where(miss, len(edges) + 1, np.searchsorted(edges, np.where(miss, 0, x), side="right"))
        for s in segments:
            m = masks[s]
            xs = x[m & ~miss]
            med = float(np.median(xs)) if len(xs) else float("nan")
            z = (float(xs.mean()) - mean) / std if len(xs) and std > 0 else float("nan")
            out["numeric"].append({"segment": int(s), "column": c, "median": med,
                                   "median_label": (str(np.datetime64(int(round(med)), "D")) if temporal
                                                    and np.isfinite(med) else None),
                                   "mean": float(xs.mean()) if len(xs) else float("nan"),
                                   "overall_median": float(np.median(ok)) if len(ok) else float("nan"),
                                   "std_diff": z})
            out["missing"].append({"segment": int(s), "column": c,
                                   "missing_rate": float(miss[m].mean()) if m.any() else float("nan")})
            out["separation"].append({"segment": int(s), "column": c,
                                      "score": _tvd(codes[m], codes[~m], len(edges) + 2)})
    for c in cat:
        v = pd.Series(pc.cast(joined.column(c), pa.string()).to_numpy(zero_copy_only=False), dtype=object)
        miss = v.isna().to_numpy()
        overall = v[~miss].value_counts(normalize=True)
        top = list(overall.index[:MAX_LEVELS])
        code_of = {lv: i for i, lv in enumerate(top)}
        codes = np.array([len(top) + 1 if mi else code_of.get(val, len(top)) for val, mi in zip(v, miss)], np.int64)
        for s in segments:
            m = masks[s]
            vs = v[m & ~miss]
            share = vs.value_counts(normalize=True)
            levels = [{"level": str(lv), "share": float(sh), "overall_share": float(overall.get(lv, 0.0)),
                       "lift": float(sh / overall[lv]) if overall.get(lv, 0) > 0 else float("nan")}
                      for lv, sh in share.iloc[:TOP_LEVELS].items()]
            out["categorical"].append({"segment": int(s), "column": c, "levels": levels})
            out["missing"].append({"segment": int(s), "column": c,
                                   "missing_rate": float(miss[m].mean()) if m.any() else float("nan")})
            out["separation"].append({"segment": int(s), "column": c,
                                      "score": _tvd(codes[m], codes[~m], len(top) + 2)})
    out["columns"] = {"numeric": num, "categorical": cat}
    for s in out["segments"]:
        scores = sorted((r for r in out["separation"] if r["segment"] == s["segment"] and np.isfinite(r["score"])),
                        key=lambda r: -r["score"])
        s["top_columns"] = [r["column"] for r in scores[:TOP_COLUMNS]]
    return out


def _matrix(rows: list[dict], segments: list[int], columns: list[str], key: str) -> np.ndarray:
    M = np.full((len(segments), len(columns)), np.nan)
    si = {s: i for i, s in enumerate(segments)}
    ci = {c: j for j, c in enumerate(columns)}
    for r in rows:
        if r["column"] in ci:
            M[si[r["segment"]], ci[r["column"]]] = r[key]
    return M


def write_profile(assign_dir: str | Path, table: str | Path, out: str | Path | None = None,
                  sample: int = 200_000, seed: int = 0, exclude: list[str] | None = None) -> Path:
    """Compute the profile and write index.html, profile.json and CSVs into ``out`` (default ASSIGN_DIR/_profile)."""
    import pandas as pd

    from . import html, plots

    prof = compute_profile(assign_dir, table, sample, seed, exclude)
    # "_" prefix: Parquet readers of the assignment folder skip it
    out = Path(out) if out else Path(assign_dir) / "_profile"
    out.mkdir(parents=True, exist_ok=True)
    figs = out / "figures"
    figs.mkdir(exist_ok=True)
    segs = [s["segment"] for s in prof["segments"]]
    names = [f"segment {s}" for s in segs]
    num, cat = prof["columns"]["numeric"], prof["columns"]["categorical"]
    every = num + cat
    # ---- machine-readable --------------------------------------------------------------------
    (out / "profile.json").write_text(json.dumps(prof, indent=1, default=float))
    pd.DataFrame([{k: v for k, v in s.items() if k != "top_columns"} | {"top_columns": ";".join(s["top_columns"])}
                  for s in prof["segments"]]).to_csv(out / "segments.csv", index=False)
    pd.DataFrame(prof["numeric"]).to_csv(out / "numeric.csv", index=False)
    pd.DataFrame([{"segment": r["segment"], "column": r["column"], **lv} for r in prof["categorical"]
                  for lv in r["levels"]]).to_csv(out / "categorical.csv", index=False)
    pd.DataFrame(prof["missing"]).to_csv(out / "missing.csv", index=False)
    pd.DataFrame(prof["separation"]).to_csv(out / "separation.csv", index=False)
    # ---- figures -----------------------------------------------------------------------------
    sections = []
    shares = np.array([s["share"] for s in prof["segments"]])
    rows = [[f"segment {s['segment']}", s["size"], f"{s['share'] * 100:.1f}%", ", ".join(s["top_columns"])]
            for s in prof["segments"]]
    sections.append(html.section("sizes", "Segments", html.image(plots.segment_shares(names, shares,
                                 figs / "sizes.png"), "segment sizes") +
                                 html.grid_table(["segment", "rows", "share", "most separating columns"], rows),
                                 f"{prof['rows']} assigned rows; column statistics from a seeded sample of "
                                 f"{prof['sampled_rows']} rows joined on '{prof['id_column']}'."))
    if every:
        sep = _matrix(prof["separation"], segs, every, "score")
        order = np.argsort(-np.nanmax(np.nan_to_num(sep, nan=0), axis=0))
        cols = [every[j] for j in order]
        sections.append(html.section("separation", "What separates each segment", html.image(
            plots.segment_heatmap(sep[:, order], names, cols, "distance of the segment from the rest "
                                  "(total variation, 0 = same, 1 = disjoint)", figs / "separation.png",
                                  diverging=False, limit=1.0, fmt="{:.2f}"), "separation"),
            "Columns sorted by how strongly they separate some segment."))
    if num:
        z = _matrix(prof["numeric"], segs, num, "std_diff")
        med = _matrix(prof["numeric"], segs, num, "median")
        labels = {(r["segment"], r["column"]): r["median_label"] for r in prof["numeric"]}
        table_rows = [[f"segment {s}"] + [labels[(s, c)] or html.fmt(float(med[i, j])) for j, c in enumerate(num)]
                      for i, s in enumerate(segs)]
        overall = {r["column"]: r["overall_median"] for r in prof["numeric"]}
        table_rows.append(["whole table"] + [html.fmt(float(overall[c])) for c in num])
        sections.append(html.section("numeric", "Numbers: difference from the whole (standard deviations)",
                                     html.image(plots.segment_heatmap(z, names, num, "segment mean − overall mean,"
                                                                      " in overall standard deviations",
                                                                      figs / "numeric.png"), "numeric") +
                                     "<h3>Medians</h3>" + html.grid_table(["segment"] + num, table_rows)))
    if cat:
        body = ""
        for c in cat:
            rs = [r for r in prof["categorical"] if r["column"] == c]
            trs = [[f"segment {r['segment']}"] + [f"{lv['level']}: {lv['share'] * 100:.0f}% (lift {lv['lift']:.2f})"
                                                  for lv in r["levels"]] for r in rs]
            width = max((len(t) for t in trs), default=1)
            trs = [t + [""] * (width - len(t)) for t in trs]
            body += f"<h3>{html.esc(c)}</h3>" + html.grid_table(["segment"] + [f"top {i + 1}" for i in
                                                                              range(width - 1)], trs)
        sections.append(html.section("categorical", "Categories: top levels and their lift", body,
                                     "lift = share of the level in the segment / share in the whole table; "
                                     "above 1: over-represented."))
    miss = _matrix(prof["missing"], segs, every, "missing_rate") if every else np.zeros((len(segs), 0))
    with_missing = [j for j in range(miss.shape[1]) if np.nanmax(np.nan_to_num(miss[:, j])) > 0]
    if with_missing:
        sections.append(html.section("missing", "Missing values", html.image(plots.segment_heatmap(
            miss[:, with_missing], names, [every[j] for j in with_missing], "share of rows with the value missing",
            figs / "missing.png", diverging=False, limit=1.0, fmt="{:.2f}"), "missing rates"),
            "Columns with at least one missing value in the sample."))
    page = html.page(f"Segment profile: {Path(str(table)).name}",
                     f"{len(segs)} segments of {prof['rows']} rows (assignment: {Path(assign_dir).resolve()})",
                     sections)
    return html.write_page(out, page)
