"""The prepared GPU check: every model trains one epoch on MNIST on CUDA through the product's
in-process loop (``engine/inprocess.py``: the same loop as Ray Train workers, no Ray needed),
then assignment throughput (encoder + nearest prototype) and training samples/s at batch 256
and 1024 for the autoencoder and the Concrete GMVAE.

The lent GPU machine has CUDA PyTorch, pyarrow and scikit-learn but no Ray and no FAISS, so
this runs without Ray, and k-means / nearest-prototype search fall back to their exact torch
path when FAISS is absent (``faiss_ops``); the report says which ran.

    python bench/gpu_check.py --data /path/mnist.npz                 # on the GPU machine (< 8 min)
    python bench/gpu_check.py --cpu-dry-run --out /tmp/gpu_check.json # anywhere: tiny, on CPU (a test runs it)

Writes ``bench/results/gpu_check.json`` (or ``--out``): per model ok/error, epoch seconds,
samples/s, device; assignment rows/s; the torch/CUDA versions and whether FAISS was there.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from distclust.engine.inprocess import train_inprocess  # noqa: E402
from distclust.models import get_model_class, model_names  # noqa: E402
from distclust.spec import load_spec, read_yaml  # noqa: E402


def one_epoch_spec(model: str, batch: int, device_gpu: bool, small: bool) -> dict:
    """jobs/digits-<model>.yaml with every '*epochs' key of the model set to 1 (0 stays 0)."""
    raw = read_yaml(ROOT / "jobs" / f"digits-{model}.yaml", "job spec")
    cls = get_model_class(model)
    for f in cls.Params.__dataclass_fields__:
        if f.endswith("epochs") and isinstance(raw["model"].get(f, getattr(cls.Params, f, None)), (int, float)):
            if (raw["model"].get(f) or getattr(cls.Params, f, 0)) > 0:
                raw["model"][f] = 1
    if small:
        for f in ("hidden",):
            if f in raw["model"]:
                raw["model"][f] = [32]
    raw["data"]["path"] = None
    raw["train"].update(batch_size=batch, quiet=True, eval_every=1, early_stop_patience=0)
    raw["scaling"].update(num_workers=1, use_gpu=device_gpu)
    return raw


def load_data(args):
    if args.cpu_dry_run:
        rng = np.random.default_rng(0)
        y = rng.integers(0, 10, 600)
        X = (rng.random((600, 784)) * 0.2 + (y[:, None] == (np.arange(784) % 10)) * 0.8).astype(np.float32)
        return X, y
    d = np.load(args.data)
    X, y = d["X"] if "X" in d.files else d["x"], d["y"]
    X = X.reshape(len(X), -1).astype(np.float32)
    return X[: args.rows], y[: args.rows].astype(np.int64)


def assign_rate(model, X: np.ndarray, device, reps: int = 3) -> float:
    """Rows/s of encoder + nearest prototype (or argmax of predict_proba) on ``device``."""
    Xt = torch.from_numpy(X).to(device)
    model.eval()
    best = 0.0
    with torch.inference_mode():
        for _ in range(reps):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            for s in range(0, len(Xt), 65536):
                _ = model.predict(Xt[s:s + 65536])
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = max(best, len(Xt) / (time.perf_counter() - t))
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="MNIST .npz (X, y)")
    ap.add_argument("--rows", type=int, default=70000)
    ap.add_argument("--cpu-dry-run", action="store_true", help="tiny generated data on the CPU (start-up check)")
    ap.add_argument("--models", default="all", help="comma-separated model names (default: all registered)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu_check.json"))
    args = ap.parse_args(argv)
    if not args.cpu_dry_run and not args.data:
        ap.error("--data is required unless --cpu-dry-run")
    gpu = torch.cuda.is_available() and not args.cpu_dry_run
    device = torch.device("cuda" if gpu else "cpu")
    X, y = load_data(args)
    import distclust.faiss_ops as fo

    report = {"device": torch.cuda.get_device_name(0) if gpu else "cpu", "torch": torch.__version__,
              "cuda": torch.version.cuda, "faiss": fo.faiss is not None, "rows": len(X),
              "dry_run": args.cpu_dry_run, "models": {}, "throughput": {}}
    names = model_names() if args.models == "all" else args.models.split(",")
    for name in names:
        t0 = time.time()
        try:
            spec = load_spec(one_epoch_spec(name, 256, gpu, args.cpu_dry_run))
            res = train_inprocess(spec, X=X, y=y, device=device, quiet=True)
            epochs = [h for h in res.history if h.get("samples_per_s")]
            final = res.history[-1]
            rate = assign_rate(res.model, X, device)
            report["models"][name] = {"ok": True, "seconds": time.time() - t0,
                                      "train_samples_per_s": [round(h["samples_per_s"]) for h in epochs],
                                      "acc": final.get("acc"), "assign_rows_per_s": rate}
        except Exception as e:  # noqa: BLE001 - a device bug in one model must not hide the others
            report["models"][name] = {"ok": False, "error": f"{type(e).__name__}: {e}",
                                      "trace": traceback.format_exc()[-2000:]}
        print(name, json.dumps({k: v for k, v in report["models"][name].items() if k != "trace"}), flush=True)
    for name in ("ae-kmeans", "concrete-gmvae"):
        for batch in (256, 1024):
            try:
                spec = load_spec(one_epoch_spec(name, batch, gpu, args.cpu_dry_run))
                res = train_inprocess(spec, X=X, y=y, device=device, quiet=True)
                rates = [h["samples_per_s"] for h in res.history if h.get("samples_per_s")]
                report["throughput"][f"{name}@{batch}"] = max(rates) if rates else None
            except Exception as e:  # noqa: BLE001
                report["throughput"][f"{name}@{batch}"] = f"{type(e).__name__}: {e}"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    ok = all(m["ok"] for m in report["models"].values())
    print(f"{sum(m['ok'] for m in report['models'].values())}/{len(names)} models ran on {report['device']}; {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
