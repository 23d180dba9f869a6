"""How long an idle OpenMP thread spins before it sleeps: set before torch is loaded.

torch's CPU kernels (and tatlas' C kernel, which shares torch's ``libgomp``) run on GNU OpenMP's
thread pool. A thread that reaches the end of a parallel region first spins, waiting for the others,
``GOMP_SPINCOUNT`` times (default 300,000 ``pause`` instructions: ~7.5 ms on an AVX-512 EPYC, 25 ns
a pause) before it sleeps. On a quiet machine the others arrive within microseconds and the spin
costs nothing. Beside a busy process, on a machine with as many cores as threads, the thread the
others wait for is often the one the scheduler has not run: the spinning thread then holds the core
it needs for up to 7.5 ms, region after region. Measured on 2 vCPUs beside one busy process: a stack
of 576 x 1024 GEMMs 139-206 ms a pass with the default, 121-131 ms at 3,000 (121-125 with
``OMP_WAIT_POLICY=passive``); the whole ``tatlas transcribe`` of six clips 6.25-6.54 s against
5.10-5.19 s. Quiet, 3,000 spins (~75 us) still cover the gaps between back-to-back regions: the same
transcription 3.27-3.60 s either way, a tiny model's decode within 3% (passive costs it 14%).

libgomp reads the setting once, when it is loaded (``import torch``); there is no call to change it
later. So ``import tatlas`` sets it only when torch is not loaded yet, and never over a user's own
``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY``; ``TATLAS_SPIN=default`` leaves libgomp's default. This
module imports nothing heavy, so that ``tatlas/__init__.py`` can run it first.
"""

from __future__ import annotations

import os
import sys

SPIN_COUNT = 3000


def spin_setting(environ: dict[str, str] | None = None) -> str | None:
    """The ``GOMP_SPINCOUNT`` tatlas would set in ``environ`` (default: this process's), or ``None``
    when it leaves it alone: the user set ``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY``, or
    ``TATLAS_SPIN=default``. ``TATLAS_SPIN=N`` asks for ``N`` spins; another value is a one-line
    ``ValueError``."""
    env = os.environ if environ is None else environ
    if "GOMP_SPINCOUNT" in env or "OMP_WAIT_POLICY" in env:
        return None
    value = env.get("TATLAS_SPIN", "").strip().lower()
    if value == "default":
        return None
    if not value:
        return str(SPIN_COUNT)
    if not value.isdigit():
        raise ValueError(f"TATLAS_SPIN: expected a whole number of spins or 'default', got {value!r}")
    return str(int(value))


def set_spin_before_torch() -> bool:
    """Put :func:`spin_setting` into this process's environment if torch is not loaded yet (then it
    takes effect, and child processes inherit it). Whether it was set; a bad ``TATLAS_SPIN`` sets
    nothing here (the command line reports it)."""
    if "torch" in sys.modules:
        return False
    try:
        value = spin_setting()
    except ValueError:
        return False
    if value is None:
        return False
    os.environ["GOMP_SPINCOUNT"] = value
    return True
