"""Issue 21 probe: would the DP mixture's vote, fitted with the cluster-scale covariance prior
(``DPMixture(cluster_scale=s, dof_prior=300)``, the prior that finds 9-10 components on VaDE's latent)
instead of scikit-learn's default, move the combined rule? The saved per-K curves of
``bench/results/choose_k/NAME.json`` are recombined with the new DP counts (``select_k.combine``), so
only the DP fit is re-run, on the same seeded sample (``select_k.prepare``, seed 0, the saved size).
It records and votes the raw component count, as the rule did before DEMP merging (docs/choosing-k.md).

    DISTCLUST_DATASETS=PATH python bench/choose_k_dp_prior.py mnist,fashion_mnist,mix5,mix20,mix50,overlap8,digits_pixels
"""
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # this checkout's distclust first
from choose_k import ALL, saved_curves  # noqa: E402
from common import RESULTS  # noqa: E402

from distclust.select_k import combine, dp_count, dp_k_max  # noqa: E402

MODELS = {"mnist": "bench/results/reference/runs/ae-kmeans-s0/model",
          "fashion_mnist": "bench/results/reference/runs/ae-kmeans-fashion-s0/model"}
SCALES = (None, 0.1, 0.2, 0.3)   # None: scikit-learn's default prior, as select_k uses
DOF_PRIOR = 300.0


def main() -> None:
    names = sys.argv[1].split(",") if len(sys.argv) > 1 else ALL + ["digits_pixels"]
    out = {}
    for name in names:
        saved, Zs, true_k = saved_curves(name, MODELS)
        rows = saved["table"]
        res = {"true_k": true_k, "saved_choices": saved["choices"], "saved_chosen": saved["chosen"]}
        for s in SCALES:
            t = time.time()
            n, _ = dp_count(Zs, dp_k_max([r["k"] for r in rows]), 0, cluster_scale=s,   # components, as voted then
                         dof_prior=None if s is None else DOF_PRIOR)
            chosen, _ = combine(rows, {**saved["choices"], "dpmix": n})
            res[str(s)] = {"dp": n, "chosen": chosen, "s": round(time.time() - t, 1)}
            print(name, true_k, "scale", s, "dp", n, "chosen", chosen, f"{time.time() - t:.0f}s", flush=True)
        out[name] = res
    dest = RESULTS / "choose_k_dp_prior.json"
    old = json.loads(dest.read_text()) if dest.exists() else {}
    dest.write_text(json.dumps({**old, **out}, indent=1))


if __name__ == "__main__":
    main()
