"""Ray Tune sweeps: real trials (Ray Train inside Tune), ASHA, label-free choice of K, resume."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT, nonlinear_mixture, run_cli

import distclust


def write_sweep(tmp_path, search, **extra):
    job = {"name": "mix", "data": {"normalize": "standard", "shards": 2},
           "model": {"name": "ae-kmeans", "n_clusters": 5, "latent_dim": 2, "hidden": [32],
                     "pretrain_epochs": 6, "kmeans_nredo": 3},
           "train": {"batch_size": 64, "seed": 0, "quiet": True},
           "scaling": {"num_workers": 1, "cpus_per_worker": 1}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    sweep = {"name": "s", "base": "job.yaml", "search": search, "metric": "silhouette", **extra}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    return tmp_path / "sweep.yaml"


@pytest.mark.slow   # a quality guard of the K choice: five trials (CI runs -m 'not slow')
def test_k_sweep_picks_the_true_k_without_labels(ray_cluster, mixture_npz, tmp_path):
    from distclust.tuning import run_sweep

    path = write_sweep(tmp_path, {"model.n_clusters": {"grid": [3, 5, 8]}}, scheduler="none")
    r = run_sweep(path, tmp_path / "out", data=str(mixture_npz), progress=False)
    s, df = r["summary"], r["table"]
    assert s["completed"] == 3 and s["best_config"] == {"model.n_clusters": 5}, df.to_string()
    assert s["best_acc"] > 0.9  # reported beside, from the labels
    assert (tmp_path / "out" / "results.parquet").is_file() and (tmp_path / "out" / "results.csv").is_file()
    png = tmp_path / "out" / "silhouette_vs_k.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = distclust.load(tmp_path / "out" / "best_model")
    assert best.n_clusters_ == 5
    assert pd.read_parquet(tmp_path / "out" / "results.parquet")["selected"].sum() == 1


def test_asha_stops_poor_trials_and_an_interrupted_sweep_resumes(ray_cluster, mixture_npz, tmp_path):
    path = write_sweep(tmp_path, {"model.pretrain_lr": {"grid": [3e-3, 1e-3, 1e-7, 1e-8]}},
                       scheduler="asha", asha_grace_period=1, asha_reduction_factor=2)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "distclust.cli", "tune", str(path), "--out", str(out), "--data", str(mixture_npz),
            "--quiet"]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                         cwd=ROOT)
    deadline = time.time() + 400
    while time.time() < deadline and p.poll() is None:
        if len(list((out / "trials").glob("*/model/config.json"))) >= 1:
            break
        time.sleep(0.2)
    assert p.poll() is None, "the sweep ended before it could be interrupted:\n" + p.stdout.read()[-3000:]
    p.send_signal(signal.SIGINT)  # Ctrl-C, as a user interrupts a sweep
    try:
        p.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    first = {d.name: (d / "model" / "history.json").read_text() for d in (out / "trials").glob("*")
             if (d / "model" / "history.json").is_file()}
    r = run_cli("tune", path, "--out", out, "--data", mixture_npz, "--resume", "--quiet", timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    df = pd.read_csv(out / "results.csv")
    assert len(df) == 4, df.to_string()
    assert (df["status"] == "stopped early").sum() >= 1, df.to_string()  # ASHA on the training loss
    assert df.loc[df["selected"], "model.pretrain_lr"].iloc[0] >= 1e-3
    for name, hist in first.items():  # trials trained before the kill were not trained again
        assert (out / "trials" / name / "model" / "history.json").read_text() == hist


def test_sweep_spec_errors(tmp_path):
    from distclust.errors import SpecError
    from distclust.tuning import load_sweep

    path = write_sweep(tmp_path, {"model.n_cluster": {"grid": [3, 4]}})
    with pytest.raises(SpecError, match="Did you mean 'n_clusters'"):
        load_sweep(path)
    path = write_sweep(tmp_path, {"model.n_clusters": {"grid": [3, 4]}}, metric="acc")
    with pytest.raises(SpecError, match="labels_for_selection"):
        load_sweep(path)
    path = write_sweep(tmp_path, {"model.n_clusters": {"grid": [3, 4]}}, score_space="pretrain")
    with pytest.raises(SpecError, match="Did you mean 'pretrained'"):
        load_sweep(path)
    path = write_sweep(tmp_path, {"model.n_clusters": {"grid": [3, 4]}}, score_space="pretrained")
    with pytest.raises(SpecError, match="no model.pretrained"):
        load_sweep(path)


def _random_artifact(path, dim, k, latent, seed):
    import torch

    from distclust.artifact import save_artifact
    from distclust.models import get_model_class
    from distclust.validation import build

    torch.manual_seed(seed)
    cls = get_model_class("ae-kmeans")
    m = cls(dim, build(cls.Params, {"n_clusters": k, "latent_dim": latent, "hidden": [16]}, "model"))
    m.normalizer.shift.fill_(1.0)
    m.normalizer.scale.fill_(2.0)
    m.centroids.copy_(torch.randn(k, latent))
    m.is_fitted.fill_(True)
    return save_artifact(m, path, data_info={})


@pytest.mark.integration   # trains in-process: seconds, not the fast tier
def test_score_space_scores_the_trial_partition_in_the_chosen_space(tmp_path):
    """The partition is always the trial's; silhouette / Davies-Bouldin are computed in its own
    embedding, in a shared pretrained embedding, or on the normalised features."""
    from sklearn.metrics import davies_bouldin_score, silhouette_score

    from distclust.tuning import score_model

    X, y = nonlinear_mixture(n=400, k=4, d=8)
    trial = _random_artifact(tmp_path / "trial", 8, 4, 3, 0)
    ref = _random_artifact(tmp_path / "ref", 8, 2, 5, 1)
    lab = distclust.load(trial).predict(X)
    assert len(np.unique(lab)) > 1
    spaces = {"embedding": distclust.load(trial).transform(X), "pretrained": distclust.load(ref).transform(X),
              "features": (X - 1.0) / 2.0}
    got = {}
    for space, Z in spaces.items():
        s = score_model(trial, X, y, space=space, space_model=ref)
        assert s["silhouette"] == pytest.approx(silhouette_score(Z, lab), rel=1e-5), space
        assert s["davies_bouldin"] == pytest.approx(davies_bouldin_score(Z, lab), rel=1e-5), space
        assert s["acc"] == distclust.load(trial).score_metrics(X, y)["acc"]
        got[space] = s["silhouette"]
    assert len({round(v, 6) for v in got.values()}) == 3  # three different spaces, three different scores


@pytest.mark.fast
def test_random_search_keeps_max_concurrent_trials_and_its_seed():
    """Tune ignores max_concurrent_trials for a BasicVariantGenerator it is handed: every random
    trial started at once and waited on the same CPUs. The limit lives in the generator now."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from distclust.tuning import param_space
    from distclust.tuning.run import search_algorithm
    from distclust.tuning.spec import SweepSpec

    sweep = SweepSpec(name="s", base="job.yaml", algorithm="random", num_samples=4, max_concurrent_trials=1,
                      search={"model.lr": {"loguniform": [1e-4, 1e-1]}}, seed=3)

    from ray.tune import register_trainable

    register_trainable("noop_trainable", lambda config: None)

    def first_trials(alg):
        alg.add_configurations({"s": {"run": "noop_trainable", "config": param_space(sweep), "num_samples": 4}})
        out = []
        while (t := alg.next_trial()) is not None:
            out.append(t)
        return out

    alg = search_algorithm(sweep, "max")
    assert isinstance(alg, BasicVariantGenerator) and alg.max_concurrent == 1
    trials = first_trials(alg)
    assert len(trials) == 1                   # one live trial: the second waits for it to end
    alg.on_trial_complete(trials[0].trial_id)
    second = alg.next_trial()
    assert second is not None
    # the seed fixes the sampled configurations
    again = first_trials(search_algorithm(sweep, "max"))
    assert again[0].config == trials[0].config


@pytest.mark.fast
def test_selection_passes_over_trials_that_leave_clusters_empty():
    """Silhouette rewards fewer, bigger clusters: on a 10k MNIST ClAM sweep the best silhouette was a
    trial that put every row in 2 of its 10 clusters (ACC 0.20). Such a trial ranks after every trial
    that uses all of its K; the switch turns it off; K may be searched too."""
    from distclust.tuning.run import select_best
    from distclust.tuning.spec import SweepSpec

    done = pd.DataFrame({"trial": ["a", "b", "c"], "silhouette": [0.078, 0.063, 0.056],
                         "clusters_used": [2.0, 10.0, 10.0]})
    sweep = SweepSpec(name="s", base="job.yaml", search={"model.beta": {"choice": [1, 2]}}, metric="silhouette")
    best, passed_over, none_full = select_best(done, sweep, default_k=10)
    assert best["trial"] == "b" and passed_over == 1 and not none_full
    sweep.require_all_clusters = False
    assert select_best(done, sweep, default_k=10)[0]["trial"] == "a"
    sweep.require_all_clusters = True
    searched = done.assign(**{"model.n_clusters": [2, 12, 10]})   # a uses all of its 2; b only 10 of 12
    best, passed_over, none_full = select_best(searched, sweep, default_k=10)
    assert best["trial"] == "a" and passed_over == 1 and not none_full
    none_full = done.assign(clusters_used=[2.0, 9.0, 8.0])         # none uses all: the best of the rest
    best, passed_over, warn = select_best(none_full, sweep, default_k=10)
    assert best["trial"] == "a" and passed_over == 3 and warn
