"""Shared helpers for benchmark scripts: dataset paths, a peak-memory sampler, result files."""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATASETS = Path(os.environ.get("DISTCLUST_DATASETS", ROOT.parent / "shared" / "datasets"))
RESULTS = ROOT / "bench" / "results"


def dataset(name: str) -> Path:
    p = DATASETS / name
    if not p.exists():
        raise SystemExit(f"benchmark data {p} not found: set DISTCLUST_DATASETS to the folder holding {name}")
    return p


class PeakMemory:
    """Samples the summed RSS of this process and every Ray process on the machine."""

    def __init__(self, interval: float = 0.5):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def _sample(self) -> int:
        import psutil

        total = 0
        me = os.getpid()
        for p in psutil.process_iter(["pid", "name", "cmdline", "memory_info"]):
            try:
                cmd = " ".join(p.info["cmdline"] or [])
                if p.info["pid"] == me or "ray::" in cmd or "ray/" in cmd or "raylet" in cmd:
                    total += p.info["memory_info"].rss
            except Exception:
                continue
        return total

    def __enter__(self):
        def loop():
            while not self._stop.is_set():
                self.peak = max(self.peak, self._sample())
                time.sleep(self.interval)

        self._t = threading.Thread(target=loop, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()

    @property
    def peak_gib(self) -> float:
        return self.peak / 2 ** 30


def save(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    print(json.dumps(result, indent=1, default=str))
    return path
