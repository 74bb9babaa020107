"""Issue 21: how much does digits' chosen K depend on the autoencoder it is chosen in? The combined
rule (``select_k``) on the embeddings of autoencoders that differ only in their training seed:
tune/digits-k.yaml's (jobs/digits-ae-kmeans.yaml with hidden [256, 256], 30 epochs, 1 worker; the
benchmark table's digits row is seed 0) and the shipped job's own (500-500-2000, 60 epochs, 2 workers).
Each autoencoder is trained by ``distclust train`` (Ray Train) and cached in bench/_work/choose_k_repr.

    DISTCLUST_DATASETS=PATH python bench/choose_k_digits_seeds.py
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # this checkout's distclust first
from choose_k import DIGITS_SETS, label_check  # noqa: E402
from choose_k_data import ae_embedding  # noqa: E402
from common import RESULTS, ROOT, dataset  # noqa: E402

from distclust.select_k import parse_k_range, select_k  # noqa: E402

WORK = ROOT / "bench" / "_work" / "choose_k_repr"
VARIANTS = {"tune": DIGITS_SETS, "shipped": []}


def main() -> None:
    out = {}
    for variant, sets in VARIANTS.items():
        for seed in (0, 1, 2):
            name = f"{variant}-s{seed}"
            Z, y = ae_embedding(f"digits-{name}", dataset("digits.npz"), "digits-ae-kmeans.yaml", WORK,
                                [*sets, f"train.seed={seed}"])
            sel = select_k(Z, parse_k_range("2..20"), seed=0)
            labels = label_check(Z, y, sorted({10, sel.chosen}))
            out[name] = {"chosen": sel.chosen, "choices": sel.choices, "dp_components": sel.dp_components,
                         "kmeans_acc_at_10": round(labels["10"]["acc"], 4),
                         "excess_stability": {r["k"]: round(r["excess_stability"], 3) for r in sel.table}}
            print(name, "chosen", sel.chosen, sel.choices, "k-means ACC at 10", out[name]["kmeans_acc_at_10"], flush=True)
    (RESULTS / "choose_k_digits_seeds.json").write_text(json.dumps(
        {"command": "DISTCLUST_DATASETS=PATH python bench/choose_k_digits_seeds.py", "runs": out}, indent=1))


if __name__ == "__main__":
    main()
