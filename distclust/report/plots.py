"""The report's figures (matplotlib, Agg backend); each function writes one PNG and returns its path."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..engine.records import BOOKKEEPING  # noqa: E402,F401  (one definition)
ANNEALED = ("kl_weight", "temperature", "tau", "beta", "weight", "lambda", "gamma")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def numeric_keys(records: list[dict]) -> list[str]:
    """Every numeric, finite-valued key of the records except bookkeeping, in first-seen order."""
    keys: list[str] = []
    for r in records:
        for k, v in r.items():
            if k not in BOOKKEEPING and k not in keys and isinstance(v, (int, float)) and not isinstance(v, bool):
                keys.append(k)
    return keys


def stages_of(history: list[dict]) -> list[tuple[str, list[dict]]]:
    """History split into (stage, records) in run order; the final 'done' record is left out."""
    out: list[tuple[str, list[dict]]] = []
    for r in history:
        s = r.get("stage", "?")
        if s == "done":
            continue
        if out and out[-1][0] == s:
            out[-1][1].append(r)
        else:
            out.append((s, [r]))
    return out


def curves(stage: str, records: list[dict], path: Path) -> Path:
    """Small multiples: one panel per numeric key against the epoch (annealed schedules drawn dashed)."""
    plt = _plt()
    keys = numeric_keys(records)
    cols = min(4, max(len(keys), 1))
    rows = max(1, math.ceil(len(keys) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.flat[len(keys):]:
        ax.axis("off")
    for ax, k in zip(axes.flat, keys):
        pts = [(r.get("epoch", i + 1), r[k]) for i, r in enumerate(records)
               if isinstance(r.get(k), (int, float)) and math.isfinite(r[k])]
        if not pts:
            ax.set_title(f"{k} (no finite values)", fontsize=9)
            continue
        x, y = zip(*pts)
        annealed = any(a in k.lower() for a in ANNEALED)
        ax.plot(x, y, "--" if annealed else "-", marker="o" if len(x) < 30 else None, markersize=3,
                color="tab:purple" if annealed else "tab:blue")
        ax.set_title(k + ("  (schedule)" if annealed else ""), fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("epoch", fontsize=7)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    fig.suptitle(f"stage '{stage}': per-epoch metrics", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def cluster_sizes(labels: np.ndarray, k: int, path: Path) -> Path:
    plt = _plt()
    counts = np.bincount(labels, minlength=k)
    fig, ax = plt.subplots(figsize=(min(12, 2 + 0.35 * k), 3.2))
    ax.bar(np.arange(len(counts)), counts, color="tab:blue")
    ax.axhline(len(labels) / max(k, 1), color="gray", ls="--", lw=1, label="uniform")
    ax.set_xlabel("cluster")
    ax.set_ylabel("rows in sample")
    ax.set_title(f"cluster sizes ({int((counts > 0).sum())} of {k} clusters used)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def hungarian_order(m: np.ndarray) -> np.ndarray:
    """Row (cluster) order that puts each label's matched cluster on the diagonal, unmatched clusters last."""
    from scipy.optimize import linear_sum_assignment

    r, c = linear_sum_assignment(-m)
    matched = [int(ri) for ri, _ in sorted(zip(r, c), key=lambda t: t[1])]
    rest = [i for i in np.argsort(-m.sum(1)) if i not in set(matched)]
    return np.array(matched + rest, dtype=np.int64)


def confusion(pred: np.ndarray, y: np.ndarray, k: int, path: Path, label_names=None) -> Path:
    from ..metrics import contingency

    plt = _plt()
    m = contingency(pred, y, n_pred=k, n_true=int(y.max()) + 1)
    order = hungarian_order(m)
    m = m[order]
    fig, ax = plt.subplots(figsize=(min(14, 2.5 + 0.45 * m.shape[1]), min(14, 1.8 + 0.4 * m.shape[0])))
    ax.imshow(m, cmap="Blues", aspect="auto")
    if m.size <= 900:
        hi = m.max() if m.size else 1
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                if m[i, j]:
                    ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if m[i, j] > hi / 2 else "black")
    names = [str(label_names[j]) if label_names and j < len(label_names) else str(j) for j in range(m.shape[1])]
    ax.set_xticks(range(m.shape[1]), names, fontsize=8, rotation=90 if max(map(len, names)) > 3 else 0)
    ax.set_yticks(range(m.shape[0]), [str(i) for i in order], fontsize=8)
    ax.set_xlabel("label")
    ax.set_ylabel("cluster (Hungarian-matched order)")
    ax.set_title("clusters × labels")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def project_2d(Z: np.ndarray, method: str, seed: int) -> tuple[np.ndarray, str]:
    """(2-D coordinates, method used): t-SNE or PCA (scikit-learn), or UMAP; latents of ≤ 2 dims are drawn as
    they are."""
    Z = np.asarray(Z, dtype=np.float64)
    if Z.shape[1] <= 2:
        return (np.pad(Z, ((0, 0), (0, 2 - Z.shape[1]))), "identity")
    if method == "umap" and len(Z) > 10:   # the manifold model's own method (umap-learn, seeded)
        import umap

        return umap.UMAP(n_components=2, n_neighbors=int(min(15, len(Z) - 1)), min_dist=0.1, random_state=seed,
                         n_jobs=1).fit_transform(Z), "UMAP"
    if method == "tsne" and len(Z) > 10:
        from sklearn.manifold import TSNE

        perp = float(min(30.0, (len(Z) - 1) / 3))
        return TSNE(2, perplexity=perp, init="pca", random_state=seed, n_jobs=1).fit_transform(Z), "t-SNE"
    from sklearn.decomposition import PCA

    return PCA(2, random_state=seed).fit_transform(Z), "PCA"


def projection(Y2: np.ndarray, labels: np.ndarray, k: int, method: str, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 6))
    cmap = plt.get_cmap("tab20" if k > 10 else "tab10")
    ax.scatter(Y2[:, 0], Y2[:, 1], c=[cmap(int(c) % cmap.N) for c in labels], s=6, alpha=0.75, linewidths=0)
    if k <= 20:
        for c in np.unique(labels):
            cx, cy = np.median(Y2[labels == c], axis=0)
            ax.text(cx, cy, str(c), fontsize=9, weight="bold", ha="center", va="center",
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", alpha=0.7, lw=0))
    ax.set_title(f"latent space ({method}, {len(Y2)} sampled rows), coloured by cluster")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def image_side(dim: int) -> int | None:
    """Side of a square image with ``dim`` pixels (None when dim is not a perfect square ≥ 16)."""
    s = int(round(math.sqrt(dim)))
    return s if s * s == dim and s >= 4 else None


def image_grid(imgs: list[np.ndarray], row_names: list[str], side: int, title: str, path: Path,
               per_row: int) -> Path:
    """One row per cluster/component, up to ``per_row`` square images each (blank where fewer)."""
    plt = _plt()
    flat = np.concatenate([a for a in imgs if len(a)]) if any(len(a) for a in imgs) else np.zeros((1, side * side))
    lo, hi = float(np.min(flat)), float(np.max(flat))
    cell = side + 1
    grid = np.full((len(imgs) * cell + 1, per_row * cell + 1), 0.25, np.float32)  # light-grey separators
    for i in range(len(imgs)):  # cells without an image stay blank (white)
        grid[1 + i * cell:1 + i * cell + side, 1 + len(imgs[i][:per_row]) * cell:] = np.nan
    for i, a in enumerate(imgs):
        for j, v in enumerate(a[:per_row]):
            grid[1 + i * cell:1 + i * cell + side, 1 + j * cell:1 + j * cell + side] = \
                (v.reshape(side, side) - lo) / max(hi - lo, 1e-12)
    h = min(16, 0.45 * len(imgs) + 1)
    fig, ax = plt.subplots(figsize=(min(12, 0.5 * per_row + 1.5), h))
    cmap = plt.get_cmap("gray_r").copy()
    cmap.set_bad("white")
    ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, interpolation="nearest", vmin=0, vmax=1)
    ax.set_yticks([1 + i * cell + side / 2 for i in range(len(imgs))], row_names, fontsize=8)
    ax.set_xticks([])
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def k_selection(table: list[dict], choices: dict, chosen: int, path: Path, title: str = "choosing K") -> Path:
    """The per-K curves of select_k (stability on data and reference, prediction strength, gap) with
    each criterion's K marked and the combined choice in red."""
    plt = _plt()
    ks = [r["k"] for r in table]
    col = lambda key: [r[key] for r in table]  # noqa: E731
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    ax = axes[0]
    ax.plot(ks, col("stability"), "o-", ms=3, label="ARI, data halves")
    ax.plot(ks, col("ref_stability"), "s--", ms=3, color="gray", label="ARI, uniform reference")
    if all("ref_fit" in r for r in table):
        ax.plot(ks, col("ref_fit"), ":", color="black", lw=1, label="reference trend (line in log K)")
    ax.plot(ks, col("excess_stability"), "^-", ms=3, color="tab:green", label="excess (data − reference)")
    ax.set_title(f"stability (K = {choices.get('stability')})", fontsize=10)
    ax = axes[1]
    ax.plot(ks, col("prediction_strength"), "o-", ms=3, color="tab:orange")
    ax.axhline(0.8, color="gray", ls=":", lw=1)
    ax.set_title(f"prediction strength (K = {choices.get('prediction_strength')})", fontsize=10)
    ax = axes[2]
    ax.errorbar(ks, col("gap"), yerr=col("gap_sd"), fmt="o-", ms=3, color="tab:purple", capsize=2)
    ax.set_title(f"gap statistic (K = {choices.get('gap')})", fontsize=10)
    for ax in axes:
        if "dpmix" in choices and ks[0] <= choices["dpmix"] <= ks[-1]:
            ax.axvline(choices["dpmix"], color="tab:brown", ls="--", lw=1, label=f"DP mixture, merged: {choices['dpmix']}")
        ax.axvline(chosen, color="red", lw=1.5, alpha=0.6, label=f"chosen: {chosen}")
        ax.set_xlabel("K")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()   # below the panels: inside, it hid the curves' peaks
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle(f"{title}: chosen K = {chosen}" + (f" (DP mixture: {choices['dpmix']} clusters)" if "dpmix" in choices
                                                    else ""), fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- segment profiles
def segment_shares(segments: list[str], shares: np.ndarray, path: Path) -> Path:
    """Horizontal bars: each segment's share of all rows, labelled with its percentage."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(segments) + 1.0))
    y = np.arange(len(segments))
    ax.barh(y, shares * 100, color="#4C72B0")
    for i, s in enumerate(shares):
        ax.text(s * 100, i, f" {s * 100:.1f}%", va="center", fontsize=8)
    ax.set_yticks(y, segments, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("share of rows (%)")
    ax.set_xlim(0, max(float(shares.max()) * 100 * 1.2, 1))
    ax.set_title("segment sizes")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def segment_heatmap(values: np.ndarray, segments: list[str], columns: list[str], title: str, path: Path,
                    diverging: bool = True, limit: float = 2.0, fmt: str = "{:+.1f}") -> Path:
    """Segments × columns, each cell coloured and annotated: standardised differences (diverging,
    clipped at ±limit) or scores in [0, limit] (sequential). Wide tables get a wider figure."""
    plt = _plt()
    k, c = values.shape
    fig, ax = plt.subplots(figsize=(min(3 + 0.55 * c, 30), 0.42 * k + 1.8))
    shown = np.ma.masked_invalid(values)
    if diverging:
        im = ax.imshow(np.clip(shown, -limit, limit), cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    else:
        im = ax.imshow(np.clip(shown, 0, limit), cmap="Purples", vmin=0, vmax=limit, aspect="auto")
    if k * c <= 1200:
        for i in range(k):
            for j in range(c):
                v = values[i, j]
                if np.isfinite(v):
                    dark = abs(v) > 0.6 * limit
                    ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=7,
                            color="white" if dark else "#222")
    ax.set_xticks(np.arange(c), columns, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(np.arange(k), segments, fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.025, pad=0.01)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def sample_grid_png(model, path, n_per_component: int = 8, seed: int = 0, image_shape=None,
                    scale: int = 1) -> None:
    """Save a PNG grid of a generative model's samples (``ClusterModel.generate``): one row per
    mixture component, ``n_per_component`` images each."""
    from PIL import Image

    imgs = model.generate(n_per_component, seed).cpu().numpy()       # (K, n, D)
    k, n, d = imgs.shape
    if image_shape is None:
        side = int(round(math.sqrt(d)))
        if side * side != d:
            raise ValueError(f"cannot lay out {d} features as a square image: pass image_shape")
        image_shape = (side, side)
    hh, ww = image_shape
    lo, hi = float(imgs.min()), float(imgs.max())
    imgs = (imgs - lo) / max(hi - lo, 1e-12)
    grid = np.ones((k * (hh + 1) + 1, n * (ww + 1) + 1), np.float32)
    for i in range(k):
        for j in range(n):
            grid[1 + i * (hh + 1):1 + i * (hh + 1) + hh, 1 + j * (ww + 1):1 + j * (ww + 1) + ww] = \
                imgs[i, j].reshape(hh, ww)
    im = Image.fromarray((grid * 255).astype(np.uint8), mode="L")
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    im.save(path)


def sweep_metric_plot(df, name: str, metric: str, mode: str, search_keys: list[str], path: Path) -> Path | None:
    """A sweep's selection metric against K (or the first searched key), labels' ACC beside when known."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xkey = "model.n_clusters" if "model.n_clusters" in df else search_keys[0]
    d = df[df["status"] == "completed"].dropna(subset=[metric]).sort_values(xkey)
    if d.empty:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(d[xkey], d[metric], "o-", label=metric)
    ax.set_xlabel(xkey)
    ax.set_ylabel(metric)
    sel = d[d["selected"]]
    ax.plot(sel[xkey], sel[metric], "r*", markersize=16, label="selected")
    if "acc" in d and d["acc"].notna().any():
        ax2 = ax.twinx()
        ax2.plot(d[xkey], d["acc"], "s--", color="gray", alpha=0.7, label="acc (labels, not used)")
        ax2.set_ylabel("acc (reported, not used for selection)")
    ax.set_title(f"sweep {name}: {metric} ({mode})")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
