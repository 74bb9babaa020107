"""DEC / IDEC benchmark: MNIST-70k, AE+k-means vs DEC vs IDEC from ONE pretrained autoencoder,
plus a 1-worker vs 2-worker comparison of DEC on digits.

    python bench/dec_mnist.py [--seeds 0] [--pretrained DIR] [--pretrain-epochs 30] [--skip-digits]

The autoencoder is pretrained once (or taken from DIR, e.g. the artifact that
bench/spine_mnist.py leaves in bench/_work/spine/run/model, copied first so a later spine run
cannot change it); every DEC / IDEC run loads it (model.pretrained, pretrain_epochs 0) so they
cost only their clustering epochs. AE+k-means figures are the k-means stage of each run (same
autoencoder, FAISS k-means with that run's seed). Writes bench/results/dec_mnist.json after
every run (partial results survive an interrupted benchmark); ``--data`` and ``--out-name`` run
it on another dataset, e.g. Fashion-MNIST.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, dataset, save  # noqa: E402

import distclust  # noqa: E402,F401
from distclust.data import Manifest, ingest, is_dataset  # noqa: E402
from distclust.engine.trainer import run_training  # noqa: E402
from distclust.spec import load_spec  # noqa: E402

KEYS = ("acc", "nmi", "ari")


def summary(res, wall: float) -> dict:
    h = res.history
    km = next((x for x in h if x.get("stage") == "kmeans"), {})
    cl = [x for x in h if x.get("stage") == "cluster"]
    pre = [x for x in h if x.get("stage") == "pretrain" and x.get("stage_epochs")]
    final = h[-1]
    return {"kmeans_init": {k: km.get(k) for k in KEYS}, "final": {k: final.get(k) for k in KEYS},
            "pretrain_epochs": len(pre), "cluster_epochs": len(cl),
            "stopped_by_tol": len(cl) < (cl[0]["stage_epochs"] if cl else 0),
            "delta_label_last": cl[-1].get("delta_label") if cl else None,
            "target_refreshes": cl[-1].get("target_refreshes") if cl else None,
            "cluster_time_s": sum(x.get("time_s", 0) for x in cl), "train_time_s": final.get("train_time_s"),
            "wall_s": wall,
            "trace": [{"epoch": x["epoch"], "delta_label": x.get("delta_label"), **{k: x[k] for k in KEYS if k in x}}
                      for x in cl]}


def train(job: str, out: Path, data: Path, overrides: list[str]) -> dict:
    spec = load_spec(ROOT / "jobs" / job, overrides + ["train.quiet=true"])
    t = time.time()
    res = run_training(spec, out, data=str(data), overwrite=True)
    s = summary(res, time.time() - t)
    s["overrides"] = overrides
    print(f"[bench] {job} {overrides}: {s['final']} after {s['cluster_epochs']} cluster epochs, "
          f"{s['wall_s']:.0f} s", flush=True)
    return s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pretrained", default=str(ROOT / "bench" / "_work" / "spine" / "run" / "model"))
    ap.add_argument("--pretrain-epochs", type=int, default=30, help="only when --pretrained does not exist")
    ap.add_argument("--models", nargs="+", default=["dec", "idec"])
    ap.add_argument("--skip-digits", action="store_true")
    ap.add_argument("--work", default=str(ROOT / "bench" / "_work" / "dec"))
    ap.add_argument("--out-name", default="dec_mnist", help="result file bench/results/NAME.json")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    t_all = time.time()
    result: dict = {"command": "python bench/dec_mnist.py " + " ".join(sys.argv[1:]), "machine": "2-core CPU, no GPU",
                    "workers": a.workers, "seeds": a.seeds, "runs": {}}

    # ---- data and the one pretrained autoencoder ---------------------------------------------
    data = work / "data"
    if not is_dataset(data):
        ingest(a.data or dataset("mnist.npz"), data, shards=8, overwrite=True, progress=False)
    result["rows"] = Manifest.load(data).rows
    ae = work / "pretrained"
    if not (ae / "config.json").is_file():
        src = Path(a.pretrained)
        if (src / "config.json").is_file():
            shutil.copytree(src, ae, dirs_exist_ok=True)
            result["pretrained_from"] = str(src)
        else:
            spec = load_spec(ROOT / "jobs" / "mnist-ae-kmeans.yaml",
                             [f"model.pretrain_epochs={a.pretrain_epochs}", "train.quiet=true",
                              f"scaling.num_workers={a.workers}"])
            res = run_training(spec, work / "ae", data=str(data), overwrite=True)
            shutil.copytree(res.model_dir, ae)
            result["pretrained_from"] = "trained here: jobs/mnist-ae-kmeans.yaml"
    fm = distclust.load(ae)
    pre = [h for h in fm.history if h.get("stage") == "pretrain"]
    done = fm.history[-1] if fm.history else {}
    result["pretrain"] = {"model": fm.config["model"], "epochs": len(pre),
                          "final_recon_mse": pre[-1].get("loss") if pre else None,
                          "time_s": sum(h.get("time_s", 0) for h in pre),
                          "ae_kmeans_seed0": {k: done.get(k) for k in KEYS}}
    save(a.out_name, result)

    # ---- DEC / IDEC from the same autoencoder -------------------------------------------------
    for seed in a.seeds:
        for model in a.models:
            result["runs"][f"{model}-seed{seed}"] = train(
                f"mnist-{model}.yaml", work / f"{model}-seed{seed}", data,
                [f"model.pretrained={ae}", "model.pretrain_epochs=0", f"train.seed={seed}",
                 f"scaling.num_workers={a.workers}"])
            save(a.out_name, result)

    # ---- 1 worker vs 2 workers (digits): same autoencoder, same global batch -------------------
    if not a.skip_digits:
        dig = work / "digits-ae"
        spec = load_spec(ROOT / "jobs" / "digits-ae-kmeans.yaml", ["train.quiet=true"])
        res = run_training(spec, dig, overwrite=True)
        comp = {"pretrain": "jobs/digits-ae-kmeans.yaml (2 workers, 60 epochs)",
                "ae_kmeans": {k: res.metrics.get(k) for k in KEYS}}
        for workers, batch in ((1, 128), (2, 64)):
            comp[f"{workers}-worker"] = train(
                "digits-dec.yaml", work / f"digits-dec-{workers}w", data=Path(res.run_dir / "data"),
                overrides=[f"model.pretrained={res.model_dir}", "model.pretrain_epochs=0",
                           f"scaling.num_workers={workers}", f"train.batch_size={batch}"])
        result["digits_workers"] = comp
        save(a.out_name, result)
    result["total_wall_s"] = time.time() - t_all
    save(a.out_name, result)


if __name__ == "__main__":
    main()
