"""Short in-process VaDE runs on MNIST-70k, ACC every epoch: what each difference from the reference
protocol (GuHongyang/VaDE-pytorch) does, before a 300-epoch run is spent on it.

    python bench/vade_probe.py --epochs 10 --set model.recon_logvar=0.0 model.lr=0.0002
    python bench/vade_probe.py --epochs 10 --pretrain-bce 50 --set model.lr=0.002

Default: the job jobs/mnist-vade.yaml on the reference autoencoder of AE + k-means seed 0
(``--ae``, pretraining skipped). ``--pretrain-bce N`` instead pretrains its own autoencoder as
VaDE-pytorch does (N Adam epochs at 1e-3, Glorot initialisation, Bernoulli/BCE decoder) and trains the
ELBO with BCE. One diagonal GMM fit (``gmm_n_init 1``) unless --set says otherwise. Appends a row to
bench/results/vade_probes.json.
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
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--ae", default=str(ROOT / "bench/results/reference/runs/ae-kmeans-s0/model"))
    ap.add_argument("--pretrain-bce", type=int, default=0, help="pretrain N epochs VaDE-pytorch style instead")
    ap.add_argument("--set", nargs="*", default=[])
    a = ap.parse_args()
    d = np.load(dataset("mnist.npz"))
    X, y = d["X"].reshape(len(d["X"]), -1).astype(np.float32), d["y"].astype(np.int64)
    over = [f"model.epochs={a.epochs}", "train.eval_every=1", "model.gmm_n_init=1"]
    if a.pretrain_bce:
        over += [f"model.pretrain_epochs={a.pretrain_bce}", "model.pretrain_optimizer=adam", "model.pretrain_lr=0.001",
                 "model.weight_init=glorot", "model.recon=bce"]
    else:
        over += [f"model.pretrained={a.ae}", "model.pretrain_epochs=0"]
    spec = load_spec(ROOT / "jobs" / "mnist-vade.yaml", over + a.set)
    t = time.time()
    hist = train_inprocess(spec, X=X, y=y, quiet=True).history
    curve = [{"stage": h["stage"], "epoch": h.get("epoch"), "acc": round(h["acc"], 4), "loss": round(h.get("loss", 0), 2)}
             for h in hist if "acc" in h and h.get("stage") != "done"]
    for c in curve:
        print(c, flush=True)
    row = {"command": "python bench/vade_probe.py " + " ".join(sys.argv[1:]), "wall_s": round(time.time() - t),
           "gmm_init_acc": curve[0]["acc"] if curve else None, "final_acc": curve[-1]["acc"] if curve else None,
           "curve": curve}
    path = RESULTS / "vade_probes.json"
    rows = json.loads(path.read_text()) if path.is_file() else []
    path.write_text(json.dumps(rows + [row], indent=1))


if __name__ == "__main__":
    main()
