"""Sweeps compare trials on an objective that the swept keys do not reweight."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ROOT

from distclust.errors import SpecError
from distclust.tuning import load_sweep


@pytest.mark.parametrize("sweep", sorted((ROOT / "tune").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_sweep_validates(sweep, tmp_path):
    sets = []
    import yaml

    if yaml.safe_load(sweep.read_text()).get("score_space") == "pretrained":   # needs an autoencoder run
        (tmp_path / "weights.pt").write_bytes(b"")
        sets = [f"model.pretrained={tmp_path}"]
    spec, _, _ = load_sweep(sweep, sets)
    assert spec.metric


def _write(tmp_path: Path, metric: str, asha: str, key: str = "model.kl_warmup_epochs") -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(f"name: s\nbase: {ROOT / 'jobs' / 'digits-concrete-gmvae.yaml'}\n"
                 f"search:\n  {key}: {{randint: [2, 5]}}\nmetric: {metric}\nscheduler: asha\nasha_metric: {asha}\n")
    return p


def test_a_schedule_sweep_on_the_weighted_loss_is_refused(tmp_path):
    with pytest.raises(SpecError, match=r"kl_warmup_epochs change how that loss is weighted") as e:
        load_sweep(_write(tmp_path, "loss", "loss"))
    assert "neg_elbo" in e.value.fix
    with pytest.raises(SpecError, match="asha_metric: loss"):
        load_sweep(_write(tmp_path, "neg_elbo", "loss"))
    load_sweep(_write(tmp_path, "neg_elbo", "neg_elbo"))                      # the unweighted bound: fine
    load_sweep(_write(tmp_path, "loss", "loss", key="model.n_clusters"))     # K does not reweight the loss
