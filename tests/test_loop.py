"""The one training loop: Ray-free, the same under the in-process and the Ray Train contexts, and the
prepared GPU check runs end to end (on the CPU, without Ray or FAISS, as on the lent GPU machine)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, tiny_spec

import distclust
from distclust.spec import load_spec


def test_the_loop_imports_nothing_from_ray():
    code = ("import sys; import distclust.engine.loop, distclust.engine.inprocess, distclust.engine.context, "
            "distclust.data.shard_reader; bad = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')); "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


def test_inprocess_and_one_ray_worker_give_the_same_model(ray_cluster, blobs_dataset, tmp_path):
    from distclust.engine.inprocess import train_inprocess
    from distclust.engine.trainer import run_training

    raw = tiny_spec(pretrain_epochs=1)
    raw["scaling"].update(num_workers=1, cpus_per_worker=1)
    raw["data"]["materialize"] = "always"
    spec = load_spec(raw)
    ray_res = run_training(spec, tmp_path / "ray", data=str(blobs_dataset))
    torch.set_num_threads(1)   # the Ray worker's thread count: same float reductions
    local = train_inprocess(spec, data=blobs_dataset, out_dir=tmp_path / "local", quiet=True)
    a = torch.load(ray_res.model_dir / "weights.pt")
    b = torch.load(local.model_dir / "weights.pt")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=f"{k} differs")
    keys = lambda h: [sorted(k for k in r if k not in ("time_s", "samples_per_s", "peak_rss_mib", "train_time_s"))
                      for r in h]
    assert keys(ray_res.history) == keys(local.history)
    assert ray_res.history[0]["loss"] == pytest.approx(local.history[0]["loss"], rel=1e-4)


@pytest.mark.integration   # trains in-process: seconds, not the fast tier
def test_clusterer_without_ray_uses_the_same_loop(blobs_npz):
    d = np.load(blobs_npz)
    est = distclust.Clusterer("ae-kmeans", n_clusters=4, workers=0, latent_dim=4, hidden=[32], pretrain_epochs=3,
                              kmeans_nredo=2).fit(d["X"], d["y"])
    assert est.score(d["X"], d["y"])["acc"] > 0.95
    assert [h["stage"] for h in est.history_][-1] == "done"


def test_logged_values_are_moved_to_the_loop_device():
    from distclust.engine.loop import _as_logged

    dev = torch.device("cpu")
    assert _as_logged(0.5, dev).dtype == torch.float32
    assert _as_logged(torch.tensor(2.0, dtype=torch.float64), dev).dtype == torch.float32


def test_gpu_check_dry_run_without_ray_or_faiss(tmp_path):
    """As on the lent GPU machine (no Ray, no FAISS): every model trains one epoch, the report is written."""
    out = tmp_path / "gpu_check.json"
    code = ("import sys, runpy; sys.modules['ray'] = None; sys.modules['faiss'] = None; "
            f"sys.argv = ['gpu_check.py', '--cpu-dry-run', '--out', {str(out)!r}, '--models', "
            "'ae-kmeans,dec,concrete-gmvae,vade']; runpy.run_path('bench/gpu_check.py', run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads(out.read_text())
    assert rep["faiss"] is False and set(rep["models"]) == {"ae-kmeans", "dec", "concrete-gmvae", "vade"}
    assert all(m["ok"] for m in rep["models"].values()), rep["models"]
    assert rep["models"]["dec"]["acc"] > 0.5 and rep["throughput"]["ae-kmeans@256"] > 0


@pytest.mark.parametrize("kind", ["cosine", "step", "constant"])
def test_stage_lr_schedules(kind):
    """A stage's per-epoch lr: cosine from lr to lr/100 over its epochs, step decay with a floor, or constant."""
    from distclust.engine.loop import make_optimizer
    from distclust.models.base import Stage

    over = {"cosine": dict(lr_cosine=True), "step": dict(lr_decay_every=2, lr_decay=0.5, lr_floor=0.03),
            "constant": {}}[kind]
    st = Stage("s", 5, 0.1, **over)
    opt, sched = make_optimizer(st, [torch.nn.Parameter(torch.zeros(1))])
    lrs = []
    for _ in range(st.epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched:
            sched.step()
    expect = {"cosine": [0.1, 0.1 * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi / 4))), 0.1 * 0.505,
                         0.1 * (0.01 + 0.99 * 0.5 * (1 + np.cos(3 * np.pi / 4))), 0.001],
              "step": [0.1, 0.1, 0.05, 0.05, 0.03], "constant": [0.1] * 5}[kind]
    np.testing.assert_allclose(lrs, expect, rtol=1e-6)


def test_epoch_rows_fixes_the_steps_and_epochs_draw_different_rows():
    """train.epoch_rows: the same optimiser steps at any table size (capped at the whole data set), and
    each epoch a fresh draw, so a long table is still covered over the epochs."""
    from distclust.data.shard_reader import ShardReader
    from distclust.engine.config import steps_per_epoch
    from distclust.engine.context import WorkerContext

    assert steps_per_epoch(10_000_000, 2, 256, 20_000) == steps_per_epoch(100_000, 2, 256, 20_000) == 40
    assert steps_per_epoch(1_000, 2, 256, 20_000) == steps_per_epoch(1_000, 2, 256) == 4   # capped
    n = 5_000
    reader = ShardReader.from_tensors({"id": torch.arange(n), "features": torch.randn(n, 3)})
    ctx = WorkerContext(None, reader, 0, 1, torch.device("cpu"), 0, 100, steps_per_epoch(n, 1, 100, 1_000))
    seen = [torch.cat([b["id"] for b in ctx.epoch_batches(e)]) for e in range(3)]
    assert [len(s) for s in seen] == [1_000] * 3
    assert all(len(torch.unique(s)) == 1_000 for s in seen)       # no row twice within an epoch
    assert len(torch.unique(torch.cat(seen))) > 2_000              # fresh draws (≈ 2,440 expected; same rows: 1,000)


def test_resume_with_a_different_spec_is_refused(tmp_path):
    """--resume restores the checkpoint's optimiser (its lr too): a spec that trains something else must
    be refused by name, while what only watches or places the run may change."""
    from distclust.engine.trainer import run_identity
    from distclust.errors import SpecError

    spec = load_spec(tiny_spec("ae-kmeans")).to_dict()
    run_id = run_identity(tmp_path, resume=False, spec=spec)
    changed = json.loads(json.dumps(spec))
    changed["train"]["quiet"], changed["train"]["stall_timeout_s"] = True, 0
    assert run_identity(tmp_path, resume=True, spec=changed) == run_id
    changed["model"]["pretrain_lr"] = spec["model"]["pretrain_lr"] * 10
    with pytest.raises(SpecError, match=r"model\.pretrain_lr.*--overwrite"):
        run_identity(tmp_path, resume=True, spec=changed)


def test_early_stop_stages_leave_the_other_stages_alone(blobs_npz):
    """train.early_stop_stages: only the named stages stop early (a fast VaDE job must not cut its
    autoencoder's pretraining short); an unknown stage name is a clear error."""
    from distclust.engine.inprocess import train_inprocess
    from distclust.errors import DistclustError

    d = np.load(blobs_npz)
    raw = tiny_spec("dec", pretrain_epochs=5, cluster_epochs=6, tol=0.0)
    raw["train"].update(early_stop_patience=1, early_stop_min_delta=0.9, early_stop_stages=["cluster"])
    hist = train_inprocess(load_spec(raw), X=d["X"], quiet=True).history
    pre = [h for h in hist if h["stage"] == "pretrain"]
    clu = [h for h in hist if h["stage"] == "cluster"]
    assert len(pre) == 5 and not any(h.get("early_stopped") for h in pre)
    assert len(clu) == 2 and clu[-1].get("early_stopped") == 1
    raw["train"]["early_stop_stages"] = ["finetune"]
    with pytest.raises(DistclustError, match=r"early_stop_stages names \['finetune'\].*pretrain"):
        train_inprocess(load_spec(raw), X=d["X"], quiet=True)
