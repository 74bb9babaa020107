"""The command line as users run it: README's main command, resume after a kill, clean errors."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import ROOT, run_cli, tiny_spec


def readme_main_command() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    first = blocks[0].strip()
    assert first.startswith("pip install -e . && "), first
    return first.split(" && ", 1)[1]


def test_readme_main_command_runs(ray_cluster, tmp_path):
    """The README's command as written, its training cut to 15 of the job's 60 epochs (the slow tier's
    test_digits_job_meets_its_floor[ae-kmeans] trains the same job in full)."""
    cmd = readme_main_command().replace("runs/digits", str(tmp_path / "digits"))
    cmd += " --set model.pretrain_epochs=15"
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    # this session's Ray is a second Ray on the machine: Ray Train's placement-group cleaner must
    # still find its own dashboard (it printed this traceback once per run)
    assert "Found multiple active Ray instances" not in r.stdout + r.stderr, r.stderr[-3000:]
    last = r.stdout.strip().splitlines()[-1]
    assert last == str(tmp_path / "digits" / "model")
    m = json.loads((tmp_path / "digits" / "metrics.json").read_text())[-1]
    assert m["acc"] > 0.6 and "nmi" in m  # digits, 10 clusters: AE+k-means is ~0.75-0.8
    # then assign + evaluate through the CLI contract
    r = run_cli("ingest", "builtin:digits", tmp_path / "ds", "--shards", "3", "--quiet")
    assert r.returncode == 0, r.stderr
    r = run_cli("assign", last, tmp_path / "ds", tmp_path / "as", "--quiet")
    assert r.returncode == 0, r.stderr
    r = run_cli("evaluate", tmp_path / "as", tmp_path / "ds", "--json", tmp_path / "e.json")
    assert r.returncode == 0, r.stderr
    e = json.loads((tmp_path / "e.json").read_text())
    assert e["n"] == 1797 and set(e) >= {"acc", "nmi", "ari", "silhouette", "n"}
    assert abs(e["acc"] - m["acc"]) < 1e-9  # the assignment reproduces the training-time clustering


def test_interrupted_training_resumes_from_its_checkpoint(ray_cluster, blobs_dataset, tmp_path):
    spec = tiny_spec(pretrain_epochs=40, hidden=[16])
    spec["train"].update(quiet=False, checkpoint_every=1)
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec))
    run = tmp_path / "run"
    args = [sys.executable, "-m", "distclust.cli", "train", tmp_path / "job.yaml", "--data", blobs_dataset,
            "--out", run]
    p = subprocess.Popen(list(map(str, args)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        ckpts = list((run / "ray").glob("distclust-*/checkpoint_*"))
        if len(ckpts) >= 2:
            break
        time.sleep(0.1)
    assert p.poll() is None, "training ended before it could be interrupted:\n" + p.stdout.read()[-2000:]
    import os

    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert not (run / "model").exists()
    # the same command without --resume refuses to start over silently
    r = run_cli("train", tmp_path / "job.yaml", "--data", blobs_dataset, "--out", run)
    assert r.returncode == 2 and "--resume" in r.stderr
    r = run_cli("train", tmp_path / "job.yaml", "--data", blobs_dataset, "--out", run, "--resume")
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    out = r.stdout + r.stderr
    found = re.search(r"resuming from checkpoint: stage 'pretrain', epoch (\d+)", out)
    assert found, out[-3000:]
    resumed_at = int(found.group(1))
    assert 0 < resumed_at < 40
    hist = json.loads((run / "metrics.json").read_text())
    epochs = [h["epoch"] for h in hist if h["stage"] == "pretrain"]
    assert epochs == list(range(1, 41)), epochs  # each epoch once: continued, not restarted
    assert f"[pretrain] epoch 1/40" not in r.stdout  # the resumed run did not redo epoch 1


@pytest.mark.parametrize("args, needle", [
    (["train", "jobs/nope.yaml", "--out", "{tmp}/r"], "does not exist"),
    (["train", "jobs/digits-ae-kmeans.yaml", "--out", "{tmp}/r", "--set", "model.n_cluster=3"], "Did you mean 'n_clusters'"),
    (["train", "jobs/digits-ae-kmeans.yaml", "--out", "{tmp}/r", "--data", "{tmp}/missing.npz"], "does not exist"),
    (["assign", "{tmp}/nomodel", "builtin:digits", "{tmp}/o"], "not a distclust model"),
    (["ingest", "{tmp}/missing.csv", "{tmp}/o"], "does not exist"),
])
def test_cli_errors_are_one_paragraph_without_traceback(tmp_path, args, needle):
    r = run_cli(*[a.replace("{tmp}", str(tmp_path)) for a in args], timeout=120)
    assert r.returncode == 2
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.startswith("distclust ")
    assert not (tmp_path / "r" / "model").exists() and not (tmp_path / "o").exists()
