"""Chunking: apply a function to slices of its inputs along one dimension and join the results, trading
speed for peak memory (as in AlphaFold2's Supplement §1.11.8 "chunking")."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor


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
