"""Demos side by side: each in a process of its own, at most one per core, each with its share of
the cores' threads.

A demo trains a small model: hundreds of small steps, each made of many small parallel regions, so
two threads buy one demo far less than twice the speed (on 2 cores the thread tuner of
:mod:`tatlas.nn.threads` often keeps one). Two demos on one thread each use both cores fully. A
demo's process writes its output (training progress) to ``<report>/<system>/log.txt`` and sends
back its result; one that dies (killed, out of memory) becomes a failure row like a demo that
raised, and the others go on. Processes come from a fork server that has imported torch once, so a
demo starts in milliseconds, not in the seconds that ``import torch`` takes (spawn where there is
no fork server).
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import wait
from pathlib import Path

try:
    import resource
except ImportError:  # not on Windows
    resource = None

from .spec import DemoFailure, DemoOptions, DemoResult

__all__ = ["cpu_count", "failure", "picklable", "plan", "run_parallel"]

BYTES_PER_DEMO = 1.5e9  # the largest demo's peak RSS is ~0.75 GB; room for its allocator's slack


def cpu_count() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _available_memory() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024.0 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def plan(count: int, *, jobs: int | None = None, threads: int | None = None) -> tuple[int, int]:
    """``(processes, threads each)`` for ``count`` demos: by default one process per core (fewer
    when memory is short, never more than the demos), and the cores shared among them unless
    ``threads`` fixes them."""
    cores = cpu_count()
    if jobs is None:
        memory = _available_memory()
        jobs = min(cores, int(memory // BYTES_PER_DEMO) if memory else cores)
    jobs = max(1, min(jobs, count))
    return jobs, threads or max(1, cores // jobs)


def picklable(run: Callable) -> bool:
    """Whether ``run`` can travel to another process (a module-level function can; a closure not)."""
    try:
        pickle.dumps(run)
    except Exception:  # noqa: BLE001  (pickle raises several kinds)
        return False
    return True


def _child(conn, name: str, run: Callable[[DemoOptions], DemoResult], options: DemoOptions, threads: int) -> None:
    """A demo's process: its output into ``log.txt``, ``threads`` threads, its result back."""
    import torch

    log = os.open(options.out_dir / "log.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.stdout = sys.stderr = open(log, "w", buffering=1, closefd=False)  # noqa: SIM115  (lives as long as the process)
    torch.set_num_threads(threads)
    start = time.perf_counter()
    try:
        result = replace(run(options), seconds=time.perf_counter() - start)
    except Exception as e:  # noqa: BLE001  (a failing demo is a row of the report)
        result = failure(name, e, time.perf_counter() - start, options.out_dir)
    if resource is not None:  # ru_maxrss: bytes on macOS, KiB elsewhere
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**30 if sys.platform == "darwin" else 2**20)
        print(f"{name}: {result.seconds:.0f} s, peak RSS {peak:.2f} GiB")
    conn.send(result)
    conn.close()


def _context():
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" not in methods:
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "tatlas", "tatlas.demo"])
    return ctx


def run_parallel(jobs: list[tuple[str, Callable[[DemoOptions], DemoResult], DemoOptions]], processes: int, threads: int,
                 done: Callable[[str, DemoResult | DemoFailure], None]) -> None:
    """Run ``jobs`` (``(name, run, options)``, started in this order) in at most ``processes``
    processes of ``threads`` threads; ``done(name, result)`` sees each result as it comes. On an interrupt the
    running demos are stopped and the interrupt goes on."""
    ctx = _context()
    queue = list(jobs)
    running: dict = {}  # the process's sentinel -> (name, process, its result's pipe, start, report folder)
    try:
        while queue or running:
            while queue and len(running) < processes:
                name, run, options = queue.pop(0)
                receive, send = ctx.Pipe(duplex=False)
                process = ctx.Process(target=_child, args=(send, name, run, options, threads), name=f"demo-{name}")
                process.start()
                send.close()
                running[process.sentinel] = (name, process, receive, time.perf_counter(), options.out_dir)
            for ready in wait([*running]):
                name, process, receive, start, out_dir = running.pop(ready)
                result = None
                try:
                    if receive.poll():
                        result = receive.recv()
                except (EOFError, OSError, pickle.UnpicklingError):
                    result = None
                process.join()
                receive.close()
                if result is None:
                    result = _died(name, process.exitcode, time.perf_counter() - start, out_dir)
                done(name, result)
    finally:
        for name, process, receive, _, _ in running.values():
            process.terminate()
            process.join()
            receive.close()


def failure(name: str, error: BaseException, seconds: float, folder: Path) -> DemoFailure:
    """A demo that raised ``error``: a one-line row; its traceback goes to ``folder/error.txt``."""
    (folder / "error.txt").write_text("".join(traceback.format_exception(error)))
    message = " ".join(str(error).split())
    return DemoFailure(system=name, error=f"{type(error).__name__}: {message}" if message else type(error).__name__,
                       seconds=seconds, artifacts={"traceback": "error.txt"})


def _died(name: str, exitcode: int | None, seconds: float, out_dir: Path) -> DemoFailure:
    why = f"killed by signal {-exitcode}" if exitcode is not None and exitcode < 0 else f"exit status {exitcode}"
    return DemoFailure(system=name, error=f"the demo's process died ({why}); its output is in {name}/log.txt",
                       seconds=seconds, artifacts={"log": "log.txt"} if (out_dir / "log.txt").is_file() else {})
