"""Transformer Atlas: the landmark transformer systems on one set of shared PyTorch blocks.

Entry points: :func:`create` (a registered system from an exact preset name), :func:`load` (our
checkpoint or a foreign one), :func:`save`, :func:`load_weights`, :func:`optimize` (the inference fast path) and :func:`systems`.
"""

import gc as _gc

from ._openmp import set_spin_before_torch

# before torch loads libgomp: idle OpenMP threads spin ~75 us, not ~7.5 ms, before they sleep (a
# thread spinning at a barrier beside a busy process holds the core its partner needs; tatlas/_openmp.py)
set_spin_before_torch()

# torch's import makes ~170,000 objects that live as long as the process; the collector, running
# while they are made, walks them again and again. Paused for these imports (and frozen for good by
# the command line, tatlas/cli/__init__.py), `import tatlas.cli.main` takes 0.94-1.05 s instead of
# 1.13-1.25 s (AVX-512 EPYC, 2 vCPUs).
_collecting = _gc.isenabled()
_gc.disable()
try:
    from .api import create, load, load_weights, optimize, save
    from .models.registry import get_system, systems
    from .nn.threads import apply_thread_setting
finally:
    # Those objects go to the oldest generation without being walked (freeze then unfreeze moves
    # them in one step): re-enabled with ~170,000 objects in the youngest generation, the collector
    # walked them all at its first chance (97 ms of every `tatlas` command's start; 74 ms after a
    # plain `import tatlas`). Garbage among them is still found, by the next full collection.
    _gc.freeze()
    _gc.unfreeze()
    if _collecting:
        _gc.enable()

apply_thread_setting(strict=False)  # TATLAS_THREADS=N (the command line reports a bad value)

__version__ = "0.1.0"
__all__ = ["create", "get_system", "load", "load_weights", "optimize", "save", "systems", "__version__"]
