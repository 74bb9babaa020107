"""Issue 21 probe: would the DP mixture's vote, fitted with the cluster-scale covariance prior
(``DPMixture(cluster_scale=s, dof_prior=300)``, the prior that finds 9-10 components on VaDE's latent)
instead of scikit-learn's default, move the combined rule? The saved per-K curves of
``bench/results/choose_k/NAME.json`` are recombined with the new DP counts (``select_k.combine``), so
only the DP fit is re-run, on the same seeded 10,000-row sample.

    DISTCLUST_DATASETS=PATH python bench/choose_k_dp_prior.py mnist,fashion_mnist,mix5,mix20,mix50,overlap8,digits_pixels
"""
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent)); sys.path.insert(1, str(Path(__file__).resolve().parent.parent))
import numpy as np  # noqa: E402
from choose_k import ALL, load  # noqa: E402
from common import RESULTS  # noqa: E402
from distclust.select_k import combine, prepare  # noqa: E402
from distclust.models.dp_mixture import fit_dpgmm  # noqa: E402

models = {"mnist": "bench/results/reference/runs/ae-kmeans-s0/model",
          "fashion_mnist": "bench/results/reference/runs/ae-kmeans-fashion-s0/model"}
names = sys.argv[1].split(",") if len(sys.argv) > 1 else ALL + ["digits_pixels"]
out = {}
for name in names:
    Z, y, true_k, what, rng = load(name, models)
    saved = json.loads((RESULTS / "choose_k" / f"{name}.json").read_text())
    rows = saved["table"]
    ks = [r["k"] for r in rows]
    k_max = max(ks) + max(5, max(ks) // 4)
    Zs = prepare(Z, 10_000, 0)
    zs = (Zs - Zs.mean(0)) / np.maximum(Zs.std(0), 1e-12)
    res = {"true_k": true_k, "saved_choices": saved["choices"], "saved_chosen": saved["chosen"]}
    for s in (None, 0.1, 0.2, 0.3):
        t = time.time()
        n = int(fit_dpgmm(zs.astype(np.float64), k_max, seed=0, max_iter=200, init_sample=len(zs),
                          cluster_scale=s, dof_prior=None if s is None else 300.0).n_active)
        ch = dict(saved["choices"]); ch["dpmix"] = n
        chosen, why = combine(rows, ch)
        res[str(s)] = {"dp": n, "chosen": chosen, "s": round(time.time() - t, 1)}
        print(name, true_k, "scale", s, "dp", n, "chosen", chosen, f"{time.time()-t:.0f}s", flush=True)
    out[name] = res
dest = RESULTS / "choose_k_dp_prior.json"
old = json.loads(dest.read_text()) if dest.exists() else {}
dest.write_text(json.dumps({**old, **out}, indent=1))
