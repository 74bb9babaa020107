"""Bad input, through the real command line: each case gets a one-paragraph error that names the
problem, where it is and how to fix it; exit code ≠ 0; no traceback; no partial output."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import ROOT, make_blobs, run_cli, tiny_spec

JOB = str(ROOT / "jobs" / "digits-ae-kmeans.yaml")


def _npz(tmp, name="d.npz", n=60, d=16, **edit):
    X, y = make_blobs(n=n, k=3, d=d)
    for k, v in edit.items():
        if k == "X":
            X = v
        if k == "y":
            y = v
    np.savez(tmp / name, X=X, y=y)
    return tmp / name


def _ingested(tmp, name="ds", **kw):
    from distclust.data import ingest

    out = tmp / name
    ingest(_npz(tmp, f"{name}.npz", **kw), out, shards=2, progress=False)
    return out


def _artifact(tmp, dim=16, fmt=None, minmax=(0.0, 1.0)):
    """A real artifact (untrained weights: these cases never get as far as using them)."""
    from distclust.artifact import save_artifact
    from distclust.models import get_model_class
    from distclust.validation import build

    cls = get_model_class("ae-kmeans")
    model = cls(dim, build(cls.Params, {"n_clusters": 3, "latent_dim": 2, "hidden": [8]}, "model"))
    out = save_artifact(model, tmp / "model", data_info={"min": minmax[0], "max": minmax[1]})
    if fmt is not None:
        cfg = json.loads((out / "config.json").read_text())
        cfg["format"] = fmt
        cfg["versions"]["distclust"] = "9.0.0"
        (out / "config.json").write_text(json.dumps(cfg))
    return out


def _job(tmp, edit_model=None, edit=None):
    raw = tiny_spec()
    raw["model"].update(edit_model or {})
    for k, v in (edit or {}).items():
        sec, key = k.split(".")
        raw.setdefault(sec, {})[key] = v
    (tmp / "job.yaml").write_text(yaml.safe_dump(raw))
    return tmp / "job.yaml"


def _parquet(tmp, table, name="p.parquet"):
    pq.write_table(table, tmp / name)
    return tmp / name


# each case: (id, builder(tmp) -> argv, substring the message must contain)
CASES = [
    ("nan-features", lambda t: ["ingest", _npz(t, X=np.where(np.eye(60, 16) > 0, np.nan, 1.0).astype(np.float32)),
                                t / "out"], "NaN"),
    ("inf-features", lambda t: ["ingest", _npz(t, X=np.full((60, 16), np.inf, np.float32)), t / "out"], "inf"),
    ("wrong-dimension", lambda t: ["assign", _artifact(t, dim=8), _ingested(t), t / "out"],
     "has 16 features but the model was trained on 8"),
    ("empty-dataset", lambda t: ["ingest", _npz(t, X=np.zeros((0, 16), np.float32), y=np.zeros(0, np.int64)),
                                 t / "out"], "no rows"),
    ("empty-folder", lambda t: ["ingest", (t / "emptydir").mkdir() or t / "emptydir", t / "out"],
     "holds no .parquet files"),
    ("corrupt-parquet", lambda t: ["ingest", (t / "c.parquet").write_bytes(b"PAR1garbage") and t / "c.parquet",
                                   t / "out"], "not a readable Parquet file"),
    ("missing-id-column-assign", lambda t: ["assign", _artifact(t),
                                            ((t / "noid").mkdir() or _parquet(t / "noid", pa.table({"x": [1.0]}))).parent,
                                            t / "out"], "is a raw table but the model was trained on plain numeric features"),
    ("duplicate-ids", lambda t: ["ingest", _parquet(t, pa.table({"id": [1, 1], "x": [0.0, 1.0]})), t / "out"],
     "duplicates"),
    ("non-numeric-feature", lambda t: ["ingest", _parquet(t, pa.table({"x": [0.0], "city": ["Oslo"]})), t / "out"],
     "'city' is string, not numeric"),
    ("non-integer-id", lambda t: ["ingest", _parquet(t, pa.table({"id": ["a"], "x": [0.0]})), t / "out"],
     "not integer"),
    ("missing-label-values", lambda t: ["ingest", _parquet(t, pa.table({"x": [0.0, 1.0], "label": [1, None]})),
                                        t / "out"], "missing values"),
    ("ragged-feature-lists", lambda t: ["ingest", _parquet(t, pa.table({"features": [[1.0, 2.0], [1.0]]})),
                                        t / "out"], "different lengths"),
    ("k-below-1", lambda t: ["train", _job(t, {"n_clusters": 0}), "--out", t / "out"], "model.n_clusters"),
    ("k-above-rows", lambda t: ["train", _job(t, {"n_clusters": 500}), "--data", _npz(t), "--out", t / "out"],
     "only 60 rows"),
    ("latent-size-0", lambda t: ["train", _job(t, {"latent_dim": 0}), "--out", t / "out"], "model.latent_dim"),
    ("negative-learning-rate", lambda t: ["train", _job(t, {"pretrain_lr": -0.01}), "--out", t / "out"],
     "model.pretrain_lr"),
    ("unknown-model", lambda t: ["train", _job(t, {"name": "deck"}), "--out", t / "out"], "unknown model 'deck'"),
    ("misspelt-key", lambda t: ["train", _job(t, {"laten_dim": 3}), "--out", t / "out"],
     "Did you mean 'latent_dim'"),
    ("misspelt-section", lambda t: ["train", JOB, "--out", t / "out", "--set", "trian.seed=1"],
     "Did you mean 'train'"),
    ("wrong-type", lambda t: ["train", JOB, "--out", t / "out", "--set", "train.batch_size=lots"], "expected int"),
    ("remote-uri", lambda t: ["ingest", "s3://bucket/data.parquet", t / "out"], "not read directly"),
    ("missing-data-path", lambda t: ["train", JOB, "--data", t / "nope.npz", "--out", t / "out"], "does not exist"),
    ("no-data-at-all", lambda t: ["train", _job(t), "--out", t / "out"], "no data given"),
    ("unwritable-output", lambda t: ["ingest", _npz(t), (t / "afile").write_text("x") and t / "afile" / "sub"],
     "cannot use"),
    ("existing-output", lambda t: ["ingest", _npz(t), (t / "out").mkdir() or t / "out"], "--overwrite"),
    ("incompatible-artifact", lambda t: ["assign", _artifact(t, fmt=99), _ingested(t), t / "out"],
     "made by distclust 9.0.0"),
    ("assign-zero-actors", lambda t: ["assign", _artifact(t), _ingested(t), t / "out", "--actors", "0"],
     "--actors must be a whole number"),
    ("mismatched-normalisation", lambda t: ["assign", _artifact(t, minmax=(0.0, 1.0)),
                                            _ingested(t, X=np.full((60, 16), 255.0, np.float32)), t / "out"],
     "differently scaled"),
    ("ray-address-unreachable", lambda t: ["train", JOB, "--data", _npz(t), "--out", t / "out", "--set",
                                           "scaling.address=127.0.0.1:9"], "unreachable"),
    ("more-workers-than-shards", lambda t: ["train", _job(t, edit={"scaling.num_workers": 3}), "--data",
                                            _ingested(t), "--out", t / "out"], "re-ingest with --shards"),
    ("bad-normalize", lambda t: ["train", JOB, "--out", t / "out", "--set", "data.normalize=zscore"],
     "data.normalize"),
    ("negative-early-stop-patience", lambda t: ["train", JOB, "--out", t / "out", "--set",
                                                "train.early_stop_patience=-2"], "train.early_stop_patience"),
    ("set-without-equals", lambda t: ["train", JOB, "--out", t / "out", "--set", "model.n_clusters"], "has no '='"),
    ("evaluate-without-labels", lambda t: ["evaluate", (t / "a").mkdir() or _parquet(t / "a", pa.table(
        {"id": [0], "cluster": [0]})).parent, ((t / "nl").mkdir() or _parquet(t / "nl", pa.table(
            {"id": [0], "features": [[0.0]]}))).parent], "no 'label' column"),
    ("invalid-yaml", lambda t: ["train", (t / "bad.yaml").write_text("model: [unclosed") and t / "bad.yaml",
                                "--out", t / "out"], "not valid YAML"),
]


@pytest.mark.parametrize("case, build, needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_error(tmp_path, case, build, needle):
    argv = build(tmp_path)
    r = run_cli(*argv, timeout=300, env={"RAY_ADDRESS": ""})
    assert r.returncode != 0, r.stdout[-2000:]
    err = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
    assert needle in err, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert err.startswith("distclust ") and ("Fix:" in err), err  # what, where, how to fix
    assert not (tmp_path / "out").exists() or case == "existing-output"  # no partial output
    assert not list(tmp_path.glob(".out*tmp-*"))


def test_at_least_25_distinct_cases():
    """25 different mistakes, not one counted twice: distinct names and distinct expected messages."""
    names = [c[0] for c in CASES]
    expected = [c[2] for c in CASES]
    assert len(CASES) >= 25
    assert len(set(names)) == len(names), sorted(n for n in names if names.count(n) > 1)
    assert len(set(expected)) == len(expected), sorted(e for e in expected if expected.count(e) > 1)


def test_debug_shows_the_traceback(tmp_path):
    r = run_cli("--debug", "train", JOB, "--out", tmp_path / "o", "--set", "model.n_clusters=0")
    assert r.returncode != 0 and "Traceback" in r.stderr
