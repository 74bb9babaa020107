"""Pre-flight: refuse at once a job the cluster can never place.

Ray waits forever for resources no node has (unless an autoscaler adds nodes). Before
any work starts, ``train``, ``tune``, ``assign`` and ``submit`` check that each asked-for
bundle (a training worker's CPUs/GPUs, an assign actor's CPUs) fits on some alive node,
packing them first-fit as Ray's placement would, and otherwise fail with one paragraph:
what was asked, what the cluster has, and which ``--set scaling.…`` would fit.
"""
from __future__ import annotations

import math
import warnings

from ..errors import DistclustError


class PreflightError(DistclustError):
    """The job asks for resources the cluster does not have."""


def node_resources(address: str | None = None) -> list[dict[str, float]]:
    """Total resources of each alive node: the connected Ray's, or a cluster's by dashboard address."""
    if address is None:
        import ray

        return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]
    from ray.util.state import list_nodes

    return [dict(n.resources_total) for n in list_nodes(address=address, limit=10_000)
            if str(n.state).upper() == "ALIVE"]


def fits(nodes: list[dict[str, float]], bundle: dict[str, float], count: int) -> int:
    """How many of ``count`` bundles fit on ``nodes`` (first-fit, each bundle on one node)."""
    free = [dict(n) for n in nodes]
    placed = 0
    for _ in range(count):
        for n in free:
            if all(n.get(k, 0.0) + 1e-9 >= v for k, v in bundle.items()):
                for k, v in bundle.items():
                    n[k] = n.get(k, 0.0) - v
                placed += 1
                break
    return placed


def _describe(nodes: list[dict[str, float]]) -> str:
    cpu = sum(n.get("CPU", 0) for n in nodes)
    gpu = sum(n.get("GPU", 0) for n in nodes)
    per = ", ".join(f"{n.get('CPU', 0):g} CPU" + (f" + {n.get('GPU', 0):g} GPU" if n.get("GPU") else "")
                    for n in nodes[:6]) + (" …" if len(nodes) > 6 else "")
    return f"{len(nodes)} node{'s' * (len(nodes) != 1)} with {cpu:g} CPU and {gpu:g} GPU in all ({per})"


def check_bundles(nodes: list[dict[str, float]], bundle: dict[str, float], count: int, what: str,
                  keys: dict[str, str], autoscaling: bool = False) -> None:
    """Raise PreflightError (or warn, with an autoscaler) unless ``count`` × ``bundle`` fit on ``nodes``.

    ``keys`` maps "count" / "CPU" / "GPU" to the spec keys a user would change.
    """
    placed = fits(nodes, bundle, count)
    if placed >= count:
        return
    ask = ", ".join(f"{k}: {v:g}" for k, v in bundle.items())
    fixes = []
    if bundle.get("GPU") and not any(n.get("GPU") for n in nodes):
        fixes.append(f"--set {keys.get('use_gpu', 'scaling.use_gpu')}=false (the cluster has no GPU)")
    if placed >= 1 and "count" in keys:
        fixes.append(f"--set {keys['count']}={placed}")
    if "CPU" in keys and bundle.get("CPU"):
        # the largest CPUs per bundle with which all `count` fit
        best_node = max((n.get("CPU", 0) for n in nodes), default=0)
        for c in sorted({math.floor(n.get("CPU", 0) / math.ceil(count / max(len(nodes), 1)) * 4) / 4
                         for n in nodes} | {0.5, 0.25}, reverse=True):
            if 0 < c <= best_node and fits(nodes, {**bundle, "CPU": c}, count) >= count:
                fixes.append(f"--set {keys['CPU']}={c:g}")
                break
    msg = (f"{what} asks for {count} × {{{ask}}} but the cluster can place only {placed}: it has "
           f"{_describe(nodes)}, and Ray would wait for the rest forever")
    fix = ("fit the job to the cluster: " + " or ".join(fixes) if fixes else
           "add nodes with these resources, or ask for less") + \
        "; on a cluster whose autoscaler adds nodes, set scaling.autoscaling: true"
    if autoscaling:
        warnings.warn(msg + " (waiting for the autoscaler)", stacklevel=2)
        return
    raise PreflightError(msg, "scaling", fix)


def check_training(spec, address: str | None = None, nodes: list[dict] | None = None) -> None:
    """Training workers of ``spec`` fit on the connected cluster (or the one at ``address``, or ``nodes``)."""
    sc = spec.scaling
    bundle = {"CPU": float(sc.cpus_per_worker)}
    if sc.use_gpu:
        bundle["GPU"] = float(sc.gpus_per_worker)
    check_bundles(nodes if nodes is not None else node_resources(address), bundle, sc.num_workers, f"the job '{spec.name}'",
                  {"count": "scaling.num_workers", "CPU": "scaling.cpus_per_worker", "use_gpu": "scaling.use_gpu"},
                  autoscaling=sc.autoscaling)
