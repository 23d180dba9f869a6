"""Position-wise feed-forward networks and their activations.

- ``MLP``: the two-layer network of Vaswani et al. 2017, §3.3.
- ``GatedMLP``: gated linear units, Shazeer 2020 "GLU Variants Improve Transformer"
  (``act="silu"`` is SwiGLU, ``act="gelu_tanh"``/``"gelu"`` is GeGLU).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .chunk import cache_chunk, chunked


def quick_gelu(x: Tensor) -> Tensor:
    """The sigmoid approximation of GELU used by OpenAI's CLIP and ImageGPT: ``x * sigmoid(1.702 x)``."""
    return x * torch.sigmoid(1.702 * x)


def gelu_tanh(x: Tensor) -> Tensor:
    return F.gelu(x, approximate="tanh")


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": F.gelu,
    "gelu_tanh": gelu_tanh,
    "quick_gelu": quick_gelu,
    "silu": F.silu,
    "relu": F.relu,
    "tanh": torch.tanh,
}


def activation(name: str) -> Callable[[Tensor], Tensor]:
    """Look an activation up by its exact name; an unknown name lists the valid ones."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}") from None


def relu_mlp(x: Tensor, fc1: nn.Linear, fc2: nn.Linear, *, norm: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """``fc2(relu(fc1(norm(x))))`` (``norm`` optional). ``x: [*, C] -> [*, C_out]``.

    On the CPU it runs a slice of rows at a time whose wide inside is about a core's cache
    (:func:`tatlas.nn.cache_chunk`). Without gradients the inside never goes to memory (the same result
    as whole, bit for bit). With them it is written once, after its ReLU in place, and kept for the
    backward pass, which runs in slices too (:class:`_ReluMLP`): the gradient of the inside, its ReLU
    mask and both weight gradients' reads of it stay in the cache."""
    params = (fc1.weight, fc1.bias, fc2.weight, fc2.bias)
    if x.device.type != "cpu" or torch.is_autocast_enabled("cpu") or torch.compiler.is_compiling() \
            or x.shape[:-1].numel() == 0 or any(type(t) not in (Tensor, nn.Parameter) for t in (x, *params)
                                                if t is not None):
        x = norm(x) if norm is not None else x
        return fc2(F.relu(fc1(x)))
    rows = x.shape[:-1].numel()
    size = cache_chunk(rows, fc1.out_features * x.element_size()) or rows
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, *params)):
        x = norm(x) if norm is not None else x
        if x.dtype not in (torch.float32, torch.float64) or any(t.dtype != x.dtype for t in params if t is not None):
            return fc2(F.relu(fc1(x)))  # (in a lower precision, slices' weight gradients would round each sum)
        return _ReluMLP.apply(x, *params, size)
    part = lambda p: fc2(F.relu_(fc1(norm(p) if norm is not None else p)))  # noqa: E731
    out = chunked(part, size, dim=0)(x.reshape(rows, x.shape[-1]))
    return out.view(*x.shape[:-1], out.shape[-1])


def _linear_into(out: Tensor, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``out = x @ weight.T (+ bias)`` written in place (``out`` a contiguous slice of rows)."""
    if bias is None:
        return torch.mm(x, weight.t(), out=out)
    return torch.addmm(bias, x, weight.t(), out=out)


class _ReluMLP(torch.autograd.Function):
    """:func:`relu_mlp` with gradients, ``size`` rows at a time. Forward: each slice's inside computed
    into the one tensor kept for backward, its ReLU in place while it is in the cache. Backward, each
    slice: ``g_h = g_y W2`` masked where the ReLU was zero, the weight gradients accumulated
    (``g_y^T h``, ``g_h^T x``), ``g_x = g_h W1``; ``g_h`` never leaves the cache. The weight gradients
    differ from autograd's in summation order only. Once differentiable (no gradient of gradients)."""

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, size: int):  # noqa: ANN001, ANN205
        flat = x.reshape(-1, x.shape[-1])
        rows = flat.shape[0]
        inner, y = flat.new_empty(rows, w1.shape[0]), flat.new_empty(rows, w2.shape[0])
        for start in range(0, rows, size):
            h = _linear_into(inner[start:start + size], flat[start:start + size], w1, b1).relu_()
            _linear_into(y[start:start + size], h, w2, b2)
        ctx.save_for_backward(flat, inner, w1, w2)
        ctx.size, ctx.shape = size, x.shape
        return y.view(*x.shape[:-1], w2.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        flat, inner, w1, w2 = ctx.saved_tensors
        need_x, need_w1, need_b1, need_w2, need_b2, _ = ctx.needs_input_grad
        grad = grad.reshape(-1, grad.shape[-1])
        rows, size = flat.shape[0], ctx.size
        gx = torch.empty_like(flat) if need_x else None
        gw1 = torch.zeros_like(w1) if need_w1 else None
        gw2 = torch.zeros_like(w2) if need_w2 else None
        gb1 = w1.new_zeros(w1.shape[0]) if need_b1 else None
        gb2 = grad.sum(0) if need_b2 else None
        for start in range(0, rows, size):
            g, h = grad[start:start + size], inner[start:start + size]
            if gw2 is not None:
                gw2.addmm_(g.t(), h)
            if not (need_x or need_w1 or need_b1):
                continue
            gh = torch.mm(g, w2)  # then the ReLU's gradient, in place: zero where it cut (masked_fill_ is 40x slower)
            torch.ops.aten.threshold_backward.grad_input(gh, h, 0, grad_input=gh)
            if gb1 is not None:
                gb1 += gh.sum(0)
            if gw1 is not None:
                gw1.addmm_(gh.t(), flat[start:start + size])
            if gx is not None:
                torch.mm(gh, w1, out=gx[start:start + size])
        gx = gx.view(ctx.shape) if gx is not None else None
        return gx, gw1, gb1, gw2, gb2, None


class MLP(nn.Module):
    """``fc2(act(fc1(x)))``. ``x: [*, C] -> [*, C_out]``."""

    def __init__(
        self, *, dim: int, hidden: int, out_dim: int | None = None, act: str = "gelu", bias: bool = True
    ) -> None:
        super().__init__()
        self.act_name = act
        self.act = activation(act)
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, out_dim or dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.act_name == "relu":
            return relu_mlp(x, self.fc1, self.fc2)
        return self.fc2(self.act(self.fc1(x)))

    def extra_repr(self) -> str:
        return f"act={self.act_name}"


class GatedMLP(nn.Module):
    """``down(act(gate(x)) * up(x))``. ``x: [*, C] -> [*, C_out]``."""

    def __init__(
        self, *, dim: int, hidden: int, out_dim: int | None = None, act: str = "silu", bias: bool = False
    ) -> None:
        super().__init__()
        self.act_name = act
        self.act = activation(act)
        self.gate = nn.Linear(dim, hidden, bias=bias)
        self.up = nn.Linear(dim, hidden, bias=bias)
        self.down = nn.Linear(hidden, out_dim or dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.act(self.gate(x)) * self.up(x))

    def extra_repr(self) -> str:
        return f"act={self.act_name}"
