"""bench/throughput.py runs end to end: every configuration (plain loop, in-process loop, Ray Train
1 worker × 2 CPUs and 2 workers × 1 CPU) gives samples/s for a model (tiny synthetic data)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.slow   # two Ray starts: 1-3 minutes on a shared 2-core machine
def test_throughput_bench_runs_every_configuration(tmp_path):
    out = tmp_path / "throughput.json"
    cmd = [sys.executable, "bench/throughput.py", "--rows", "600", "--epochs", "2", "--rounds", "1", "--synthetic",
           "--models", "concrete-gmvae", "--work", str(tmp_path / "work"), "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(out.read_text())
    row = res["summary"]["concrete-gmvae"]
    assert set(row) == {"plain", "inprocess", "ray-1x2", "ray-2x1"}, res["runs"]
    assert all(v["samples_per_s"] > 0 for v in row.values())
    assert row["plain"]["ratio_to_plain"] == 1.0
    assert all(r.get("overhead_pct") is not None for r in res["runs"])
