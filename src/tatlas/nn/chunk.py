"""Chunking: apply a function to slices of its inputs along one dimension and join the results, trading
speed for peak memory (as in AlphaFold2's Supplement §1.11.8 "chunking"), or, on the CPU, gaining
speed: a slice whose intermediates stay in the cache (:func:`cache_chunk`) is not written to memory
and read back, and its buffers are not fresh pages each call."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

# The bytes of a slice's widest intermediate that :func:`cache_chunk` aims at: about the L2 cache of
# a core (1-2 MB on current x86 servers). The pair transition of AlphaFold2 (N_res 128, c_z 128, 512
# wide inside), without gradients, 2 threads on an AVX-512 EPYC: 49-51 ms whole; slices of 256, 1024,
# 2048 and 4096 rows (0.5-8 MB inside): 27, 25, 31 and 38 ms; bit-identical results.
CACHE_BYTES = 2 << 20


def chunked(fn: Callable[..., Tensor], size: int | None, *, dim: int = 0) -> Callable[..., Tensor]:
    """Wrap ``fn`` so that every positional tensor argument is cut into pieces of ``size`` along
    ``dim`` (keyword arguments pass whole), and the outputs are joined along ``dim`` (written into one
    preallocated tensor).
    ``size=None`` returns ``fn`` unchanged. All positional tensors must share that dimension's size."""
    if size is None:
        return fn
    if size <= 0:
        raise ValueError(f"chunk size must be positive, got {size}")

    def run(*args: Tensor, **kwargs) -> Tensor:
        lengths = {a.shape[dim] for a in args if isinstance(a, Tensor)}
        if len(lengths) != 1:
            raise ValueError(f"chunked inputs disagree on dimension {dim}: sizes {sorted(lengths)}")
        (n,) = lengths
        if n <= size:  # one piece (or none: an empty dimension passes through fn whole)
            return fn(*args, **kwargs)
        out = None  # the pieces are written into one output (no second copy from concatenating them)
        for start in range(0, n, size):
            width = min(size, n - start)
            piece = fn(*[a.narrow(dim, start, width) if isinstance(a, Tensor) else a for a in args], **kwargs)
            if out is None:
                shape = list(piece.shape)
                shape[dim] = n
                out = piece.new_empty(shape)
            out.narrow(dim, start, width).copy_(piece)
            del piece
        return out

    return run


def cache_chunk(n: int, index_bytes: int) -> int | None:
    """How many of ``n`` indices along a dimension to take a slice at a time when one index's widest
    intermediate takes ``index_bytes``: a slice's about :data:`CACHE_BYTES` (at least one index).
    ``None`` when the whole fits (no chunking)."""
    size = max(1, CACHE_BYTES // max(1, index_bytes))
    return None if size >= n else size
