"""Plot ACC (and NMI) per epoch from gmvae_quality.py result files (``--engine inprocess`` runs
record them per epoch).

    python bench/gmvae_curves.py bench/results/gmvae_quality_60ep_gumbel_bs64.json \
        bench/results/gmvae_quality_60ep_concrete_bs64.json --out docs/img/gmvae-acc-per-epoch.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--goal", type=float, default=0.86)
    a = ap.parse_args()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for path in a.results:
        d = json.loads(Path(path).read_text())
        bs = next((o.split("=")[1] for o in d.get("overrides", []) if o.startswith("train.batch_size=")), "256")
        for variant, r in d["results"].items():
            pe = [p for p in r.get("per_epoch", []) if "acc" in p]
            if not pe:
                continue
            line, = ax.plot([p["epoch"] for p in pe], [p["acc"] for p in pe], label=f"{variant} ACC (batch {bs})")
            ax.plot([p["epoch"] for p in pe], [p["nmi"] for p in pe], ls=":", color=line.get_color(),
                    label=f"{variant} NMI")
    ax.axhline(a.goal, color="grey", ls="--", lw=1, label=f"goal ACC {a.goal}")
    ax.set_xlabel("epoch (60,000 MNIST training rows)")
    ax.set_ylabel("score on all 70,000 rows")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("GMVAE family on MNIST, K = 10, seed 0")
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
