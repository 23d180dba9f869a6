"""How much memory a device has left, and the one check that refuses an allocation it cannot hold.

Sizes a user types (a model width, beams, samples, a cache length) become tensors whose bytes are
known before they exist; :func:`check_fits` compares them with what the device has free and raises
:class:`MemoryError` with one line naming both, instead of letting the allocator try (and the
machine swap) or fail with a traceback from deep inside torch.
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

import torch

__all__ = ["available_bytes", "check_fits", "human_bytes", "release_free_heap"]


def human_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _cgroup_free() -> int | None:
    """Bytes left under this process's cgroup (v2) memory limit, if it has one."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text())
    except (OSError, ValueError):
        return None


def _host_free() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def available_bytes(device: torch.device | str | None = None) -> int | None:
    """Bytes ``device`` can still allocate (``None``: unknown, or no limit as on ``meta``). The CPU:
    the smaller of the host's available memory and what the cgroup limit leaves. CUDA: the
    device's free memory plus what torch's caching allocator holds unused."""
    device = torch.device(device if device is not None else "cpu")
    if device.type == "meta":
        return None
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type != "cpu":
        return None
    known = [n for n in (_host_free(), _cgroup_free()) if n is not None]
    return max(0, min(known)) if known else None


def check_fits(nbytes: int, what: str, device: torch.device | str | None = None) -> None:
    """Raise :class:`MemoryError` when ``what`` (``nbytes`` bytes) cannot fit in what ``device`` has
    free: ``"the KV cache of 100000 beams x 160 tokens needs 1.6 TB; the CPU has 12.3 GB free"``."""
    free = available_bytes(device)
    if free is not None and nbytes > free:
        where = torch.device(device if device is not None else "cpu").type.upper()
        raise MemoryError(f"{what} needs {human_bytes(nbytes)}; the {where} has {human_bytes(free)} free")


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim``, or ``None`` (another C library)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_heap() -> bool:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim(0)``); whether it could.
    Loading a model makes and frees many temporaries (de-quantised blocks, repacked copies); glibc
    keeps the freed memory in the process, resident, where the survivors fragment the heap: after
    loading SmolLM2-135M's GGUF onto its blocks, 238 MB of 577 were such free memory (16 ms to
    release). Call it once a model is loaded, not in a loop: memory given back costs a page fault
    per 4 kB when it is used again."""
    trim = _malloc_trim()
    return bool(trim is not None and trim(0))
