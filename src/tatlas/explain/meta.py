"""Forward passes of big presets on the meta device, where tensors have shapes but no values.

A model's forward reads a few values on the host: input checks (``int(tokens.max())``), the number
of image tokens in a prompt, the rows each expert receives. On meta tensors those reads fail.
:class:`MetaValues` keeps a *shadow*: a real CPU copy of every small meta tensor whose value can be
known, because it derives only from the sample input (tokens, positions, masks) and not from a
weight. Reads (``item``, ``tolist``, ``bool``) of a meta tensor answer from its shadow; an operation
with a data-dependent output shape (boolean indexing, ``nonzero``) runs on the shadows; a read of a
value that depends on weights (which meta weights do not have) answers as if it were zeros.

Expert routing depends on weights, so :func:`balanced_experts` makes every
:class:`~tatlas.nn.moe.experts.Experts` layer receive an even share of the tokens: the compute of a
perfectly balanced router, which is what the FLOP count of an MoE at a preset should show.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_unflatten

_SHADOW = "_tatlas_shadow"
_LIMIT = 1 << 22  # elements: larger meta results get no shadow (an activation, not an index)
_READS = {Tensor.item, Tensor.tolist, Tensor.__bool__, Tensor.__int__, Tensor.__float__, Tensor.__index__,
          Tensor.numpy}
_META = torch.device("meta")


def shadow(t: Tensor) -> Tensor | None:
    """The CPU value behind meta tensor ``t``, if it is known."""
    return getattr(t, _SHADOW, None)


def with_shadow(t: Tensor, value: Tensor) -> Tensor:
    setattr(t, _SHADOW, value)
    return t


def _is_meta_device(x) -> bool:
    return (isinstance(x, torch.device) and x.type == "meta") or x == "meta"


def _to_cpu(leaf, zeros: bool):
    """A leaf of an operation's arguments, with meta tensors replaced by their shadows (or by zeros
    when ``zeros`` and there is none) and the meta device by the CPU."""
    if isinstance(leaf, Tensor) and leaf.is_meta:
        s = shadow(leaf)
        if s is None and zeros:
            s = torch.zeros(leaf.shape, dtype=leaf.dtype)
        return s
    if isinstance(leaf, (str, torch.device)) and _is_meta_device(leaf):
        return torch.device("cpu")
    return leaf


def _inplace(func) -> bool:
    name = getattr(func, "__name__", "")
    return name == "__setitem__" or (name.endswith("_") and not name.startswith("_"))


class MetaValues(TorchFunctionMode):
    """While active, small meta tensors computed from known values carry those values (see the
    module docstring). Only for tracing: every operation on a meta tensor pays a Python check."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _READS:
            t = args[0]
            if isinstance(t, Tensor) and t.is_meta:
                s = shadow(t)
                return func(s if s is not None else torch.zeros(t.shape, dtype=t.dtype), *args[1:], **kwargs)
            return func(*args, **kwargs)
        flat, spec = tree_flatten((args, kwargs))
        metas = [x for x in flat if isinstance(x, Tensor) and x.is_meta]
        to_meta = any(_is_meta_device(x) for x in flat if isinstance(x, (str, torch.device)))
        if not metas and not to_meta:
            return func(*args, **kwargs)
        known = all(shadow(x) is not None for x in metas)
        try:
            out, failed = func(*args, **kwargs), None
        except (RuntimeError, NotImplementedError) as e:  # a data-dependent shape: needs values
            out, failed = None, e
        if failed is None and not known:
            if _inplace(func) and metas and isinstance(args[0], Tensor) and shadow(args[0]) is not None:
                delattr(args[0], _SHADOW)  # written from an unknown value: its shadow is stale
            return out
        out_leaves = tree_flatten(out)[0] if failed is None else []
        if failed is None and (not any(isinstance(x, Tensor) for x in out_leaves) and func.__name__ != "__setitem__"
                               or any(isinstance(x, Tensor) and x.numel() > _LIMIT for x in out_leaves)):
            return out  # no tensor to shadow, or too big to shadow
        cpu_args, cpu_kwargs = tree_unflatten([_to_cpu(x, zeros=not known) for x in flat], spec)
        try:
            cpu_out = func(*cpu_args, **cpu_kwargs)
        except Exception:  # noqa: BLE001  (the shadow is a best effort: the meta result stands)
            if failed is not None:
                raise failed from None
            return out
        if failed is not None:
            if _inplace(func):
                return args[0] if func.__name__ != "__setitem__" else None
            out = tree_unflatten([x.to(_META) if isinstance(x, Tensor) else x for x in tree_flatten(cpu_out)[0]],
                                 tree_flatten(cpu_out)[1])
        if known:
            for m, c in zip(tree_flatten(out)[0], tree_flatten(cpu_out)[0], strict=False):
                if isinstance(m, Tensor) and m.is_meta and isinstance(c, Tensor):
                    with_shadow(m, c)
        return out


@contextlib.contextmanager
def balanced_experts(model: nn.Module) -> Iterator[None]:
    """Every dropless :class:`~tatlas.nn.moe.experts.Experts` layer of ``model`` receives an even
    share of its rows (its routing depends on weights a meta model does not have)."""
    from ..nn.moe.experts import Experts

    patched = []
    for module in model.modules():
        if isinstance(module, Experts):
            original = module.run_sorted

            def run_sorted(xs, counts, scale=None, _run=original):
                rows, n = xs.shape[0], counts.shape[0]
                even = torch.full((n,), rows // n, dtype=counts.dtype)
                even[: rows % n] += 1
                return _run(xs, with_shadow(even.to(_META), even), scale)

            module.run_sorted = run_sorted
            patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            del module.run_sorted
