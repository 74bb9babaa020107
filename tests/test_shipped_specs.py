"""Every job and sweep spec shipped in jobs/ and tune/ validates (keys, types, search keys)."""
from __future__ import annotations

import pytest

from conftest import ROOT

from distclust.spec import load_spec
from distclust.tuning import load_sweep
from distclust.models import model_names

JOBS = sorted((ROOT / "jobs").glob("*.yaml"))
SWEEPS = sorted((ROOT / "tune").glob("*.yaml"))


@pytest.mark.parametrize("path", JOBS, ids=[p.stem for p in JOBS])
def test_job_spec_is_valid(path):
    spec = load_spec(path)
    assert spec.model_name in model_names()


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_sweep_spec_is_valid(path, tmp_path):
    import yaml

    from distclust.errors import SpecError

    overrides = []
    if yaml.safe_load(path.read_text()).get("score_space") == "pretrained":
        # such a sweep needs the autoencoder it scores in: without it, a clear error naming the fix
        with pytest.raises(SpecError, match="--set model.pretrained="):
            load_sweep(path)
        (tmp_path / "weights.pt").touch()   # stands for RUN_DIR/model of the autoencoder run
        overrides = [f"model.pretrained={tmp_path}", "model.pretrain_epochs=0"]
    sweep, base, _ = load_sweep(path, overrides)
    assert sweep.search and base["model"]["name"] in model_names()


def test_every_model_ships_a_digits_and_an_mnist_job():
    names = {p.stem for p in JOBS}
    for m in model_names():
        assert f"digits-{m}" in names and f"mnist-{m}" in names, m
