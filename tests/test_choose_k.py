"""Choosing K without labels: the criteria, the combination rule, edge warnings, bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from conftest import make_blobs, run_cli

from distclust.errors import DataError, DistclustError, SpecError
from distclust.select_k import combine, parse_k_range, select_k


@pytest.fixture(scope="module")
def blobs5():
    X, y = make_blobs(n=500, k=5, d=8, seed=3, spread=0.5)
    return X, y


@pytest.mark.integration   # trains in-process: seconds, not the fast tier
def test_stability_and_gap_pick_the_known_k(blobs5):
    X, _ = blobs5
    sel = select_k(X, list(range(2, 10)), seed=0, replicates=3)
    assert sel.choices["stability"] == 5, sel.table
    assert sel.choices["gap"] == 5, sel.table
    assert sel.chosen == 5 and not sel.warnings
    assert sel.choices["dpmix"] == 5 and sel.dp_components >= 5   # the vote is the DEMP-merged count
    by_k = {r["k"]: r for r in sel.table}
    assert by_k[5]["stability"] > 0.95 > by_k[7]["stability"]


def test_every_random_step_is_seeded(blobs5):
    X, _ = blobs5
    a = select_k(X, [3, 4, 5, 6], seed=1, replicates=2, dp=False)
    b = select_k(X, [3, 4, 5, 6], seed=1, replicates=2, dp=False)
    assert a.table == b.table


def test_ray_tasks_give_the_same_curves_as_the_local_loop(ray_cluster, blobs5):
    X, _ = blobs5
    local = select_k(X, [3, 5, 7], seed=0, replicates=2)
    remote = select_k(X, [3, 5, 7], seed=0, replicates=2, use_ray=True)
    assert local.table == remote.table and local.choices == remote.choices


def test_restarts_take_k_means_local_optima_out_of_stability():
    """30 well-separated blobs: one k-means++ run per half misplaces a centroid in every replicate, so
    the halves disagree although the structure is perfectly stable; the best of 10 runs does not."""
    from distclust.select_k import split_agreement

    X, _ = make_blobs(n=3000, k=30, d=8, seed=3, spread=0.3)
    one = [split_agreement(X, 30, 0, rep, restarts=1)[0] for rep in range(4)]
    ten = [split_agreement(X, 30, 0, rep, restarts=10)[0] for rep in range(4)]
    assert max(one) < 0.97 and min(ten) > 0.999, (one, ten)


def test_cli_restarts_below_one_exits_2(blobs_npz, tmp_path):
    r = run_cli("choose-k", "jobs/digits-ae-kmeans.yaml", "--k", "2..6", "--data", blobs_npz, "--space",
                "features", "--restarts", "0", "--out", tmp_path / "o")
    assert r.returncode == 2 and "--restarts" in r.stderr and "Fix:" in r.stderr, r.stderr


def _rows(excess: dict[int, float]) -> list[dict]:
    return [{"k": k, "excess_stability": v} for k, v in excess.items()]


def test_the_combined_rule_is_the_documented_one():
    ex = {k: 0.1 * (k % 3) for k in range(2, 21)}
    # agreement wins over stability: gap 16 and DP 17 agree (±1), stability's own peak (9) is alone
    k, why = combine(_rows({**ex, 9: 0.9}), {"stability": 9, "gap": 16, "dpmix": 17})
    assert k in (16, 17) and k == max((16, 17), key=lambda k: (ex[k], -k)) and why.startswith("2 of 3")
    # no two agree: the most stable K beyond chance among those one criterion points at
    k, why = combine(_rows({**ex, 9: 0.9}), {"stability": 9, "gap": 2, "dpmix": 19})
    assert k == 9 and why.startswith("1 of 3")
    # all agree within ±1: of the K with three votes, the one at their median, even if less stable
    k, _ = combine(_rows({**ex, 10: 0.5, 11: 0.7}), {"stability": 10, "gap": 11, "dpmix": 10})
    assert k == 10
    # a K between two estimates that none proposed loses to a pair that agrees closely
    k, _ = combine(_rows({**ex, 10: 0.2, 11: 0.6, 12: 0.9}), {"stability": 10, "gap": 13, "dpmix": 11})
    assert k == 11
    # prediction strength is reported, never a vote
    k, _ = combine(_rows(ex), {"stability": 5, "gap": 5, "dpmix": 12, "prediction_strength": 12})
    assert k == 5


def test_a_choice_at_the_edge_of_the_range_warns(blobs5):
    X, _ = blobs5
    sel = select_k(X, [2, 3, 4], seed=0, replicates=2, dp=False)
    assert sel.chosen == 4 and sel.at_edge
    assert any("largest K searched" in w and "widen" in w for w in sel.warnings), sel.warnings


@pytest.mark.parametrize("text,ks", [("5..8", [5, 6, 7, 8]), ("10..30:10", [10, 20, 30]), ("8,4,6", [4, 6, 8]),
                                     (" 3 .. 5 ", [3, 4, 5])])
def test_k_ranges_parse(text, ks):
    assert parse_k_range(text) == ks


@pytest.mark.parametrize("text,words", [("30..5", "runs backwards"), ("five..30", "cannot read"),
                                        ("1..5", "starts at 1"), ("5..6", "at least 3"), ("5..30:0", "step")])
def test_bad_k_ranges_say_what_where_and_how(text, words):
    with pytest.raises(SpecError) as e:
        parse_k_range(text)
    assert words in str(e.value) and "Where: --k" in str(e.value) and "Fix:" in str(e.value)


def test_a_k_range_larger_than_the_rows_is_refused():
    X, _ = make_blobs(n=60, k=3, d=4)
    with pytest.raises(DataError, match="needs at least 200 rows"):
        select_k(X, [3, 10, 20])


def test_cli_bad_input_exits_2_with_a_clear_message(blobs_npz):
    r = run_cli("choose-k", "jobs/digits-ae-kmeans.yaml", "--k", "30..5", "--data", blobs_npz)
    assert r.returncode == 2 and "runs backwards" in r.stderr and "Fix:" in r.stderr and "Traceback" not in r.stderr


def test_cli_k_range_larger_than_the_rows_exits_2(blobs_npz, tmp_path):
    r = run_cli("choose-k", "jobs/digits-ae-kmeans.yaml", "--k", "2..200", "--data", blobs_npz, "--space",
                "features", "--out", tmp_path / "o")
    assert r.returncode == 2 and "needs at least" in r.stderr and "Fix:" in r.stderr, r.stderr


def test_cli_choose_k_on_features(ray_cluster, tmp_path):
    X, y = make_blobs(n=600, k=5, d=8, seed=3, spread=0.5)
    np.savez(tmp_path / "b.npz", X=X, y=y)
    r = run_cli("choose-k", "jobs/digits-ae-kmeans.yaml", "--data", tmp_path / "b.npz", "--k", "3..7", "--space",
                "features", "--replicates", "2", "--out", tmp_path / "o", "--quiet")
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "o" / "choose_k.json").read_text())
    assert res["chosen"] == 5 and res["ks"] == list(range(3, 8)) and (tmp_path / "o" / "choose_k.png").is_file()
    assert res["replicates"] == 2 and res["restarts"] == 10
    assert "chosen K = 5" in r.stdout


def test_choose_k_metric_needs_a_k_grid(tmp_path):
    from distclust.tuning import load_sweep

    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"name": "s", "base": "../jobs/digits-ae-kmeans.yaml",
                                                     "search": {"model.pretrain_lr": {"grid": [1e-3, 1e-2]}},
                                                     "metric": "choose_k"}))
    with pytest.raises(DistclustError, match="does not search model.n_clusters"):
        load_sweep(tmp_path / "s.yaml", base_job="jobs/digits-ae-kmeans.yaml")


def test_a_tiny_sweep_selects_what_the_rule_says(ray_cluster, tmp_path):
    """Real trials (Ray Tune + Ray Train); the criteria on the shared embedding; the rule applied
    again to the saved curves gives the sweep's choice, and the selected trial has that K."""
    from distclust.select_k import combine as rule
    from distclust.tuning import run_sweep

    X, y = make_blobs(n=600, k=4, d=8, seed=5, spread=0.5)
    np.savez(tmp_path / "b.npz", X=X, y=y)
    job = {"name": "b", "data": {"normalize": "standard", "shards": 2},
           "model": {"name": "ae-kmeans", "n_clusters": 4, "latent_dim": 4, "hidden": [32], "pretrain_epochs": 4,
                     "kmeans_nredo": 2},
           "train": {"batch_size": 64, "seed": 0, "quiet": True}, "scaling": {"num_workers": 1, "cpus_per_worker": 1}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({
        "name": "k", "base": "job.yaml", "search": {"model.n_clusters": {"grid": [2, 4, 6]}}, "scheduler": "none",
        "select_replicates": 2, "max_concurrent_trials": 3}))  # no metric: choose_k is the default for a K grid
    r = run_sweep(tmp_path / "sweep.yaml", tmp_path / "out", data=str(tmp_path / "b.npz"), progress=False)
    s = r["summary"]
    saved = json.loads((tmp_path / "out" / "choose_k.json").read_text())
    assert s["metric"] == "choose_k" and saved["ks"] == [2, 3, 4, 5, 6]
    assert rule(saved["table"], saved["choices"])[0] == saved["chosen"] == s["choose_k"]["chosen"]
    assert s["best_config"] == {"model.n_clusters": saved["chosen"]} == {"model.n_clusters": 4}
    assert (tmp_path / "out" / "choose_k.png").is_file()


@pytest.mark.integration   # trains in-process: seconds, not the fast tier
def test_sweep_report_shows_the_per_k_curves_and_the_edge_warning(tmp_path, blobs5):
    """A sweep directory as `distclust tune` writes it with metric choose_k; the report draws every
    criterion's curve and repeats the edge warning."""
    import pandas as pd

    from distclust.cli import main

    X, _ = blobs5
    sel = select_k(X, [2, 3, 4], seed=0, replicates=2, dp=False)  # truth 5: chosen at the upper edge
    d = tmp_path / "sweep"
    d.mkdir()
    pd.DataFrame({"model.n_clusters": [2, 3, 4], "trial": ["t0", "t1", "t2"], "status": ["completed"] * 3,
                  "choose_k": [r["excess_stability"] for r in sel.table], "model_dir": ["x"] * 3,
                  "selected": [False, False, True]}).to_parquet(d / "results.parquet", index=False)
    (d / "summary.json").write_text(json.dumps({
        "best_trial": "t2", "metric": "choose_k", "mode": "max", "value": sel.table[-1]["excess_stability"],
        "best_config": {"model.n_clusters": 4}, "trials": 3, "completed": 3, "stopped_early": 0,
        "best_model": str(d / "best_model"), "warnings": sel.warnings}))
    (d / "choose_k.json").write_text(json.dumps(sel.as_dict()))
    assert main(["report", str(d)]) == 0
    text = (d / "report" / "index.html").read_text()
    assert '<section id="choose-k">' in text and "largest K searched" in text
    assert (d / "report" / "choose_k.png").stat().st_size > 10_000


def test_cli_choose_k_in_a_given_models_embedding(ray_cluster, tmp_path):
    """--model: the criteria run in that artifact's embedding (an untrained ae-kmeans here): the
    command gives exactly what select_k gives on that artifact's transform of the same sample."""
    import torch

    from distclust.artifact import save_artifact
    from distclust.models import get_model_class
    from distclust.validation import build

    X, y = make_blobs(n=600, k=5, d=8, seed=3, spread=0.5)
    np.savez(tmp_path / "b.npz", X=X, y=y)
    torch.manual_seed(0)
    cls = get_model_class("ae-kmeans")
    m = cls(8, build(cls.Params, {"n_clusters": 5, "latent_dim": 8, "hidden": [32]}, "model"))
    m.normalizer.shift.copy_(torch.as_tensor(X.mean(0)))
    m.normalizer.scale.copy_(torch.as_tensor(X.std(0)))
    m.is_fitted.fill_(True)
    model = save_artifact(m, tmp_path / "model", data_info={})
    r = run_cli("choose-k", "jobs/digits-ae-kmeans.yaml", "--data", tmp_path / "b.npz", "--k", "3..8", "--model",
                model, "--replicates", "2", "--out", tmp_path / "o", "--quiet")
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "o" / "choose_k.json").read_text())
    assert res["space"] == "embedding" and res["model"] == str(model) and res["dim"] == 8
    from distclust.artifact import load
    from distclust.data.sample import sample_dataset

    Xs, _ = sample_dataset(tmp_path / "o" / "data", 10_000, 0)
    ref = select_k(load(model).transform(Xs), [3, 4, 5, 6, 7, 8], seed=0, replicates=2)
    assert res["choices"] == ref.choices and res["chosen"] == ref.chosen
    assert [r["stability"] for r in res["table"]] == [r["stability"] for r in ref.table]
