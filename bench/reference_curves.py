"""Quality against epochs for every reference-protocol run (issue 17, step 4): ACC along each run, on
an axis of epochs over the data *in total* — the autoencoder's pretraining included — so a long
protocol and its shortened recipe sit on one curve.

    python bench/reference_curves.py            # docs/img/reference_curves.png + the table it prints

Reads ``bench/results/reference/*.json`` (written by ``bench/reference.py``): each seed's ``curve``
(ACC after k-means and every ``eval_every`` epochs of the clustering stage) and its final ACC. A
run that reused an autoencoder (``pretrained_from``) starts where that autoencoder's run ended; a
run that pretrained in-job starts at its ``model.pretrain_epochs``.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT  # noqa: E402

FOLDER = RESULTS / "reference"
IMG = ROOT / "docs" / "img" / "reference_curves.png"


def pretrain_offset(row: dict, res: dict) -> int:
    """Epochs of autoencoder pretraining before this run's curve starts."""
    if row.get("pretrained_from"):
        m = re.fullmatch(r"(.+)-s(\d+)", row["pretrained_from"])
        if m and (FOLDER / f"{m[1]}.json").is_file():
            seeds = json.loads((FOLDER / f"{m[1]}.json").read_text())["seeds"]
            hit = [s["epochs"] for s in seeds if s["seed"] == int(m[2])]
            if hit:
                return int(hit[0])
    m = re.search(r"model\.pretrain_epochs=(\d+)", res.get("protocol", ""))
    if m:
        return int(m[1])
    job = ROOT / res.get("protocol", "").split(" ")[0]
    if job.is_file() and not row.get("pretrained_from"):
        import yaml

        return int((yaml.safe_load(job.read_text()).get("model") or {}).get("pretrain_epochs", 0) or 0)
    return 0


def series() -> dict[str, dict]:
    """name -> {dataset, seeds: [{seed, points: [(epoch, acc)], final: (epochs, acc)}]}"""
    out = {}
    for path in sorted(FOLDER.glob("*.json")):
        res = json.loads(path.read_text())
        runs = []
        for row in res["seeds"]:
            off = pretrain_offset(row, res)
            pts = [(off + int(c["epoch"]), float(c["acc"])) for c in row.get("curve", [])]
            final = (int(row["epochs"]), float(row["acc"]))
            runs.append({"seed": row["seed"], "points": sorted(set(pts)), "final": final})
        out[path.stem] = {"dataset": res.get("dataset", "mnist.npz"), "seeds": runs}
    return out


def plot(data: dict[str, dict], path: Path = IMG) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = ["mnist.npz", "fashion_mnist.npz"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=False)
    colours, markers = plt.get_cmap("tab20"), "osD^v<>ph*Xd"
    for ax, ds in zip(axes, sets):
        names = [n for n, d in data.items() if d["dataset"] == ds]
        for i, name in enumerate(names):
            c, mk = colours(i % 20), markers[i % len(markers)]
            for j, run in enumerate(data[name]["seeds"]):
                pts = run["points"] + ([run["final"]] if run["final"] not in run["points"] else [])
                pts = sorted(pts)
                xs, ys = zip(*pts)
                ax.plot(xs, ys, "-", color=c, lw=1.2, alpha=0.9)
                ax.plot(*run["final"], mk, color=c, ms=6, label=name if j == 0 else None)
        ax.set_xlabel("epochs over the data in total (pretraining included)")
        ax.set_ylabel("ACC (all rows; GMVAE family: the 10k test split)")
        ax.set_title(ds.replace(".npz", ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("Reference protocols: quality against epochs (one line per seed; markers: final ACC)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def table(data: dict[str, dict]) -> str:
    rows = ["| run | data | seed | epochs → ACC along the run | final (epochs: ACC) |", "| --- | --- | --- | --- | --- |"]
    for name, d in data.items():
        for run in d["seeds"]:
            along = ", ".join(f"{e}: {a:.3f}" for e, a in run["points"]) or "—"
            rows.append(f"| {name} | {d['dataset'].replace('.npz', '')} | {run['seed']} | {along} | "
                        f"{run['final'][0]}: {run['final'][1]:.3f} |")
    return "\n".join(rows)


def main() -> None:
    data = series()
    print(table(data))
    print(plot(data))


if __name__ == "__main__":
    main()
