"""A job on a real cluster finishes or fails clearly: no read deadlock on a cluster with exactly the
CPUs the workers ask for, a pre-flight refusal for a job that can never be placed, and a watchdog
that fails a starved run naming what is pending."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import run_cli, tiny_spec

import distclust
from distclust.spec import load_spec


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_head(temp: str):
    """``ray start --head --block`` with 2 CPUs on free ports; (process, dashboard url) once its job server
    answers, or (None, error text) when it did not come up (a busy machine can time Ray's start-up out).

    Every port is chosen here, the agents' included: the session's own Ray already holds the dashboard
    agent's default port 52365, and a second head whose agent cannot bind it answers every submission
    with "No available agent" (what failed CI on 2026-12-02)."""
    import urllib.request

    port, dash = _free_port(), _free_port()
    agent_ports = [flag for name in ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                                     "--runtime-env-agent-port", "--metrics-export-port")
                   for flag in (name, str(_free_port()))]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.setdefault("RAY_agent_register_timeout_ms", "180000")   # a busy machine starts Ray slowly
    env.setdefault("RAY_DASHBOARD_STARTUP_TIMEOUT_S", "300")
    proc = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
                             "--num-cpus", "2", "--port", str(port), "--dashboard-port", str(dash),
                             "--dashboard-host", "127.0.0.1", "--include-dashboard", "true", "--temp-dir", temp,
                             *agent_ports],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url, deadline = f"http://127.0.0.1:{dash}", time.time() + 400
    while time.time() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url + "/api/version", timeout=5) as r:
                if r.status == 200:
                    time.sleep(5)
                    if proc.poll() is None:
                        return proc, url
        except OSError:
            pass
        time.sleep(2)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    return None, (proc.stdout.read().decode(errors="replace")[-1500:] if proc.stdout else "")


@pytest.fixture
def two_cpu_head():
    """A real Ray head with exactly 2 CPUs, on its own ports, stopped by the test (its process group)."""
    import shutil
    import tempfile

    temp = tempfile.mkdtemp(prefix="dc-ray-", dir="/tmp")   # Ray's socket paths must stay under 107 bytes
    for _ in range(2):
        proc, url = _start_head(temp)
        if proc is not None:
            break
    else:
        shutil.rmtree(temp, ignore_errors=True)
        pytest.fail("a 2-CPU Ray head did not start twice: " + url)
    yield url
    # `ray start --block` stops its processes one by one on SIGTERM (~30 s); every process of this head
    # shares its process group (the job's workers included), so SIGKILL to the group ends it at once
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(60)
    shutil.rmtree(temp, ignore_errors=True)


def test_digits_job_on_a_two_cpu_head_finishes(two_cpu_head, tmp_path):
    """The embedded default job, 2 workers × 1 CPU, submitted to the job server of a head with exactly
    2 CPUs: it finishes, and `distclust jobs status|logs` report it."""
    out, env = tmp_path / "run", {"RAY_ADDRESS": ""}   # this head, not the session's cluster
    r = run_cli("submit", "jobs/digits-ae-kmeans.yaml", "--address", two_cpu_head, "--out", out,
                "--set", "model.pretrain_epochs=3", "--set", "model.hidden=[64]", "--set", "train.stall_timeout_s=240",
                timeout=900, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "SUCCEEDED" in r.stdout
    assert distclust.load(out / "model").n_clusters_ == 10
    # the job server's view of it, through `distclust jobs` (status, logs, an unknown id)
    job_id = r.stdout.strip().splitlines()[-1]
    r = run_cli("jobs", "status", job_id, "--address", two_cpu_head, env=env)
    assert r.returncode == 0 and r.stdout.strip() == "SUCCEEDED", r.stdout + r.stderr
    r = run_cli("jobs", "logs", job_id, "--address", two_cpu_head, env=env)
    assert "training finished" in r.stdout
    r = run_cli("jobs", "status", "no-such-job", "--address", two_cpu_head, env=env)
    assert r.returncode == 2 and "no job 'no-such-job'" in r.stderr


def test_a_job_larger_than_the_cluster_fails_at_once(ray_cluster, tmp_path):
    t0 = time.time()
    r = run_cli("train", "jobs/digits-ae-kmeans.yaml", "--out", tmp_path / "run", "--set", "scaling.cpus_per_worker=3",
                timeout=300)   # 2 workers × 3 CPUs on the test cluster's one 4-CPU node
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert "asks for 2 × {CPU: 3}" in r.stderr and "can place only 1" in r.stderr, r.stderr
    assert "--set scaling.num_workers=1" in r.stderr and "--set scaling.cpus_per_worker=2" in r.stderr
    assert time.time() - t0 < 120
    assert not (tmp_path / "run").exists()   # nothing half-written


def test_preflight_suggests_what_fits():
    from distclust.engine.preflight import PreflightError, check_bundles

    nodes = [{"CPU": 2.0}, {"CPU": 2.0}]
    check_bundles(nodes, {"CPU": 1.0}, 4, "job", {"count": "scaling.num_workers"})          # fits exactly
    with pytest.raises(PreflightError, match=r"scaling.cpus_per_worker=0.5"):
        check_bundles(nodes, {"CPU": 1.0}, 8, "job", {"count": "scaling.num_workers", "CPU": "scaling.cpus_per_worker"})
    with pytest.raises(PreflightError, match=r"use_gpu=false \(the cluster has no GPU\)"):
        check_bundles(nodes, {"CPU": 1.0, "GPU": 1.0}, 1, "job", {"count": "scaling.num_workers"})
    with pytest.raises(PreflightError, match="can place only 0"):     # 3 CPUs fit on no 2-CPU node
        check_bundles(nodes, {"CPU": 3.0}, 1, "job", {"count": "scaling.num_workers"})
    with pytest.warns(UserWarning, match="autoscaler"):
        check_bundles(nodes, {"CPU": 3.0}, 1, "job", {}, autoscaling=True)


def test_watchdog_fails_a_starved_run_naming_what_is_pending(ray_cluster, blobs_dataset, tmp_path):
    """Another actor holds every CPU: the run's workers can never start; it fails within its timeout."""
    import ray

    from distclust.engine.trainer import run_training
    from distclust.engine.watchdog import StallError

    @ray.remote(num_cpus=ray.cluster_resources()["CPU"])
    class Hog:
        def ping(self):
            return 1

    hog = Hog.remote()
    ray.get(hog.ping.remote())
    raw = tiny_spec()
    raw["train"]["stall_timeout_s"] = 8
    raw["scaling"]["num_workers"] = 1
    t0 = time.time()
    try:
        with pytest.raises(StallError, match=r"no progress for 8 s: .*waiting for resources"):
            run_training(load_spec(raw), tmp_path / "run", data=str(blobs_dataset))
        assert time.time() - t0 < 120
    finally:
        ray.kill(hog)
    time.sleep(5)   # the stopped run does not start once the CPUs are free
    assert ray.available_resources().get("CPU", 0) >= ray.cluster_resources()["CPU"] - 0.5
