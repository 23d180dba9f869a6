"""Timing shared by the benchmark scripts (run as ``python benchmarks/<name>.py``)."""

from __future__ import annotations

import argparse
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


def read_bandwidth(gigabytes: float = 2.0, repeats: int = 5, device: str = "cpu") -> float:
    """Bytes/s at which the machine reads a weight matrix during a decode step: float32
    matrix-vector products over a ``gigabytes`` matrix (far larger than any cache), counting the
    matrix's bytes, best of ``repeats``, by the fastest kernel at hand (``torch.mv``, and on the CPU
    oneDNN's on its packed layout and tatlas' own matvec kernel, both of which read faster, the
    latter also on the matrix in 2 MB pages). A batch-1 decode step cannot beat ``bytes of weights /
    this``."""
    import torch

    from tatlas.nn import matvec, memory

    cols = 8192
    w = torch.ones(int(gigabytes * 2**30) // (4 * cols), cols, device=device)
    x = torch.ones(cols, device=device)
    sync = torch.cuda.synchronize if w.is_cuda else (lambda: None)
    kernels, packed = [lambda: torch.mv(w, x)], None
    if not w.is_cuda and torch.backends.mkldnn.is_available():
        packed, row = torch.ops.mkldnn._reorder_linear_weight(w, 1), x[None]
        kernels.append(lambda: torch.ops.mkldnn._linear_pointwise(row, packed, None, "none", [], ""))
    if not w.is_cuda and matvec.kernel() is not None:
        kernels.append(lambda: matvec.matvec(x[None], w))
    seconds = min(best_time(fn, repeats, sync=sync) for fn in kernels)
    del kernels, packed
    if not w.is_cuda and matvec.kernel() is not None:
        # the same matrix in 2 MB pages, where a decode's weights are (tatlas.nn.memory.to_huge_pages_)
        huge = memory.huge_pages_empty(w.numel() * w.element_size())
        if huge is not None:
            w = huge.view(torch.float32).view(w.shape).fill_(1.0)
            seconds = min(seconds, best_time(lambda: matvec.matvec(x[None], w), repeats))
    return w.numel() * w.element_size() / seconds


def decode_bytes(model: object) -> int:
    """Bytes of weights one batch-1 decode step of a decoder reads: every parameter once (a tied
    output projection is the embedding, read once), except an untied input embedding, of which
    one row per token is read."""
    embed = getattr(model, "embed", None)
    head = getattr(model, "lm_head", None)
    total = sum(p.numel() * p.element_size() for p in model.parameters())  # shared ones count once
    if embed is not None and head is not None and head.weight is not embed.weight:
        w = embed.weight
        total -= w.numel() * w.element_size() - w.shape[1] * w.element_size()
    return total


def add_contend(ap: argparse.ArgumentParser) -> None:
    """The ``--contend N`` option every benchmark has: N busy processes during the measurement
    (``--busy`` is ``--contend 1``, the spelling of the earlier RESULTS.md commands)."""
    ap.add_argument("--contend", type=int, default=0, metavar="N",
                    help="N CPU-bound processes (`while True: pass`) spin during the measurement")
    ap.add_argument("--busy", dest="contend", action="store_const", const=1, help="the same as --contend 1")


@contextlib.contextmanager
def contended(procs: int) -> Iterator[None]:
    """:func:`busy` with the machine's state printed at the start and the end of the block, so that
    every figure is recorded beside the state it was measured in."""
    with busy(procs):
        print(f"state: {procs} busy process(es) beside the measurement; {load_average()}", flush=True)
        try:
            yield
        finally:
            print(f"state at the end: {load_average()}", flush=True)


def pick(script: str, given: str, known: object) -> list[str]:
    """The comma-separated names ``given`` (rows, benchmarks, cases ...), each one of ``known``, or
    ``SystemExit`` with one line naming the unknown ones and the choices."""
    names = given.split(",")
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise SystemExit(f"{script}: unknown {unknown}; expected some of {', '.join(known)}")
    return names


def load_average() -> str:
    """The machine's load averages (1, 5, 15 min) as one line, for the record beside a figure."""
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
