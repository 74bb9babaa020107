"""Issue 21 probe: how much does the combined rule depend on DEMP's cut-off? The DP vote is the DP
mixture's components merged by Hennig's DEMP while the largest pairwise misclassification probability
is at least the cut-off (0.025, Hennig's recommendation, is the rule's and was not tuned here). The
saved per-K curves of ``bench/results/choose_k/NAME.json`` are re-decided (``select_k.decide``)
with the DP vote at each cut-off; one DP fit per data set, on the same seeded sample.

    DISTCLUST_DATASETS=PATH python bench/choose_k_demp_cutoff.py
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # this checkout's distclust first
from choose_k import ALL, saved_curves  # noqa: E402
from choose_k_dp_prior import MODELS  # noqa: E402
from common import RESULTS  # noqa: E402

from distclust.select_k import decide, dp_fit, dp_k_max  # noqa: E402

CUTOFFS = (0.0125, 0.025, 0.05, 0.1)


def main() -> None:
    names = sys.argv[1].split(",") if len(sys.argv) > 1 else ALL
    out = {}
    for name in names:
        saved, Zs, true_k = saved_curves(name, MODELS)
        rows = saved["table"]
        fit, zs = dp_fit(Zs, dp_k_max([r["k"] for r in rows]), 0)
        res = {"true_k": true_k, "components": fit.n_active}
        for c in CUTOFFS:
            n = fit.merged_count(zs, c)
            sel = decide(rows, (fit.n_active, n))
            res[str(c)] = {"dp_clusters": n, "chosen": sel.chosen, "within_1": abs(sel.chosen - true_k) <= 1}
        out[name] = res
        print(name, true_k, res, flush=True)
    out["within_1"] = {str(c): sum(out[n][str(c)]["within_1"] for n in names) for c in CUTOFFS}
    print(out["within_1"])
    (RESULTS / "choose_k_demp_cutoff.json").write_text(json.dumps(
        {"command": "DISTCLUST_DATASETS=PATH python bench/choose_k_demp_cutoff.py", **out}, indent=1))


if __name__ == "__main__":
    main()
