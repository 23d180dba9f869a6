"""Transformer Atlas: the landmark transformer systems on one set of shared PyTorch blocks.

Entry points: :func:`create` (a registered system from an exact preset name), :func:`load` (our
checkpoint or a foreign one), :func:`save`, :func:`load_weights`, :func:`optimize` (the inference fast path) and :func:`systems`.
"""

from .api import create, load, load_weights, optimize, save
from .models.registry import get_system, systems
from .nn.threads import apply_thread_setting

apply_thread_setting(strict=False)  # TATLAS_THREADS=N (the command line reports a bad value)

__version__ = "0.1.0"
__all__ = ["create", "get_system", "load", "load_weights", "optimize", "save", "systems", "__version__"]
