"""Timing shared by the benchmark scripts (run as ``python benchmarks/<name>.py``)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator


def best_time(fn: Callable[[], object], repeats: int, *, sync: Callable[[], None] = lambda: None) -> float:
    """Seconds of the fastest of ``repeats`` calls of ``fn`` after one warm-up call (which also
    absorbs compilation); ``sync`` waits for queued device work (e.g. ``torch.cuda.synchronize``)."""
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t)
    return best


@contextlib.contextmanager
def busy(procs: int) -> Iterator[None]:
    """``procs`` Python processes spinning on the CPU while the block runs (ours, ended by pid)."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(procs)]
    try:
        time.sleep(2.0 if procs else 0)
        yield
    finally:
        for p in spinners:
            p.kill()
            p.wait()


def load_average() -> str:
    """The machine's load averages (1, 5, 15 min) as one line, for the record beside a figure."""
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
