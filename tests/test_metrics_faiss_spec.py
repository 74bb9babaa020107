"""Metrics against scikit-learn, FAISS k-means / search, and spec validation."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from conftest import make_blobs, tiny_spec
from distclust import faiss_ops
from distclust.errors import SpecError
from distclust.metrics import completeness_from_contingency, contingency, scores
from distclust.spec import load_spec


def test_contingency_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 5, 500)
    pred = np.where(rng.random(500) < 0.7, (true + 2) % 6, rng.integers(0, 6, 500))
    s = scores(contingency(pred, true))
    assert s["nmi"] == pytest.approx(skm.normalized_mutual_info_score(true, pred))
    assert s["ari"] == pytest.approx(skm.adjusted_rand_score(true, pred))
    assert completeness_from_contingency(contingency(pred, true)) == pytest.approx(skm.completeness_score(true, pred))
    perm = (true + 3) % 5  # a relabelling is perfect
    assert scores(contingency(perm, true))["acc"] == pytest.approx(1.0)


def test_faiss_kmeans_finds_blobs_and_search_is_exact():
    X, y = make_blobs(n=2000, k=6, d=8, seed=1)
    c, inertia = faiss_ops.kmeans(X, 6, seed=0, nredo=3)
    lab, d2 = faiss_ops.NearestPrototype(c).search(X)
    assert scores(contingency(lab, y))["acc"] > 0.99
    brute = ((X[:, None, :] - c[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(lab, brute.argmin(1))
    np.testing.assert_allclose(d2, brute.min(1), rtol=1e-4, atol=1e-3)
    c2, _ = faiss_ops.kmeans(X, 6, seed=0, nredo=3)
    np.testing.assert_array_equal(c, c2)  # seeded
    with pytest.raises(ValueError, match="k=3000"):
        faiss_ops.kmeans(X, 3000)


def test_kmeans_uses_the_sample_size_it_is_given():
    """max_points=500: the centroids depend on exactly the 500 seeded sampled rows and on no other."""
    X, _ = make_blobs(n=5000, k=4, d=4, seed=2)
    c, _ = faiss_ops.kmeans(X, 4, seed=0, nredo=1, max_points=500)
    assert c.shape == (4, 4)
    picked = np.sort(np.random.default_rng(0).choice(len(X), 500, replace=False))
    outside = np.setdiff1d(np.arange(len(X)), picked)
    X2 = X.copy()
    X2[outside] += 100.0                       # rows outside the sample moved far away: no effect
    c2, _ = faiss_ops.kmeans(X2, 4, seed=0, nredo=1, max_points=500)
    np.testing.assert_array_equal(c, c2)
    X3 = X.copy()
    X3[picked[:50]] += 100.0                   # rows inside the sample moved: the centroids follow
    c3, _ = faiss_ops.kmeans(X3, 4, seed=0, nredo=1, max_points=500)
    assert np.abs(c3 - c).max() > 1.0
    c_all, _ = faiss_ops.kmeans(X2, 4, seed=0, nredo=1, max_points=None)
    assert np.abs(c_all - c).max() > 1.0       # without the cap, the moved rows count


def test_spec_errors_name_the_key_and_suggest():
    with pytest.raises(SpecError, match=r"unknown key 'model.n_cluster'.*Did you mean 'n_clusters'"):
        load_spec(tiny_spec(n_cluster=3))
    with pytest.raises(SpecError, match="model.latent_dim"):
        load_spec(tiny_spec(latent_dim=0))
    with pytest.raises(SpecError, match="model.pretrain_lr"):
        load_spec(tiny_spec(pretrain_lr=-0.1))
    with pytest.raises(SpecError, match="unknown model 'ae-kmean'.*Did you mean 'ae-kmeans'"):
        load_spec(tiny_spec("ae-kmean"))
    with pytest.raises(SpecError, match="train.batch_size.*expected int"):
        load_spec(tiny_spec(), ["train.batch_size=big"])
    with pytest.raises(SpecError, match="n_clusters"):
        load_spec(tiny_spec(n_clusters=0))
    s = load_spec(tiny_spec(), ["model.n_clusters=7", "model.pretrain_lr=1e-4", "scaling.num_workers=1"])
    assert (s.model.n_clusters, s.model.pretrain_lr, s.scaling.num_workers) == (7, 1e-4, 1)


def test_optional_float_keys_take_ints_and_null():
    """`X | None` annotations: an int such as 300 is a float, null is None, a word is an error."""
    raw = tiny_spec("vae-dpgmm", n_clusters=6)
    raw["model"].pop("kmeans_nredo")
    s = load_spec(raw, ["model.dp_dof=300", "model.dp_alpha=1", "model.dp_cluster_scale=null"])
    assert (s.model.dp_dof, s.model.dp_alpha, s.model.dp_cluster_scale) == (300.0, 1.0, None)
    assert isinstance(s.model.dp_dof, float)
    with pytest.raises(SpecError, match="model.dp_dof.*expected float or null"):
        load_spec(raw, ["model.dp_dof=lots"])


def _outside(rule, is_int):
    """A value the rule refuses (None when the rule has no bound to step over)."""
    if rule.choices is not None:
        return "no-such-choice"
    for bound in (rule.ge, rule.gt):
        if bound is not None:
            return int(bound) - 1 if is_int else bound - 0.5
    for bound in (rule.le, rule.lt):
        if bound is not None:
            return bound + 1
    return None


def test_every_declared_constraint_is_checked_with_its_key():
    """Each model's Params and each spec section: the defaults pass, and a value just outside any declared
    rule is a SpecError naming that key with a fix, whichever class in the hierarchy declared the rule."""
    import typing

    from distclust.models.registry import get_model_class, model_names
    from distclust.spec import DataSpec, ScalingSpec, TrainSpec
    from distclust.validation import _rules, build

    classes = [(get_model_class(n).Params, "model") for n in model_names()]
    classes += [(DataSpec, "data"), (TrainSpec, "train"), (ScalingSpec, "scaling")]
    checked = 0
    for cls, section in classes:
        build(cls, {}, section)                               # every default is allowed
        hints = typing.get_type_hints(cls)
        for name, rule in _rules(cls).items():
            hint = str(hints[name])
            bad = _outside(rule, "int" in hint and "float" not in hint)
            if bad is None:
                continue
            value = [bad] if hint.startswith("list") else bad
            with pytest.raises(SpecError, match=rf"'{section}\.{name}' is .*Fix: ") as e:
                build(cls, {name: value}, section)
            assert e.value.where == f"{section}.{name}", (cls.__name__, name)
            checked += 1
    assert checked > 100, checked
    # a subclass that changes only a default keeps its parent's rule
    from distclust.models.clam import DeepClamParams
    with pytest.raises(SpecError, match="model.lr"):
        build(DeepClamParams, {"lr": 0}, "model")
