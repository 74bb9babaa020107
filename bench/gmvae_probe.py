"""Short in-process runs of a GMVAE reference job on the 60k MNIST training rows, ACC every epoch: what
one difference from the reference code does, before a 100-epoch run is spent on it.

    python bench/gmvae_probe.py --epochs 5 --set model.prior_scale=0.164
    python bench/gmvae_probe.py --job mnist-concrete-gmvae --epochs 5

One torch thread (``--threads``). Appends a row to bench/results/gmvae_probes.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, dataset  # noqa: E402

from distclust.engine.inprocess import train_inprocess  # noqa: E402
from distclust.spec import load_spec  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--job", default="mnist-gmvae-gumbel")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", nargs="*", default=[])
    a = ap.parse_args()
    d = np.load(dataset("mnist.npz"))
    X, y = d["X"][:60000].reshape(60000, -1).astype(np.float32), d["y"][:60000].astype(np.int64)
    spec = load_spec(ROOT / "jobs" / f"{a.job}.yaml", [f"model.epochs={a.epochs}", "train.eval_every=1", *a.set])
    t = time.time()
    hist = train_inprocess(spec, X=X, y=y, quiet=True, threads=a.threads).history
    accs = [round(h["acc"], 3) for h in hist if "acc" in h and h.get("stage") != "done"]
    print(a.set, accs, flush=True)
    row = {"command": "python bench/gmvae_probe.py " + " ".join(sys.argv[1:]), "job": f"jobs/{a.job}.yaml",
           "acc_per_epoch": accs, "wall_s": round(time.time() - t)}
    path = RESULTS / "gmvae_probes.json"
    rows = json.loads(path.read_text()) if path.is_file() else []
    path.write_text(json.dumps(rows + [row], indent=1))


if __name__ == "__main__":
    main()
