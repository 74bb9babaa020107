"""Connecting to Ray: a local Ray on a laptop, or an existing cluster by address.

Environment defaults that keep Ray quiet and working on small machines live
here, set before Ray is imported anywhere in the process.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os

from ..errors import DistclustError

_ENV_DEFAULTS = {
    "RAY_AUTH_MODE": "disabled",          # silences the token-auth notice on local clusters
    "RAY_TRAIN_V2_ENABLED": "1",
    "RAY_DEDUP_LOGS": "1",
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "0",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    # Train V2 workers hand each report to the controller through a queue of size 1 that
    # is drained on every health check (2 s by default): per-epoch reports would wait ~1-2 s.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",  # else every worker print() reaches the driver twice
    # Ray Data 2.60's V2 Parquet reader lists files and reads footers in extra tasks and actors,
    # each a new worker process: 6-10 s before a training worker's first batch on 2 cores, against
    # 0.1 s with the V1 reader (measured; see docs/architecture.md, "traps").
    "RAY_DATA_USE_DATASOURCE_V2": "0",
    # the raylet waits only a few seconds for its dashboard agent (a Python process) and then aborts
    # ("Check failed ... WaitForDashboardAgentPorts"); on a busy 2-core machine the agent's imports take
    # longer, so ray.init failed with "The current node timed out during startup" (measured)
    "RAY_agent_register_timeout_ms": "180000",
    "RAY_DASHBOARD_STARTUP_TIMEOUT_S": "300",   # the dashboard (60 s by default) likewise
}


def set_env_defaults() -> None:
    for k, v in _ENV_DEFAULTS.items():
        os.environ.setdefault(k, v)


set_env_defaults()


def ensure_ray(address: str | None = None, num_cpus: int | None = None, quiet: bool = True):
    """Start or join Ray once per process; ``address`` None means RAY_ADDRESS or a new local Ray."""
    import ray

    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        check_reachable(address)
    kwargs = dict(logging_level=logging.WARNING, log_to_driver=True)
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            # "local": always a new Ray; without it ray.init joins whatever /tmp/ray/ray_current_cluster names
            # (another process's Ray on this machine) and then rejects num_cpus
            with _own_dashboard() as dash:
                ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, **kwargs, **dash)
    except (ConnectionError, RuntimeError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DistclustError(f"cannot connect to Ray at '{address or 'local'}' ({msg})", "scaling.address / RAY_ADDRESS",
                             "start the cluster (ray start --head) or fix the address; leave it unset for a local Ray")
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    return ray


_API_ADDRESS: str | None = None   # the dashboard of the local Ray this process started


def state_api_address() -> str | None:
    """The address for ``ray.util.state`` calls from this process: its own local Ray's dashboard, or
    None (Ray's own lookup: RAY_API_SERVER_ADDRESS / RAY_ADDRESS, or the one Ray on this machine)."""
    return _API_ADDRESS


@contextlib.contextmanager
def _own_dashboard():
    """Pin a new local Ray's dashboard to a free port, named in RAY_API_SERVER_ADDRESS while Ray starts.

    Ray Train's placement-group cleaner (and any state-API call) finds the dashboard by looking for
    "the" Ray on this machine; with a second local Ray running (two jobs on one laptop, a test
    session beside a CLI run) it fails with "Found multiple active Ray instances", prints a
    traceback per run and stops cleaning. The raylet and every worker inherit the environment of
    the process that starts Ray, so the variable is set for ``ray.init`` only: Ray's processes
    find their own dashboard, and this process's later subprocesses (which may start their own
    Ray) do not inherit it. A user's own setting is left alone.
    """
    global _API_ADDRESS
    import socket

    if os.environ.get("RAY_API_SERVER_ADDRESS"):
        yield {}
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    os.environ["RAY_API_SERVER_ADDRESS"] = url
    try:
        yield {"dashboard_host": "127.0.0.1", "dashboard_port": port}
        _API_ADDRESS = url
    finally:
        os.environ.pop("RAY_API_SERVER_ADDRESS", None)


def check_reachable(address: str, timeout: float = 3.0) -> None:
    """Fail fast (ray.init would retry for minutes) when a host:port address does not answer."""
    import socket

    if address in ("auto", "local") or "://" in address and not address.startswith(("ray://", "http://", "https://")):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise DistclustError(f"Ray address '{address}' is not host:port", "scaling.address / RAY_ADDRESS",
                             "write it as HOST:PORT (e.g. 10.0.0.5:6379), or leave it unset for a local Ray")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise DistclustError(f"Ray address '{address}' is unreachable ({e.strerror or e})",
                             "scaling.address / RAY_ADDRESS",
                             "start the cluster (ray start --head) or fix the address; leave it unset for a local Ray")


def local_cpus(num_workers: int, cpus_per_worker: float, requested: int | None) -> int:
    """Logical CPUs for a local Ray: enough for every worker plus one for Ray Data's read tasks
    (training workers holding every CPU make streaming reads hang: docs/architecture.md)."""
    if requested:
        return requested
    return max(os.cpu_count() or 1, math.ceil(num_workers * cpus_per_worker) + 1)
