"""Input checks the models share, each raising a one-line ``ValueError`` that names what was
expected and what came."""

from __future__ import annotations

import torch
from torch import Tensor

_TOKEN_DTYPES = (torch.int32, torch.int64)  # what nn.Embedding takes


def check_tokens(tokens: Tensor, vocab_size: int, *, what: str = "tokens") -> None:
    """``tokens``: an ``int32``/``int64`` tensor ``[B, T]`` of ids in ``0..vocab_size - 1``. The
    range is read on the host (one synchronisation), except while compiling or on the meta device."""
    if tokens.dim() != 2 or tokens.dtype not in _TOKEN_DTYPES:
        raise ValueError(f"{what}: expected an integer tensor [B, T], got {tokens.dtype} {list(tokens.shape)}")
    if torch.compiler.is_compiling() or tokens.is_meta or tokens.numel() == 0:
        return
    bad = (tokens < 0) | (tokens >= vocab_size)
    if bad.any():
        raise ValueError(f"{what}: expected ids in 0..{vocab_size - 1}, got {int(tokens[bad][0])}")


def check_finite(x: Tensor, *, what: str = "pixels") -> None:
    """``x``: no NaN or infinity (one would make every output NaN without an error). Read on the host
    (one synchronisation), except while compiling or on the meta device."""
    if torch.compiler.is_compiling() or x.is_meta or x.numel() == 0 or not x.is_floating_point():
        return
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(f"{what}: expected finite values, got {bad} of {x.numel()} NaN or infinite "
                         f"(first: {float(x[~finite][0])})")
