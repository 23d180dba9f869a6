"""Contrastive (InfoNCE) losses across ranks: CLIP's symmetric cross-entropy (Radford et al. 2021,
Figure 3) and ImageBind's image-anchored pairs (Girdhar et al. 2023, Eq. 1) over the *global*
batch, so that every rank sees the negatives of every other rank.

How the gradient comes out right (verified by ``tests/test_contrastive_distributed.py``):

- :func:`gather_with_grad` all-gathers ``[B, E]`` into ``[W*B, E]``; its backward sums the
  gradient of the gathered tensor over ranks and hands each rank its own ``[B, E]`` slice (a
  reduce-scatter), as ``torch.distributed.nn.functional.all_gather`` does in open_clip's
  ``gather_features(gather_with_grad=True)``.
- :func:`info_nce` is open_clip's ``local_loss=True``: rank ``r`` scores its own ``B`` rows
  against all ``W*B`` columns, labels offset by ``r*B`` (``[B, W*B]`` logits instead of
  ``[W*B, W*B]``). The global loss is the mean of the ranks' losses ``L = (1/W) sum_r L_r``
  (every rank holds ``B`` of the ``W*B`` rows), so the trainer's logged loss (the mean over ranks)
  equals the one-process loss. For the gradient: ``dL_r/dx_r`` reaches ``x_r`` through its rows
  directly and through every rank's columns via the reduce-scatter, which sums to ``W * dL/dx_r``;
  DDP (FSDP2 likewise) then *averages* over ranks, giving exactly ``dL/dtheta``, the gradient of
  one process on the global batch. No extra scaling is needed, and none may be added.

With ``grad_accum > 1`` the negatives are those of one micro-batch on every rank, as on one
process with the same micro-batches.

Every rank must call these together with the same ``B`` (an all-gather needs equal shapes). Outside
a process group (or with one rank, or ``gather=False``) they are the plain in-batch loss.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor


def _world(group: dist.ProcessGroup | None = None) -> tuple[int, int]:
    """``(rank, world_size)`` of ``group``; ``(0, 1)`` without a process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


class _GatherWithGrad(torch.autograd.Function):
    """All-gather forward; backward sums the incoming ``[W*B, *]`` gradient over ranks and returns
    this rank's ``[B, *]`` slice (a reduce-scatter; on gloo, whose reduce-scatter older PyTorch lacks,
    an all-reduce and a slice). The public-API equivalent of the deprecated
    ``torch.distributed.nn.functional.all_gather``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, group: dist.ProcessGroup | None) -> Tensor:
        ctx.group = group
        x = x.contiguous()
        out = x.new_empty((dist.get_world_size(group) * x.shape[0], *x.shape[1:]))  # [W*B, *]
        dist.all_gather_into_tensor(out, x, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        group = ctx.group
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        if dist.get_backend(group) == dist.Backend.GLOO:
            total = grad.contiguous().clone()
            dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
            return total.chunk(world)[rank].contiguous(), None
        mine = grad.new_empty((grad.shape[0] // world, *grad.shape[1:]))  # [B, *]
        dist.reduce_scatter_tensor(mine, grad.contiguous(), op=dist.ReduceOp.SUM, group=group)
        return mine, None


def gather_with_grad(x: Tensor, group: dist.ProcessGroup | None = None) -> Tensor:
    """Every rank's ``x [B, *]`` concatenated in rank order, ``[W*B, *]``, differentiable: the
    gradient of the result is summed over ranks and split back to each rank's ``B`` rows. The
    identity (the same tensor) without a process group or with one rank."""
    _, world = _world(group)
    if world == 1:
        return x
    return _GatherWithGrad.apply(x, group)


def _gather_no_grad(x: Tensor, group: dist.ProcessGroup | None = None) -> Tensor:
    _, world = _world(group)
    if world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous(), group=group)
    return torch.cat(parts, dim=0)


def _targets(keys: Tensor | None, keys_all: Tensor | None, rows: int, cols: int, offset: int,
             device: torch.device) -> tuple[Tensor, Tensor]:
    """The cross-entropy target of this rank's ``rows`` against all ``cols`` columns, and the
    boolean positives ``[B, N]``. Without keys, row ``i``'s one positive is column ``offset + i``
    (integer labels); with keys, every column whose key equals the row's (over all trailing dims)
    is a positive, with equal weight (rows sum to 1)."""
    if keys is None or keys_all is None:
        labels = torch.arange(rows, device=device) + offset  # [B]
        return labels, F.one_hot(labels, cols).bool()
    same = (keys.reshape(rows, 1, -1) == keys_all.reshape(1, cols, -1)).all(dim=-1)  # [B, N]
    return same.float() / same.sum(dim=1, keepdim=True), same


def _logits(a: Tensor, b: Tensor, logit_scale: Tensor | float, *, keys: Tensor | None, gather: bool,
            group: dist.ProcessGroup | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(logits_ab [B, N], logits_ba [B, N], target, positives [B, N])`` for this rank's rows,
    ``N = W*B`` columns (``N = B`` on one process)."""
    rank, world = _world(group) if gather else (0, 1)
    rows = a.shape[0]
    if world == 1:
        logits_ab = logit_scale * a @ b.t()  # [B, B]
        logits_ba = logits_ab.t()
        keys_all = keys
    else:
        a_all, b_all = gather_with_grad(a, group), gather_with_grad(b, group)  # [W*B, E]
        logits_ab = logit_scale * a @ b_all.t()  # [B, W*B]: this rank's a against every b
        logits_ba = logit_scale * b @ a_all.t()  # [B, W*B]: this rank's b against every a
        keys_all = None if keys is None else _gather_no_grad(keys, group)
    target, positives = _targets(keys, keys_all, rows, logits_ab.shape[1], rank * rows, a.device)
    return logits_ab, logits_ba, target, positives


def info_nce(a: Tensor, b: Tensor, logit_scale: Tensor | float, *, keys: Tensor | None = None, gather: bool = True,
             group: dist.ProcessGroup | None = None) -> Tensor:
    """Symmetric InfoNCE ``(CE(a->b) + CE(b->a)) / 2`` between paired embeddings ``a, b [B, E]``
    (normalise them first for cosine logits), ``logits = logit_scale * a @ b^T`` with
    ``logit_scale`` the inverse temperature itself (already ``exp``-ed and capped by the caller).

    ``keys [B, *]`` (optional): pairs with equal keys (e.g. identical caption tokens) are all right
    answers for each other, with equal target weight; without keys row ``i``'s only positive is
    column ``i`` (the paper's loss). ``gather=True`` scores against the global batch of every rank
    (module docstring); the value is the mean over this rank's rows, so the mean over ranks (what
    the trainer logs) is the global batch's loss. On one process it is the in-batch loss."""
    logits_ab, logits_ba, target, _ = _logits(a, b, logit_scale, keys=keys, gather=gather, group=group)
    return 0.5 * (F.cross_entropy(logits_ab, target) + F.cross_entropy(logits_ba, target))


@torch.no_grad()
def contrastive_accuracy(a: Tensor, b: Tensor, logit_scale: Tensor | float, *, keys: Tensor | None = None,
                         gather: bool = True, group: dist.ProcessGroup | None = None) -> Tensor:
    """Top-1 retrieval accuracy of :func:`info_nce`'s logits, averaged over both directions: the
    fraction of this rank's rows whose best column is a positive (over the global batch with
    ``gather``), so the mean over ranks is the global batch's accuracy."""
    logits_ab, logits_ba, _, positives = _logits(a.detach(), b.detach(), logit_scale, keys=keys, gather=gather,
                                                 group=group)
    rows = torch.arange(len(positives), device=positives.device)
    return 0.5 * (positives[rows, logits_ab.argmax(1)].float().mean()
                  + positives[rows, logits_ba.argmax(1)].float().mean())
