"""Submitting distclust commands to a Ray cluster through Ray's Job Submission API.

``distclust submit SPEC.yaml --address http://HEAD:8265 --out /shared/runs/x`` sends the
project as the job's ``working_dir`` (so the cluster runs this exact code) with optional
pip requirements, and runs ``python -m distclust.cli train|tune ...`` on the head node,
where Ray Train / Tune spread the work over the cluster. ``distclust jobs`` follows,
prints logs of, or stops a job.
"""
from __future__ import annotations

import asyncio
import shlex
import time
import uuid
from pathlib import Path

from .errors import DistclustError, SpecError
from .spec import read_yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# never uploaded with the working_dir (data, runs and benchmark scratch can be GBs)
EXCLUDES = [".git", "runs", "bench/_work", "bench/results", "**/__pycache__", "*.egg-info", ".pytest_cache",
            "*.parquet", "*.npz", "*.npy"]
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def _client(address: str):
    from ray.job_submission import JobSubmissionClient

    from .engine.ray_setup import check_reachable

    check_reachable(address)
    try:
        return JobSubmissionClient(address)
    except Exception as e:  # connection / version errors from the dashboard
        raise DistclustError(f"cannot reach the Ray job server at '{address}' ({str(e).splitlines()[0][:200]})",
                             "--address", "pass the dashboard address of the head node, e.g. http://HEAD:8265 "
                             "(ray start --head starts it; on KubeRay use the head service's port 8265)") from None


def spec_kind(path: Path) -> str:
    """'train' for a job spec, 'tune' for a sweep spec (validated before anything is sent)."""
    raw = read_yaml(path, "spec")
    if not isinstance(raw, dict):
        raise SpecError("spec must be a YAML mapping", str(path), "pass a job spec (jobs/) or a sweep spec (tune/)")
    if "base" in raw and "search" in raw:
        from .tuning import load_sweep

        load_sweep(path)
        return "tune"
    from .spec import load_spec

    load_spec(path)
    return "train"


def build_entrypoint(spec: str | Path, out: str, data: str | None = None, sets: list[str] | None = None,
                     extra: list[str] | None = None) -> tuple[str, str]:
    """(kind, shell command) run on the cluster; paths are relative to the uploaded project."""
    spec = Path(spec)
    if not spec.is_file():
        raise SpecError(f"spec '{spec}' does not exist", str(spec), "pass a YAML file from jobs/ or tune/")
    kind = spec_kind(spec)
    try:
        rel = spec.resolve().relative_to(PROJECT_ROOT)
    except ValueError:
        raise SpecError(f"spec '{spec}' is outside the project folder that is uploaded", str(spec),
                        f"put the spec under {PROJECT_ROOT} (e.g. jobs/)") from None
    argv = ["python", "-m", "distclust.cli", kind, str(rel), "--out", out]
    if data:
        argv += ["--data", data]
    for s in sets or []:
        argv += ["--set", s]
    argv += extra or []
    return kind, " ".join(shlex.quote(a) for a in argv)


def preflight_spec(spec: str | Path, kind: str, sets: list[str] | None, address: str) -> None:
    """Refuse, before submitting, a train job (or a sweep's base job) the cluster can never place."""
    from .engine import preflight
    from .spec import load_spec

    if kind == "tune":
        from .tuning import load_sweep

        _, base_raw, _ = load_sweep(spec, sets)
        job = load_spec(base_raw)
    else:
        job = load_spec(spec, sets)
    try:
        nodes = preflight.node_resources(address)
    except Exception:  # noqa: BLE001 - an old head without the state API: the job's own check still runs
        return
    if nodes:
        preflight.check_training(job, nodes=nodes)


def submit(spec: str | Path, address: str, out: str, data: str | None = None, sets: list[str] | None = None,
           pip: list[str] | None = None, job_id: str | None = None, extra: list[str] | None = None,
           retry_s: float = 120.0) -> str:
    """Submit a train/tune spec; returns the job id. ``out`` must be on storage the cluster shares."""
    kind, entrypoint = build_entrypoint(spec, out, data, sets, extra)
    preflight_spec(spec, kind, sets, address)
    runtime_env = {"working_dir": str(PROJECT_ROOT), "excludes": EXCLUDES,
                   "env_vars": {"PYTHONUNBUFFERED": "1"}}
    if pip:
        runtime_env["pip"] = list(pip)
    client = _client(address)
    job_id = job_id or f"distclust-{kind}-{Path(spec).stem}-{uuid.uuid4().hex[:6]}"
    deadline = time.time() + retry_s
    while True:  # a freshly started head answers "No available agent" until its job agent is up
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, submission_id=job_id,
                                     metadata={"distclust_spec": str(spec), "distclust_out": out})
        except RuntimeError as e:
            no_agent = "No available agent" in str(e)
            if not no_agent or time.time() > deadline:
                fix = ("the head's dashboard agent never came up: when another Ray runs on the same machine it "
                       "holds the agent's default port 52365, so start this head with its own "
                       "--dashboard-agent-listen-port (and --dashboard-agent-grpc-port, --runtime-env-agent-port, "
                       "--metrics-export-port); see the head's logs/dashboard_agent.log"
                       if no_agent else "check the cluster's dashboard; retry when the head is up")
                raise DistclustError(f"the job server refused the job ({str(e).splitlines()[0][:300]})",
                                     "--address", fix) from None
            time.sleep(2.0)


def status(address: str, job_id: str) -> str:
    try:
        return str(_client(address).get_job_status(job_id).value)
    except RuntimeError as e:
        raise DistclustError(f"no job '{job_id}' on the cluster ({str(e).splitlines()[0][:200]})", "JOB_ID",
                             "list jobs with 'ray job list --address ...' and pass a submission id") from None


def logs(address: str, job_id: str) -> str:
    status(address, job_id)
    return _client(address).get_job_logs(job_id)


def stop(address: str, job_id: str) -> bool:
    status(address, job_id)
    return bool(_client(address).stop_job(job_id))


def follow(address: str, job_id: str, printer=print, poll_s: float = 1.0, timeout_s: float | None = None) -> str:
    """Stream the job's logs until it ends; returns the final status."""
    client = _client(address)
    status(address, job_id)

    async def tail():
        async for chunk in client.tail_job_logs(job_id):
            printer(chunk.rstrip("\n"))

    try:
        asyncio.run(asyncio.wait_for(tail(), timeout_s) if timeout_s else tail())
    except (asyncio.TimeoutError, Exception):  # the log stream ends or breaks: fall back to polling
        pass
    t0 = time.time()
    while True:
        st = status(address, job_id)
        if st in TERMINAL or (timeout_s and time.time() - t0 > timeout_s):
            return st
        time.sleep(poll_s)


def job_message(address: str, job_id: str) -> str:
    """The job server's own message for a job (why it failed, e.g. runtime env set-up)."""
    try:
        return str(_client(address).get_job_info(job_id).message or "")
    except Exception:
        return ""
