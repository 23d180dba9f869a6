"""A CPU inference fast path for linear layers: the same ``x @ W^T + b``, computed by oneDNN's
matmul (``torch.ops.mkldnn._linear_pointwise``) instead of the BLAS sgemm behind ``F.linear``.

On the AMD EPYC machines this project runs on, MKL's sgemm takes its generic code path and oneDNN
is about twice as fast for transformer-sized matrices (``[1600, 768] x [768, 3072]``: 38 ms vs
17 ms on two threads), at float32 precision (no reduced-precision math: max relative difference
to a float64 product ~1e-6, like MKL's). oneDNN's op has no backward, so the path is taken only
when no gradient is wanted; everything else (CUDA, other dtypes, autograd, torch.compile) calls
``F.linear`` unchanged.

Use as a context: ``with cpu_inference(x): model(x)``. The shared blocks (attention, MLPs) call
their projections through :func:`apply_linear` / :func:`linear`, which take the oneDNN path while
the context is entered in this thread; modules, parameters and state dicts do not change. A
projection replaced by another module (``Int8Linear``) or carrying hooks is called as it is; other
modules' ``nn.Linear`` layers are not routed. (A ``TorchFunctionMode`` would route every
``F.linear`` without touching the blocks, but it sees every torch call, ~1.5 µs each: 0.8 ms of a
5.4 ms Whisper decode step.)
"""

from __future__ import annotations

import contextlib
import functools
import threading

import torch
import torch.nn.functional as F
from torch import Tensor

_DTYPES = (torch.float32, torch.bfloat16)


@functools.lru_cache(maxsize=1)
def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


_local = threading.local()  # depth: how many cpu_inference contexts this thread is in


def _routing() -> bool:
    return getattr(_local, "depth", 0) > 0 and not torch.compiler.is_compiling()


class CPUInference(contextlib.AbstractContextManager):
    """The context :func:`cpu_inference` returns: the blocks' projections go through oneDNN."""

    def __enter__(self):
        _local.depth = getattr(_local, "depth", 0) + 1
        return self

    def __exit__(self, *exc):
        _local.depth -= 1
        return None


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)``, by oneDNN inside :func:`cpu_inference` when the tensors qualify."""
    if _routing() and _routable(x, weight, bias):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


def apply_linear(layer: torch.nn.Module, x: Tensor) -> Tensor:
    """``layer(x)``; a plain ``nn.Linear`` without hooks goes by oneDNN inside :func:`cpu_inference`."""
    if (_routing() and type(layer) is torch.nn.Linear and not (layer._forward_hooks or layer._forward_pre_hooks)
            and _routable(x, layer.weight, layer.bias)):
        return torch.ops.mkldnn._linear_pointwise(x, layer.weight, layer.bias, "none", [], "")
    return layer(x)


def _routable(x: Tensor, weight: Tensor, bias: Tensor | None) -> bool:
    tensors = (x, weight) if bias is None else (x, weight, bias)
    return (
        x.device.type == "cpu" and weight.device.type == "cpu" and x.dtype in _DTYPES
        and all(t.dtype == x.dtype for t in tensors) and weight.dim() == 2 and x.dim() >= 2
        and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
        and all(type(t) in (Tensor, torch.nn.Parameter) for t in tensors)  # no tensor subclasses (DTensor ...)
    )


# our activation name -> oneDNN's post-op (attribute, algorithm): computed in the matmul's epilogue
_FUSED_ACTS = {"gelu": ("gelu", "none"), "gelu_tanh": ("gelu", "tanh")}


def linear_act(x: Tensor, layer: torch.nn.Linear, act: str) -> Tensor | None:
    """``act(linear(x))`` in one oneDNN call (the activation fused into the matmul: one pass over
    the ``[*, hidden]`` output fewer, bit-identical to the two steps), when inside
    :func:`cpu_inference` and the tensors qualify; else ``None`` (the caller does the two steps)."""
    if (not _routing() or act not in _FUSED_ACTS or type(layer) is not torch.nn.Linear
            or not _routable(x, layer.weight, layer.bias)):
        return None
    attr, algorithm = _FUSED_ACTS[act]
    return torch.ops.mkldnn._linear_pointwise(x, layer.weight, layer.bias, attr, [], algorithm)


def cpu_inference(x: Tensor, *, enabled: bool = True) -> contextlib.AbstractContextManager:
    """:class:`CPUInference` when ``x`` is a CPU tensor, no gradient is being recorded, oneDNN is
    available and we are not being compiled; otherwise a no-op context."""
    use = (enabled and not torch.compiler.is_compiling() and x.device.type == "cpu" and not torch.is_grad_enabled()
           and onednn_available())
    return CPUInference() if use else contextlib.nullcontext()
