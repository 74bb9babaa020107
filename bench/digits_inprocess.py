"""One digits job in one process (``train_inprocess``, one torch thread) with overrides: ACC, NMI, wall time.
For quick recipe searches on scikit-learn's digits before a change is checked through the CLI.

    python bench/digits_inprocess.py gmvae model.epochs=150 model.lr=0.003
    python bench/digits_inprocess.py --record KEY gmvae train.seed=1    # also append to digits_jobs.json[KEY]
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT  # noqa: E402


def record(key: str, entry: dict, command: str | None = None) -> None:
    """Append one run to ``bench/results/digits_jobs.json[key]["runs"]`` (created with its command)."""
    import json

    path = RESULTS / "digits_jobs.json"
    d = json.loads(path.read_text())
    command = command or ("python bench/digits_inprocess.py --record KEY MODEL OVERRIDES... (one process, "
                          "one torch thread)")
    d.setdefault(key, {"command": command, "runs": []})["runs"].append(entry)
    path.write_text(json.dumps(d, indent=1))


def main() -> None:
    import torch
    from sklearn.datasets import load_digits

    from distclust.engine.inprocess import train_inprocess
    from distclust.metrics import cluster_scores
    from distclust.spec import load_spec

    args = sys.argv[1:]
    key = None
    if args[:1] == ["--record"]:
        if len(args) < 2:
            raise SystemExit(__doc__)
        key, args = args[1], args[2:]
    if not args:
        raise SystemExit(__doc__)
    name, sets = args[0], args[1:]
    X, y = load_digits(return_X_y=True)
    X = X.astype("float32")
    spec = load_spec(ROOT / "jobs" / f"digits-{name}.yaml", sets + ["train.quiet=true"])
    t0 = time.time()
    res = train_inprocess(spec, X=X, y=y, quiet=True, threads=1)
    with torch.no_grad():
        pred = res.model.eval().predict(torch.from_numpy(X)).numpy()
    s = cluster_scores(pred, y)
    wall = time.time() - t0
    print(name, " ".join(sets), f"acc {s['acc']:.4f} nmi {s['nmi']:.4f} {wall:.0f}s", flush=True)
    if key:
        record(key, {"model": name, "overrides": " ".join(sets), "acc": round(float(s["acc"]), 4),
                     "nmi": round(float(s["nmi"]), 4), "wall_s": round(wall)})


if __name__ == "__main__":
    main()
