"""Timing shared by the benchmark scripts (run as ``python benchmarks/<name>.py``)."""

from __future__ import annotations

import time
from collections.abc import Callable


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
