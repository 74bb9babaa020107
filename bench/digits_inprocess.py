"""One digits job in one process (``train_inprocess``, one torch thread) with overrides: ACC, NMI, wall time.
For quick recipe searches on scikit-learn's digits before a change is checked through the CLI.

    python bench/digits_inprocess.py gmvae model.epochs=150 model.lr=0.003
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT  # noqa: E402


def main() -> None:
    import torch
    from sklearn.datasets import load_digits

    from distclust.engine.inprocess import train_inprocess
    from distclust.metrics import cluster_scores
    from distclust.spec import load_spec

    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    name, sets = sys.argv[1], sys.argv[2:]
    X, y = load_digits(return_X_y=True)
    X = X.astype("float32")
    spec = load_spec(ROOT / "jobs" / f"digits-{name}.yaml", sets + ["train.quiet=true"])
    t0 = time.time()
    res = train_inprocess(spec, X=X, y=y, quiet=True, threads=1)
    with torch.no_grad():
        pred = res.model.eval().predict(torch.from_numpy(X)).numpy()
    s = cluster_scores(pred, y)
    print(name, " ".join(sets), f"acc {s['acc']:.4f} nmi {s['nmi']:.4f} {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
