"""Experts of a sparse Mixture-of-Experts layer and their dispatch: dropless (sorted by expert,
grouped matmuls) and capacity-bounded.

Experts (:class:`Experts`) are stacked weights, gate half first as in transformers' fused experts:
``gate_up [E, 2I, C]`` and ``down [E, C, I]`` (SwiGLU experts), or ``up [E, I, C]`` and ``down [E, C, I]``
for plain two-layer experts (``gated=False``, Switch: Fedus et al. 2021, "Switch Transformers", §2.1).

Dispatch is dropless (as in MegaBlocks: Gale et al. 2022, "MegaBlocks: Efficient Sparse Training
with Mixture-of-Experts"): the (token, expert) assignments are sorted by expert and every expert
runs on its contiguous segment, through ``torch._grouped_mm`` where the device and shapes allow, else
through a loop over the segments. The routing weight scales the narrower of the expert's hidden
``[S, I]`` and output ``[S, C]`` (the down projection is linear), and the rows are summed back per token
by a sequential ``index_add_`` on CPU or a gather-and-sum on CUDA (deterministic both); the two
permutations are each other's adjoint (:class:`_Dispatch`, :class:`_Combine`) and serve as each other's
backward.

:class:`CapacityExperts` is the static-shape capacity-bounded dispatch of GShard (Lepikhin et al.
2020, "GShard: Scaling Giant Models with Conditional Computation and Automatic Sharding", §2.2):
per-expert buffers ``[E, capacity, C]``, first choices before second choices, overflow dropped.
Expert parallelism is :class:`~tatlas.nn.moe.experts_parallel.ParallelExperts`.

Every variant has one interface, ``forward(x [N, C], routing) -> (y [N, C], routing as served)``: the
served routing is the given one, except where the dispatch itself dropped assignments (its ``kept``,
``load`` and ``dropped`` then say which).

Shapes: ``N`` tokens, ``E`` experts, ``k`` experts per token, ``C`` width, ``I`` expert width, ``S``
assignments kept.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..mlp import activation
from .routing import Routing, counts_per_expert, sort_by_expert


def grouped_mm_supported(x: Tensor, *weights: Tensor) -> bool:
    """Whether ``torch._grouped_mm`` runs ``x [S, K] @ w[e].T`` here. torch 2.13: CPU takes float32,
    bfloat16 and float16 with 16-byte aligned pointers and row strides (so ``C`` and ``I`` multiples of
    4 in float32, of 8 in 16-bit types); CUDA needs compute capability >= 8.0 and bfloat16."""
    if not hasattr(torch, "_grouped_mm"):
        return False
    if x.device.type == "cuda":
        return x.dtype == torch.bfloat16 and torch.cuda.get_device_capability(x.device) >= (8, 0)
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return False
    if torch.compiler.is_compiling():  # inductor lowers grouped_mm for bfloat16 only; no data pointers here
        return x.dtype == torch.bfloat16 and x.shape[-1] % 8 == 0 and all(w.shape[-1] % 8 == 0 for w in weights)
    size = x.element_size()
    return all(t.data_ptr() % 16 == 0 and all(s * size % 16 == 0 for s in t.stride()[:-1] if s != 1)
               for t in (x, *weights)) and all(w.shape[-1] * size % 16 == 0 for w in weights)


def _grouped_linear(x: Tensor, weight: Tensor, offsets: Tensor) -> Tensor:
    """``x [S, in]`` with rows grouped by expert (ends at ``offsets [E]`` int32), ``weight [E, out, in]``
    -> ``[S, out]``: row block ``e`` times ``weight[e].T``."""
    return torch._grouped_mm(x, weight.transpose(-2, -1), offs=offsets)


class _SwiGLU(torch.autograd.Function):
    """``silu(gate) * up`` of the fused ``[S, 2I]`` projection (gate half first) -> ``[S, I]``, whose
    backward writes both halves' gradients into one ``[S, 2I]`` tensor instead of concatenating them."""

    @staticmethod
    def forward(ctx, h: Tensor) -> Tensor:
        ctx.save_for_backward(h)
        gate, up = h.chunk(2, dim=-1)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (h,) = ctx.saved_tensors
        gate, up = h.chunk(2, dim=-1)
        dh = torch.empty_like(h)
        i = gate.shape[-1]
        torch.ops.aten.silu_backward.grad_input(grad * up, gate, grad_input=dh[..., :i])
        torch.mul(grad, F.silu(gate), out=dh[..., i:])
        return dh


class _Dispatch(torch.autograd.Function):
    """Each row of ``x [N, C]`` copied to its ``k`` assignments in expert order: ``x[token]`` with
    ``token = order // k`` ``-> [N k, C]``. Its backward is its adjoint :func:`_combine` (a sum over
    the k copies), not autograd's generic scatter-add for indexing."""

    @staticmethod
    def forward(ctx, x: Tensor, token: Tensor, inverse: Tensor, k: int) -> Tensor:
        ctx.save_for_backward(token, inverse)
        ctx.k = k
        return x.index_select(0, token)

    @staticmethod
    def backward(ctx, grad: Tensor):
        token, inverse = ctx.saved_tensors
        return _combine(grad, token, inverse, ctx.k), None, None, None


class _Combine(torch.autograd.Function):
    """The adjoint of :class:`_Dispatch`: ``[N k, C]`` rows in expert order summed back per token
    ``-> [N, C]``."""

    @staticmethod
    def forward(ctx, y: Tensor, token: Tensor, inverse: Tensor, k: int) -> Tensor:
        ctx.save_for_backward(token, inverse)
        ctx.k = k
        return _combine(y, token, inverse, k)

    @staticmethod
    def backward(ctx, grad: Tensor):
        token, inverse = ctx.saved_tensors
        return grad.index_select(0, token), None, None, None


def _combine(y: Tensor, token: Tensor, inverse: Tensor, k: int) -> Tensor:
    """``y [N k, C]`` in expert order summed per token -> ``[N, C]``. On CUDA a gather by ``inverse``
    (where (token n, slot j) sits in ``y``) and a sum over the k slots: deterministic, unlike a
    scatter-add with atomics. On CPU a sequential ``index_add_`` by ``token``: deterministic too, and it
    allocates no ``[N k, C]`` temporary (fresh pages of large temporaries cost more than the adds)."""
    if y.device.type == "cpu":
        return y.new_zeros(inverse.shape[0] // k, y.shape[-1]).index_add_(0, token, y)
    return y.index_select(0, inverse).view(-1, k, y.shape[-1]).sum(1)


BACKENDS = ("auto", "grouped_mm", "loop")


class Experts(nn.Module):
    """``E`` feed-forward experts as stacked weights with dropless dispatch: SwiGLU-style
    ``down(act(gate x) * up x)`` from ``gate_up [E, 2I, C]`` (gate rows first) and ``down [E, C, I]``, or
    with ``gated=False`` the two-layer ``down(act(up x))`` from ``up [E, I, C]`` and ``down [E, C, I]``
    (Switch's experts).

    ``backend``: ``"grouped_mm"`` runs all experts in one ``torch._grouped_mm`` per projection,
    ``"loop"`` loops over the experts' contiguous segments, ``"auto"`` takes the first where
    :func:`grouped_mm_supported` says it runs. This module holds all ``total`` experts (``offset`` 0);
    a shard of them is :class:`~tatlas.nn.moe.experts_parallel.ParallelExperts`."""

    def __init__(self, *, dim: int, hidden: int, experts: int, act: str = "silu", gated: bool = True,
                 backend: str = "auto") -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {list(BACKENDS)}, got {backend!r}")
        if experts < 1 or dim < 1 or hidden < 1:
            raise ValueError(f"Experts: expected experts, dim, hidden >= 1, got {experts}, {dim}, {hidden}")
        self.dim, self.hidden, self.num_experts, self.gated, self.backend = dim, hidden, experts, gated, backend
        self.offset, self.total = 0, experts  # global id of the first expert held here; experts in the layer
        self.act_name, self.act = act, activation(act)
        if gated:
            self.gate_up = nn.Parameter(torch.empty(experts, 2 * hidden, dim))
        else:
            self.up = nn.Parameter(torch.empty(experts, hidden, dim))
        self.down = nn.Parameter(torch.empty(experts, dim, hidden))
        self.reset_parameters()

    @property
    def w_in(self) -> Tensor:
        """``[E, 2I, C]`` (gated) or ``[E, I, C]``."""
        return self.gate_up if self.gated else self.up

    @property
    def expert_slice(self) -> slice:
        """The global expert ids held here (all of them unless sharded)."""
        return slice(self.offset, self.offset + self.num_experts)

    def reset_parameters(self) -> None:
        """Each expert as ``nn.Linear`` would be: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``."""
        nn.init.uniform_(self.w_in, -1 / math.sqrt(self.dim), 1 / math.sqrt(self.dim))
        nn.init.uniform_(self.down, -1 / math.sqrt(self.hidden), 1 / math.sqrt(self.hidden))

    def _inner(self, h: Tensor) -> Tensor:
        """``[S, 2I] -> [S, I]`` (gated) or ``[S, I] -> [S, I]``."""
        if not self.gated:
            return self.act(h)
        if self.act_name == "silu" and torch.is_grad_enabled():
            return _SwiGLU.apply(h)
        gate, up = h.chunk(2, dim=-1)
        return self.act(gate) * up

    def use_grouped_mm(self, x: Tensor) -> bool:
        if self.backend == "loop":
            return False
        if self.backend == "grouped_mm":
            return True
        return grouped_mm_supported(x, self.w_in, self.down)

    def run_sorted(self, xs: Tensor, counts: Tensor, scale: Tensor | None = None) -> Tensor:
        """Every expert held here on its rows: ``xs [S, C]`` grouped by local expert, ``counts [E]`` rows
        per expert (summing to S) -> ``[S, C]``, each row times ``scale [S]`` if given (applied to the
        narrower of the expert's hidden ``[S, I]`` and its output ``[S, C]``: the down projection is
        linear)."""
        early = scale is not None and self.hidden < self.dim
        late = scale is not None and not early
        if self.use_grouped_mm(xs):
            offsets = counts.cumsum(0).to(torch.int32)
            h = self._inner(_grouped_linear(xs, self.w_in, offsets))  # [S, I]
            y = _grouped_linear(h * scale[:, None] if early else h, self.down, offsets)  # [S, C]
            return y * scale[:, None] if late else y
        ys, start = [], 0
        for e, n in enumerate(counts.tolist()):
            if n:
                rows = slice(start, start + n)
                h = self._inner(F.linear(xs[rows], self.w_in[e]))  # [n, I]
                y = F.linear(h * scale[rows, None] if early else h, self.down[e])  # [n, C]
                ys.append(y * scale[rows, None] if late else y)
                start += n
        if not ys:  # no rows at all: an empty product keeps the weights in the graph (zero gradients)
            return F.linear(self._inner(F.linear(xs, self.w_in[0])), self.down[0])
        return torch.cat(ys)

    def forward(self, x: Tensor, routing: Routing) -> tuple[Tensor, Routing]:
        """Dropless dispatch: ``x [N, C]``, ``routing`` over all ``E`` experts -> (``[N, C]``, the weighted
        sum of each token's kept experts (0 for a token with none); ``routing``, all of it served)."""
        if routing.kept is not None:  # some assignments dropped: gather the kept ones, scatter-add back
            token, weight, expert = sort_by_expert(routing)
            counts = counts_per_expert(expert, self.num_experts)
            y = self.run_sorted(x.index_select(0, token), counts, weight.to(x.dtype))  # [S, C]
            return x.new_zeros(x.shape).index_add_(0, token, y), routing
        k = routing.k
        expert = routing.experts.reshape(-1)  # [N k]
        order = torch.argsort(expert, stable=True)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        token = order // k
        counts = counts_per_expert(expert[order], self.num_experts)
        weight = routing.weights.reshape(-1)[order].to(x.dtype)
        y = self.run_sorted(_Dispatch.apply(x, token, inverse, k), counts, weight)  # [N k, C]
        return _Combine.apply(y, token, inverse, k), routing

    def extra_repr(self) -> str:
        held = f"experts={self.num_experts}" + (f" [{self.offset}:{self.offset + self.num_experts}] of {self.total}"
                                                 if self.num_experts != self.total else "")
        return f"dim={self.dim}, hidden={self.hidden}, {held}, act={self.act_name}, gated={self.gated}"


class CapacityExperts(Experts):
    """Capacity-bounded dispatch (GShard, Lepikhin et al. 2020 §2.2) with static shapes: each expert
    fills ``capacity = ceil(capacity_factor * N k / E)`` slots, all first choices before any second
    choice, tokens in order; the overflow is dropped (its output is 0: the residual carries it).
    Batched matmuls over ``[E, capacity, C]`` buffers, no host synchronisation; ``backend`` is unused."""

    def __init__(self, *, dim: int, hidden: int, experts: int, capacity_factor: float, act: str = "silu",
                 gated: bool = True) -> None:
        if not capacity_factor > 0:
            raise ValueError(f"capacity_factor: expected > 0, got {capacity_factor}")
        super().__init__(dim=dim, hidden=hidden, experts=experts, act=act, gated=gated)
        self.capacity_factor = capacity_factor

    def capacity_for(self, assignments: int) -> int:
        """Slots per expert for ``assignments = N k`` (token, expert) pairs."""
        return max(1, math.ceil(self.capacity_factor * assignments / self.num_experts))

    def forward(self, x: Tensor, routing: Routing) -> tuple[Tensor, Routing]:
        """``x [N, C]``, ``routing`` over the ``E`` experts -> (``[N, C]``, ``routing`` with ``kept [N, k]``
        the assignments that found a slot, and ``load``, ``dropped`` recounted)."""
        n, k = routing.experts.shape
        e, capacity = self.num_experts, self.capacity_for(n * k)
        ids = routing.experts.t().reshape(-1)  # [k N] slot-major: first choices first
        valid = torch.ones_like(ids, dtype=torch.bool) if routing.kept is None else routing.kept.t().reshape(-1)
        ids = torch.where(valid, ids, e)  # already dropped -> a virtual expert E
        order = torch.argsort(ids, stable=True)
        counts = counts_per_expert(ids[order], e + 1)
        starts = counts.cumsum(0) - counts
        position = torch.empty_like(ids)
        position[order] = torch.arange(ids.numel(), device=ids.device) - starts[ids[order]]
        keep = valid & (position < capacity)
        slot = torch.where(keep, ids * capacity + position, e * capacity)  # the dropped share a trash slot
        token = torch.arange(n, device=x.device).repeat(k)
        buf = x.new_zeros(e * capacity + 1, self.dim).index_copy(0, slot, x[token])
        h = torch.bmm(buf[:-1].view(e, capacity, self.dim), self.w_in.transpose(1, 2))  # [E, cap, 2I]
        y = torch.bmm(self._inner(h), self.down.transpose(1, 2)).reshape(e * capacity, self.dim)  # [E cap, C]
        y = torch.cat([y, y.new_zeros(1, self.dim)])[slot]  # [k N, C]
        w = (routing.weights.t().reshape(-1) * keep).to(x.dtype)
        out = x.new_zeros(x.shape).index_add_(0, token, y * w[:, None])
        return out, routing.with_kept(keep.view(k, n).t())

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, capacity_factor={self.capacity_factor}"
