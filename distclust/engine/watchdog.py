"""The stall watchdog: a run that makes no progress for ``stall_timeout_s`` fails, naming what waits.

Workers beat a tiny actor (``ProgressBoard``, 0 CPUs) at most every few seconds while
they finish steps or global passes; the driver runs the blocking call (``trainer.fit``,
an assignment) in a thread and polls the board. With no beat for the timeout, it asks
Ray what is pending (placement groups, actors and tasks waiting for resources), stops
the run's controller, and raises one paragraph instead of waiting forever.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from typing import Callable

from ..errors import DistclustError
from .ray_setup import state_api_address

POLL_S = 2.0


class StallError(DistclustError):
    """The run stopped making progress."""


class _Board:
    def __init__(self):
        self.beats = 0
        self.last: dict[int, int] = {}

    def beat(self, rank: int, step: int) -> None:
        self.beats += 1
        self.last[rank] = step

    def state(self) -> tuple[int, dict]:
        return self.beats, dict(self.last)


def make_board():
    """A fresh progress board actor for one run (no CPU; lives as long as the driver)."""
    import ray

    return ray.remote(num_cpus=0, max_concurrency=4)(_Board).remote()


def _fmt_resources(r: dict) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(r.items()) if v) + "}"


def describe_pending() -> str:
    """What the cluster has not been able to schedule, in words (best effort: the state API)."""
    import ray

    parts = []
    try:
        from ray.util.state import list_actors, list_placement_groups, list_tasks

        addr = state_api_address()
        for pg in list_placement_groups(address=addr, filters=[("state", "=", "PENDING")], detail=True, limit=100):
            bundles = [b.get("unit_resources", {}) for b in (pg.bundles or [])]
            if bundles:
                parts.append(f"a placement group of {len(bundles)} bundle{'s' * (len(bundles) != 1)} "
                             f"{_fmt_resources(bundles[0])} (e.g. training workers) waiting for resources")
        actors = list_actors(address=addr, filters=[("state", "=", "PENDING_CREATION")], detail=True, limit=100)
        if actors:
            names = sorted({a.class_name for a in actors})
            parts.append(f"{len(actors)} actor{'s' * (len(actors) != 1)} ({', '.join(names)}) waiting to start")
        tasks = list_tasks(address=addr, filters=[("state", "=", "PENDING_NODE_ASSIGNMENT")], limit=100)
        if tasks:
            names = sorted({t.name for t in tasks})[:3]
            parts.append(f"{len(tasks)} task{'s' * (len(tasks) != 1)} ({', '.join(names)}) waiting for CPUs")
    except Exception as e:  # noqa: BLE001 - the state API needs the dashboard; say what we know
        parts.append(f"(Ray's state API did not answer: {type(e).__name__})")
    total, avail = ray.cluster_resources(), ray.available_resources()
    have = f"the cluster has {total.get('CPU', 0):g} CPU ({avail.get('CPU', 0):g} free)"
    if total.get("GPU"):
        have += f" and {total.get('GPU', 0):g} GPU ({avail.get('GPU', 0):g} free)"
    return ("; ".join(parts) if parts else "nothing is reported pending (a worker may be stuck)") + "; " + have


def stop_train_controllers() -> None:
    """Stop this driver's Ray Train controllers (they live on the driver's node), which ends their
    worker groups, and remove this job's placement groups still waiting for resources: Ray Train's
    own placement-group cleaner does not always run (on a Ray started elsewhere it may not find
    its dashboard), and a pending group left behind would grab the CPUs as soon as they are free."""
    import ray

    try:
        from ray.util.state import list_actors, list_placement_groups

        addr = state_api_address()
        job = ray.get_runtime_context().get_job_id()
        node = ray.get_runtime_context().get_node_id()
        for a in list_actors(address=addr, filters=[("class_name", "=", "TrainController"), ("state", "=", "ALIVE")],
                             detail=True, limit=100):
            if a.job_id == job and a.node_id == node and a.pid:
                os.kill(int(a.pid), signal.SIGKILL)
        from ray._raylet import PlacementGroupID
        from ray.util.placement_group import PlacementGroup, remove_placement_group

        for pg in list_placement_groups(address=addr, filters=[("state", "=", "PENDING")], detail=True, limit=100):
            if pg.creator_job_id == job:
                remove_placement_group(PlacementGroup(PlacementGroupID(bytes.fromhex(pg.placement_group_id))))
    except Exception:  # noqa: BLE001 - best effort: the process exiting ends them too
        pass


def fit_watched(fn: Callable, board, timeout_s: float, key: str, stop: Callable[[], None] = stop_train_controllers,
                what: str = "the run"):
    """``fn()``, failing with StallError once ``board`` has seen no beat for ``timeout_s`` seconds."""
    if board is None or not timeout_s or timeout_s <= 0:
        return fn()
    import ray

    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = e

    th = threading.Thread(target=target, name="distclust-watched", daemon=True)
    th.start()
    last_change, last_state = time.monotonic(), None
    while th.is_alive():
        th.join(POLL_S)
        if not th.is_alive():
            break
        try:
            state = ray.get(board.state.remote(), timeout=30)
        except Exception:  # noqa: BLE001 - a slow answer is not progress, nor a reason to fail
            state = last_state
        now = time.monotonic()
        if state != last_state:
            last_state, last_change = state, now
        elif now - last_change > timeout_s:
            pending = describe_pending()
            stop()
            th.join(30)
            raise StallError(f"{what} made no progress for {timeout_s:g} s: {pending}", key,
                             "free or add the resources it waits for (or ask for less: --set scaling.num_workers=… / "
                             f"scaling.cpus_per_worker=…); raise {key} if steps are really this slow, or set it to 0 "
                             "to wait forever")
    if "error" in box:
        raise box["error"]
    return box.get("value")
