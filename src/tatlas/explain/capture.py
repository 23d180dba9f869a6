"""Attention weights of a live model, read from the one shared :class:`~tatlas.nn.attention.Attention`.

:func:`attention_weights` is a context manager: while it is active, the attention modules it covers
run their explicit-softmax path (``return_weights=True``) and record the weights ``[*, H, T, S]``
of every call; outside it nothing is installed, so the normal (SDPA) path pays nothing. The swap is
an instance attribute (``module.forward``) set on entry and deleted on exit, no flag read per call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from torch import Tensor, nn

from ..nn.attention import Attention


@contextlib.contextmanager
def attention_weights(model: nn.Module, where: Callable[[str], bool] | None = None
                      ) -> Iterator[dict[str, list[Tensor]]]:
    """Record ``{module name: [weights of each call]}`` for every :class:`Attention` in ``model``
    whose name passes ``where`` (all of them by default)."""
    records: dict[str, list[Tensor]] = {}
    patched = []
    for name, module in model.named_modules():
        if not isinstance(module, Attention) or (where is not None and not where(name)):
            continue

        def forward(*args, _m=module, _name=name, **kwargs):
            if kwargs.get("return_weights"):
                return type(_m).forward(_m, *args, **kwargs)
            out, weights = type(_m).forward(_m, *args, **{**kwargs, "return_weights": True})
            records.setdefault(_name, []).append(weights.detach().float().cpu())
            return out

        module.forward = forward
        patched.append(module)
    try:
        yield records
    finally:
        for module in patched:
            del module.forward
