"""Expert parallelism: the experts of a :class:`~tatlas.nn.moe.MoE` sharded across the ranks of a
process group (:class:`ParallelExperts`), tokens exchanged with two all-to-alls (GShard, Lepikhin et
al. 2020, §2.2-3.1; Fedus et al. 2021, §2.3; DeepSeek-V3 2024, §3.2.2).

Rank ``r`` of ``W`` holds experts ``[r E/W, (r+1) E/W)`` and routes only its own tokens (the router and
shared experts are replicated: build them as usual and pass ``ParallelExperts(..., group=)`` as
the layer's experts). Forward:

1. sort the kept (token, expert) assignments by global expert: ``S`` rows, ``counts [E]``;
2. exchange the counts (``all_to_all_single`` of ``[W, E/W]``), so every rank knows how many rows it
   receives from each source for each of its experts (the variable split sizes of step 3);
3. ``all_to_all_single`` the rows with those uneven splits; the received rows are ordered by
   (source rank, expert) and are regrouped by expert for the grouped matmul;
4. run the local experts, undo the regrouping, send the rows back with the reverse all-to-all, and
   combine with the routing weights on the token's own rank.

The all-to-all is differentiable (its backward is the reverse exchange), so outputs and gradients
equal the one-process layer's on the same tokens: the input and router gradients are each rank's
own; an expert's weight gradient sums the contributions of every rank's tokens. Under data
parallelism, expert weights are therefore not to be all-reduced again (they are not replicas), while
the replicated router / shared weights are. gloo (CPU) and NCCL both implement
``all_to_all_single`` with uneven splits.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from .experts import Experts
from .routing import Routing, counts_per_expert, sort_by_expert


def shard_range(experts: int, world: int, rank: int) -> tuple[int, int]:
    """(first global expert id, count) held by ``rank`` of ``world``; ``experts`` must divide evenly."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"expert parallel: expected 0 <= rank < world, got rank {rank} of {world}")
    if experts % world:
        raise ValueError(f"experts: expected a multiple of the expert-parallel world size {world}, got {experts} "
                         f"({experts} experts cannot be split evenly over {world} ranks)")
    local = experts // world
    return rank * local, local


def expert_shard(experts: int, group) -> tuple[int, int]:
    """:func:`shard_range` for this process in ``group``."""
    if not dist.is_available() or not dist.is_initialized():
        raise ValueError("group: expected an initialised torch.distributed process group")
    return shard_range(experts, dist.get_world_size(group), dist.get_rank(group))


class _AllToAll(torch.autograd.Function):
    """``all_to_all_single`` with uneven splits along dim 0; backward is the reverse exchange."""

    @staticmethod
    def forward(ctx, x: Tensor, out_splits: list[int], in_splits: list[int], group) -> Tensor:
        ctx.splits, ctx.group = (out_splits, in_splits), group
        out = x.new_empty(sum(out_splits), *x.shape[1:])
        dist.all_to_all_single(out, x.contiguous(), out_splits, in_splits, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        out_splits, in_splits = ctx.splits
        back = grad.new_empty(sum(in_splits), *grad.shape[1:])
        dist.all_to_all_single(back, grad.contiguous(), in_splits, out_splits, group=ctx.group)
        return back, None, None, None


def all_to_all(x: Tensor, out_splits: list[int], in_splits: list[int], group=None) -> Tensor:
    """Differentiable ``all_to_all_single``: send ``x``'s row blocks of ``in_splits`` to ranks in order,
    receive blocks of ``out_splits``. ``x: [sum(in_splits), *] -> [sum(out_splits), *]``."""
    return _AllToAll.apply(x, out_splits, in_splits, group)


class ParallelExperts(Experts):
    """This rank's shard of ``experts`` experts over the ranks of ``group``: experts
    ``[r E/W, (r+1) E/W)`` (``offset``, ``num_experts``) of ``total = experts``, with the dropless
    all-to-all dispatch of the module docstring. ``experts`` must be divisible by the group's size.
    Parameters have the shapes of an :class:`Experts` of ``E/W`` experts (the same key names); load a
    full layer's state by slicing its ``experts.*`` tensors with :attr:`expert_slice`."""

    def __init__(self, *, dim: int, hidden: int, experts: int, group, act: str = "silu", gated: bool = True,
                 backend: str = "auto") -> None:
        offset, local = expert_shard(experts, group)
        super().__init__(dim=dim, hidden=hidden, experts=local, act=act, gated=gated, backend=backend)
        self.offset, self.total, self.group = offset, experts, group

    def forward(self, x: Tensor, routing: Routing) -> tuple[Tensor, Routing]:
        """``x [N, C]`` this rank's tokens, ``routing`` over all ``E`` experts -> (``[N, C]``, ``routing``,
        all of it served)."""
        world = dist.get_world_size(self.group)
        local = self.num_experts
        token, weight, expert = sort_by_expert(routing)  # rows for rank 0's experts first, then rank 1's ...
        counts = counts_per_expert(expert, self.total)  # [E]
        received = torch.empty_like(counts)
        dist.all_to_all_single(received, counts, group=self.group)  # [W E/W]: from source s, rows for my experts
        received = received.view(world, local)
        send_splits = counts.view(world, local).sum(1).tolist()
        recv_splits = received.sum(1).tolist()
        xr = all_to_all(x.index_select(0, token), recv_splits, send_splits, self.group)  # [R, C], by (source, expert)
        local_id = torch.arange(local, device=x.device).repeat(world).repeat_interleave(received.reshape(-1))
        perm = torch.argsort(local_id, stable=True)  # regroup by local expert
        ys = self.run_sorted(xr[perm], received.sum(0))
        yr = ys[torch.argsort(perm)]  # back to (source, local expert) order
        y = all_to_all(yr, send_splits, recv_splits, self.group)  # [S, C], as x[token]
        return x.new_zeros(x.shape).index_add_(0, token, y * weight[:, None].to(x.dtype)), routing
