"""Run report: one tiny real training run (CLI, real Ray), its HTML report, PNGs, TensorBoard, a real browser."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import run_cli, tiny_spec, screenshot

SECTIONS = ("summary", "curves", "sizes", "confusion", "latent", "examples", "generated")


def _valid_png(p: Path) -> None:
    from PIL import Image

    b = Path(p).read_bytes()
    assert b[:8] == b"\x89PNG\r\n\x1a\n", p
    with Image.open(p) as im:
        im.verify()
    with Image.open(p) as im:
        assert im.size[0] > 50 and im.size[1] > 50, (p, im.size)


@pytest.fixture(scope="module")
def run(ray_cluster, tmp_path_factory):
    """A tiny Concrete-GMVAE on digits (64 = 8×8 features): annealed temperature/KL weight, generated samples."""
    tmp = tmp_path_factory.mktemp("report")
    spec = tiny_spec()
    spec["name"] = "test-report"
    spec["data"] = {"path": "builtin:digits", "normalize": "global-minmax", "shards": 2}
    spec["model"] = {"name": "concrete-gmvae", "n_clusters": 10, "latent_dim": 4, "hidden": [32], "epochs": 3,
                     "kl_anneal_epochs": 2}
    (tmp / "job.yaml").write_text(yaml.safe_dump(spec))
    out = tmp / "run"
    r = run_cli("train", tmp / "job.yaml", "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r


def test_train_writes_report_and_tensorboard(run):
    out, r = run
    page = out / "report" / "index.html"
    assert f"report: {page}" in r.stdout and "warning" not in r.stderr
    assert r.stdout.strip().splitlines()[-1] == str(out / "model")  # the last line stays the model dir
    from distclust.report import read_scalars

    tb = read_scalars(out / "tensorboard")
    hist = json.loads((out / "model" / "history.json").read_text())
    assert [s for s, _ in tb["train/loss"]] == [h["epochs_done"] for h in hist if h["stage"] == "train"] == [1, 2, 3]
    assert np.allclose([v for _, v in tb["train/loss"]], [h["loss"] for h in hist if h["stage"] == "train"], rtol=1e-6)
    for tag in ("train/temperature", "train/kl_weight", "train/samples_per_s", "final/acc", "final/nmi"):
        assert tag in tb, sorted(tb)
    kl = [v for _, v in tb["train/kl_weight"]]
    assert kl[0] < kl[-1]  # the annealed weight really moves


def test_report_sections_and_pngs(run):
    from distclust.cli import main

    out, _ = run
    assert main(["report", str(out), "--projection", "pca"]) == 0
    page = out / "report" / "index.html"
    text = page.read_text()
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in text, sid
    for key in ("concrete-gmvae", "K=10", "final acc", "temperature", "kl_weight", "Hungarian"):
        assert key in text, key
    pngs = sorted((out / "report").glob("*.png"))
    names = {p.name for p in pngs}
    assert {"cluster_sizes.png", "confusion.png", "latent_projection.png", "examples.png", "generated.png"} <= names
    assert any(n.startswith("curves_") for n in names)
    for p in pngs:
        _valid_png(p)
    # every PNG is embedded, so the page stands alone
    assert len(re.findall(r'src="data:image/png;base64,', text)) == len(pngs)
    # regenerating replaces the TensorBoard events instead of doubling them
    from distclust.report import read_scalars

    assert len(read_scalars(out / "tensorboard")["train/loss"]) == 3


def test_report_without_data_and_bad_dir(run, tmp_path):
    from distclust.errors import DistclustError
    from distclust.report import write_report

    out, _ = run
    copy = tmp_path / "moved"
    shutil.copytree(out / "model", copy / "model")
    cfg = json.loads((copy / "model" / "config.json").read_text())
    cfg["data"]["path"] = str(tmp_path / "gone")
    (copy / "model" / "config.json").write_text(json.dumps(cfg))
    text = write_report(copy, tensorboard=False).read_text()
    assert "Data sections skipped" in text and '<section id="curves">' in text
    assert '<section id="confusion">' not in text
    text = write_report(copy, data=cfg_path(out), projection="pca", tensorboard=False).read_text()
    assert '<section id="confusion">' in text  # --data points the report at the dataset again
    with pytest.raises(DistclustError, match="no trained model"):
        write_report(tmp_path / "nothing")


def cfg_path(out: Path) -> str:
    return json.loads((out / "model" / "config.json").read_text())["data"]["path"]


def test_sweep_report(tmp_path):
    """A sweep directory in the layout ``distclust tune`` writes (results.parquet + summary.json)."""
    import pandas as pd

    from distclust.cli import main

    d = tmp_path / "sweep"
    d.mkdir()
    df = pd.DataFrame({"model.n_clusters": [6, 8, 10, 12], "trial": [f"t{i}" for i in range(4)],
                       "status": ["completed"] * 3 + ["stopped early"], "iterations": [4, 4, 4, 1],
                       "silhouette": [0.21, 0.30, 0.27, np.nan], "acc": [0.5, 0.7, 0.8, np.nan],
                       "model_dir": ["x"] * 4, "selected": [False, True, False, False]})
    df.to_parquet(d / "results.parquet", index=False)
    (d / "summary.json").write_text(json.dumps({
        "best_trial": "t1", "metric": "silhouette", "mode": "max", "value": 0.30,
        "best_config": {"model.n_clusters": 8}, "trials": 4, "completed": 3, "stopped_early": 1,
        "best_model": str(d / "best_model"), "best_acc": 0.7}))
    assert main(["report", str(d)]) == 0
    text = (d / "report" / "index.html").read_text()
    for sid in ("summary", "trials", "metric"):
        assert f'<section id="{sid}">' in text
    assert '<tr class="sel">' in text and text.count("<tr class=\"sel\">") == 1
    _valid_png(d / "report" / "silhouette_vs_k.png")


def test_browser_screenshot(run):
    """Headless Chromium opens the report, saves a screenshot, and logs no console errors."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
    out, _ = run
    page = out / "report" / "index.html"
    shot = out / "report_screenshot.png"
    screenshot(exe, page, shot)
    _valid_png(shot)
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1200, 2000)
        px = np.asarray(im.convert("L"))
    assert px.std() > 10  # something was drawn, not a blank page


@pytest.mark.parametrize("name", ["gmvae", "vade", "ae-kmeans"])
def test_generated_samples(name):
    """Generative models give (K, n, D) samples in raw feature space; the others give None."""
    import torch

    from distclust.models import Normalizer, get_model_class
    from distclust.report.run import generated_samples
    from distclust.validation import build

    cls = get_model_class(name)
    params = build(cls.Params, {"n_clusters": 3, "latent_dim": 2, "hidden": [8]}, "model")
    norm = Normalizer(16)
    norm.shift.fill_(5.0)
    torch.manual_seed(0)
    model = cls(16, params, norm).eval()
    g = generated_samples(model, 4, seed=1)
    if name == "ae-kmeans":
        assert g is None
        return
    assert g.shape == (3, 4, 16) and np.isfinite(g).all()
    assert g.min() >= 5.0 - 1e-5 if params.recon in ("bernoulli", "bce") else abs(g.mean() - 5.0) < 5
    assert np.array_equal(g, generated_samples(model, 4, seed=1))        # seeded
    assert not np.array_equal(g, generated_samples(model, 4, seed=2))
