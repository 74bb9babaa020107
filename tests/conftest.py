"""One real local Ray per test session (small num_cpus), shared with CLI subprocesses via RAY_ADDRESS."""
from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("DISTCLUST_DATASETS", ROOT.parent / "shared" / "datasets"))

import distclust  # noqa: E402,F401  (sets Ray environment defaults first)


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    from distclust.engine.ray_setup import ensure_ray

    if not ray.is_initialized():
        ensure_ray(None, num_cpus=4)
    address = ray.get_runtime_context().gcs_address
    old = os.environ.get("RAY_ADDRESS")
    os.environ["RAY_ADDRESS"] = address  # CLI subprocesses join this cluster
    yield address
    if old is None:
        os.environ.pop("RAY_ADDRESS", None)
    ray.shutdown()


def make_blobs(n=600, k=4, d=16, seed=0, spread=0.6):
    """Well separated Gaussian blobs with labels (float32 X, int64 y)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 4, size=(k, d))
    y = rng.integers(0, k, n)
    X = centers[y] + rng.normal(0, spread, size=(n, d))
    return X.astype(np.float32), y.astype(np.int64)


def nonlinear_mixture(n=900, k=5, d=16, seed=0):
    """k Gaussian clusters in 2-D pushed through a fixed random nonlinear map into d dims."""
    rng = np.random.default_rng(seed)
    angles = np.linspace(0, 2 * np.pi, k, endpoint=False)
    centers = np.stack([np.cos(angles), np.sin(angles)], 1) * 3
    y = rng.integers(0, k, n)
    z = centers[y] + rng.normal(0, 0.35, (n, 2))
    W1, W2 = rng.normal(size=(2, 32)), rng.normal(size=(32, d)) / 4
    X = np.tanh(z @ W1) @ W2 + 0.01 * rng.normal(size=(n, d))
    return X.astype(np.float32), y


def _npz(tmp_path_factory, name: str, X, y):
    p = tmp_path_factory.mktemp(name) / f"{name}.npz"
    np.savez(p, X=X, y=y)
    return p


@pytest.fixture(scope="session")
def mixture_npz(tmp_path_factory):
    return _npz(tmp_path_factory, "mix", *nonlinear_mixture())


@pytest.fixture(scope="session")
def blobs_npz(tmp_path_factory):
    return _npz(tmp_path_factory, "blobs", *make_blobs())


@pytest.fixture(scope="session")
def blobs_dataset(blobs_npz, tmp_path_factory):
    from distclust.data import ingest

    out = tmp_path_factory.mktemp("ds") / "blobs"
    ingest(blobs_npz, out, shards=4, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_ae_run(ray_cluster, blobs_dataset, tmp_path_factory):
    """One Ray Train run of ``tiny_spec()`` on the blobs, shared by the modules that only read it (a
    Ray Train start costs ~15 s of CPU on 2 cores). Tests copy it before changing anything."""
    from distclust.engine.trainer import run_training
    from distclust.spec import load_spec

    return run_training(load_spec(tiny_spec()), tmp_path_factory.mktemp("tiny-ae") / "run", data=str(blobs_dataset))


def tiny_spec(model="ae-kmeans", **model_over):
    """A small, fast spec dict for tests (overridable per model key)."""
    m = {"name": model, "n_clusters": 4, "latent_dim": 4, "hidden": [32, 32], "pretrain_epochs": 3,
         "kmeans_nredo": 2}
    m.update(model_over)
    return {"name": f"test-{model}", "data": {"normalize": "standard"}, "model": m,
            "train": {"batch_size": 64, "seed": 0, "quiet": True},
            "scaling": {"num_workers": 2, "cpus_per_worker": 1}}


def run_cli(*args, timeout=600, env=None):
    import subprocess

    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "distclust.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=e, cwd=ROOT)


_SPAWNS = ("run_cli(", "subprocess", "ray.init(", "Popen(")


def _is_integration(item) -> bool:
    """Needs a Ray cluster, starts a process (the CLI, a Ray head) or is marked so (it trains a model or
    fits UMAP in-process: seconds, not milliseconds): not the fast tier."""
    if "integration" in item.keywords or "ray_cluster" in getattr(item, "fixturenames", ()):
        return True
    try:
        src = inspect.getsource(item.function)
    except (OSError, TypeError, AttributeError):
        return True
    return any(s in src for s in _SPAWNS)


def pytest_collection_modifyitems(config, items):
    """Tiers: ``fast`` (pure functions, losses, spec, metrics — no Ray, no subprocess; ``-m fast``),
    ``integration`` (a real Ray, the CLI) and ``slow`` (real data; ``-m slow``). The fast tier runs
    first, so a broken basic fails within a minute."""
    for it in items:
        if "slow" not in it.keywords:
            it.add_marker(pytest.mark.integration if _is_integration(it) else pytest.mark.fast)
    items.sort(key=lambda it: "fast" not in it.keywords)


def screenshot(exe: str, page: Path, shot: Path) -> None:
    """Render ``page`` in headless Chromium to ``shot``; fail on a non-zero exit or a console error."""
    import subprocess

    r = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--enable-logging=stderr", "--v=0", f"--screenshot={shot}", "--window-size=1200,2000",
                        page.as_uri()], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    bad = [ln for ln in r.stderr.splitlines() if "Uncaught" in ln or "CONSOLE" in ln and "ERROR" in ln]
    assert not bad, bad
