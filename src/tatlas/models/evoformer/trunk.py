"""The Evoformer block (Jumper et al. 2021, AlphaFold2 Supplement §1.6, Alg. 6) and its parts, each
named after its algorithm, computed as DeepMind's ``alphafold/model/modules.py`` computes them.

Shapes: the MSA representation ``msa [*, N_seq, N_res, c_m]`` with ``msa_mask [*, N_seq, N_res]``,
the pair representation ``pair [*, N_res, N_res, c_z]`` with ``pair_mask [*, N_res, N_res]``; ``*``
is an optional batch dimension. Masked positions enter attention as a ``-1e9`` bias (as in
AlphaFold2; a row with every key masked attends uniformly instead of producing NaNs). Attention is
the shared :class:`tatlas.nn.Attention` (no q/k/v biases, a sigmoid gate, pair or mask biases)
and :class:`tatlas.nn.GlobalAttention`.

Memory: the attentions, the transitions and the outer product mean take ``chunk_size`` and then run
on slices of rows (:func:`tatlas.nn.chunked`, Supplement §1.11.8); the result equals the unchunked one.
Dropout (training only) is shared along rows for row-wise updates and along columns for
column-wise ones (Supplement §1.11.6).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ...nn import Attention, GlobalAttention, LayerNorm, cache_chunk, chunked, relu_mlp
from .config import BlockConfig


def mask_bias(mask: Tensor) -> Tensor:
    """``mask [*, rows, keys, 1]`` (rows at dim -3, as the activations, so both chunk alike) ->
    additive attention bias ``[*, rows, 1, 1, keys]``: 0 where present, -1e9 where masked."""
    return (1e9 * (mask - 1.0)).transpose(-1, -2).unsqueeze(-2)


def shared_dropout(x: Tensor, p: float, dim: int, training: bool) -> Tensor:
    """Dropout whose mask is the same along ``dim`` (a whole row or column dropped together)."""
    if not training or p == 0.0:
        return x
    shape = list(x.shape)
    shape[dim] = 1
    keep = torch.bernoulli(torch.full(shape, 1.0 - p, dtype=x.dtype, device=x.device))
    return x * keep / (1.0 - p)


def _attention(dim: int, heads: int) -> Attention:
    """AlphaFold2's gated multi-head attention (Supplement §1.6.1): no q/k/v biases, queries scaled by
    ``head_dim ** -0.5``, ``sigmoid(gate(x))`` per head and channel, a biased output projection."""
    return Attention(dim=dim, heads=heads, qkv_bias=False, out_bias=True, gate=True)


class MSARowAttentionWithPairBias(nn.Module):
    """Alg. 7: each MSA row attends over its residues, biased by a per-head projection of the pair
    representation. Returns the update ``[*, N_seq, N_res, c_m]``."""

    def __init__(self, *, msa_dim: int, pair_dim: int, heads: int) -> None:
        super().__init__()
        self.query_norm, self.pair_norm = LayerNorm(msa_dim), LayerNorm(pair_dim)
        self.pair_bias = nn.Linear(pair_dim, heads, bias=False)
        self.attn = _attention(msa_dim, heads)

    def forward(self, msa: Tensor, msa_mask: Tensor, pair: Tensor, *, chunk_size: int | None = None) -> Tensor:
        x = self.query_norm(msa)
        bias = self.pair_bias(self.pair_norm(pair)).movedim(-1, -3).unsqueeze(-4)  # [*, 1, H, N_res, N_res]
        attend = chunked(lambda x, m: self.attn(x, mask=mask_bias(m), bias=bias), chunk_size, dim=-3)
        return attend(x, msa_mask[..., None].to(x.dtype))


class MSAColumnAttention(nn.Module):
    """Alg. 8: each MSA column (one residue across the sequences) attends over its sequences."""

    def __init__(self, *, msa_dim: int, heads: int) -> None:
        super().__init__()
        self.query_norm = LayerNorm(msa_dim)
        self.attn = _attention(msa_dim, heads)

    def forward(self, msa: Tensor, msa_mask: Tensor, *, chunk_size: int | None = None) -> Tensor:
        x = self.query_norm(msa.transpose(-2, -3))  # [*, N_res, N_seq, c_m]
        attend = chunked(lambda x, m: self.attn(x, bias=mask_bias(m)), chunk_size, dim=-3)
        return attend(x, msa_mask.transpose(-1, -2).contiguous()[..., None].to(x.dtype)).transpose(-2, -3)


class MSAColumnGlobalAttention(nn.Module):
    """Alg. 19: column attention of the extra-MSA stack, one averaged query per column
    (:class:`~tatlas.nn.GlobalAttention`), linear in the number of sequences."""

    def __init__(self, *, msa_dim: int, heads: int) -> None:
        super().__init__()
        self.query_norm = LayerNorm(msa_dim)
        self.attn = GlobalAttention(dim=msa_dim, heads=heads)

    def forward(self, msa: Tensor, msa_mask: Tensor, *, chunk_size: int | None = None) -> Tensor:
        x = self.query_norm(msa.transpose(-2, -3))  # [*, N_res, N_seq, c_m]
        attend = chunked(lambda x, m: self.attn(x, m[..., 0]), chunk_size, dim=-3)
        return attend(x, msa_mask.transpose(-1, -2).contiguous()[..., None].to(x.dtype)).transpose(-2, -3)


def _in_cache(x: Tensor, weight: Tensor) -> bool:
    """Whether a row-wise update of ``x`` computed with ``weight`` runs in cache-sized slices
    (:func:`tatlas.nn.cache_chunk`) when no chunk size is asked for: on the CPU, without gradients (with
    them, autograd keeps every slice's intermediates anyway)."""
    return x.device.type == "cpu" and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))


class Transition(nn.Module):
    """Alg. 9 (MSA) and Alg. 15 (pair): ``linear(relu(linear(LayerNorm(x))))``, ``factor`` times wider
    inside. (AlphaFold2 takes a mask but does not use it.)"""

    def __init__(self, *, dim: int, factor: int) -> None:
        super().__init__()
        self.norm = LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, factor * dim), nn.Linear(factor * dim, dim)

    def forward(self, x: Tensor, *, chunk_size: int | None = None) -> Tensor:
        # on the CPU in cache-sized slices of rows, with and without gradients (:func:`tatlas.nn.relu_mlp`:
        # the pair transition at N_res 128, c_z 128 without them 47-51 -> 24-28 ms, the same result)
        return chunked(lambda x: relu_mlp(x, self.fc1, self.fc2, norm=self.norm), chunk_size, dim=-3)(x)


class OuterProductMean(nn.Module):
    """Alg. 10: the MSA's update to the pair representation, the mean over sequences of the outer
    product of two projections (``channels`` each) of residues ``i`` and ``j``, flattened and
    projected to ``c_z``; divided by ``1e-3 +`` the number of sequences where both are present
    (the projection's bias inside the division, as AlphaFold2 computes it)."""

    def __init__(self, *, msa_dim: int, pair_dim: int, channels: int) -> None:
        super().__init__()
        self.norm = LayerNorm(msa_dim)
        self.left, self.right = nn.Linear(msa_dim, channels), nn.Linear(msa_dim, channels)
        self.out = nn.Linear(channels * channels, pair_dim)

    def forward(self, msa: Tensor, msa_mask: Tensor, *, chunk_size: int | None = None) -> Tensor:
        mask = msa_mask[..., None].to(msa.dtype)  # [*, N_seq, N_res, 1]
        x = self.norm(msa)
        left, right = mask * self.left(x), mask * self.right(x)  # [*, N_seq, N_res, c]

        def rows(left: Tensor) -> Tensor:  # residues i of this chunk: [*, N_seq, n, c] -> [*, n, N_res, c_z]
            outer = torch.einsum("...sic,...sje->...ijce", left, right)  # [*, n, N_res, c, c]
            return self.out(outer.flatten(-2))

        if chunk_size is None and _in_cache(msa, self.out.weight):
            # residues i a cache-sized slice at a time: the [n, N_res, c, c] outer product's reordering copy
            # stays in the cache (N_seq 128, N_res 128, c 32: 142 -> 66 ms, the same result)
            outer_bytes = math.prod(right.shape[:-3]) * right.shape[-2] * right.shape[-1] ** 2 * right.element_size()
            chunk_size = cache_chunk(left.shape[-2], outer_bytes)
        act = chunked(lambda part: rows(part).transpose(-2, -3), chunk_size, dim=-2)(left).transpose(-2, -3)
        norm = torch.einsum("...si,...sj->...ij", mask[..., 0], mask[..., 0])  # [*, N_res, N_res]
        return act / (1e-3 + norm[..., None])


class TriangleMultiplication(nn.Module):
    """Alg. 11-12, the shared part: gated left and right projections of the (normalised, masked)
    pair, combined over the third residue ``k``, normalised, projected back and gated by the input.
    Subclasses say which edges meet at ``k`` (``outgoing``).

    With ``chunk_size`` one projection is made whole and the other, the combination and the output
    a slice of output rows ``i`` at a time: about two pair-sized tensors of ``channels`` alive instead
    of six."""

    outgoing: bool

    def __init__(self, *, pair_dim: int, channels: int) -> None:
        super().__init__()
        self.norm_in = LayerNorm(pair_dim)
        self.left, self.right = nn.Linear(pair_dim, channels), nn.Linear(pair_dim, channels)
        self.left_gate, self.right_gate = nn.Linear(pair_dim, channels), nn.Linear(pair_dim, channels)
        self.norm_out = LayerNorm(channels)
        self.out = nn.Linear(channels, pair_dim)
        self.gate = nn.Linear(pair_dim, pair_dim)

    @staticmethod
    def _edges(x: Tensor, mask: Tensor, proj: nn.Linear, gate: nn.Linear) -> Tensor:
        """``mask * proj(x) * sigmoid(gate(x))`` channels first: ``x [*, a, b, C]``, ``mask [*, a, b]``
        -> ``[*, c, a, b]``, contiguous (both projections one product, ``W x^T``, written in that order:
        no copy to bring the channels forward)."""
        c = proj.out_features
        w, b = torch.cat([proj.weight, gate.weight]), torch.cat([proj.bias, gate.bias])
        both = torch.baddbmm(b[:, None], w.expand(math.prod(x.shape[:-3]), *w.shape),
                             x.reshape(-1, x.shape[-3] * x.shape[-2], x.shape[-1]).transpose(-1, -2))
        both = both.view(*x.shape[:-3], 2 * c, x.shape[-3], x.shape[-2])  # [*, 2c, a, b]
        return both[..., :c, :, :] * torch.sigmoid(both[..., c:, :, :]) * mask[..., None, :, :]

    def forward(self, pair: Tensor, pair_mask: Tensor, *, chunk_size: int | None = None) -> Tensor:
        mask = pair_mask.to(pair.dtype)
        x = self.norm_in(pair)
        # one matrix product per channel, channels first and contiguous (handed channels-last, as an
        # einsum does, torch's bmm copied each channel's matrices apart: 128 copies, 40% of the update)
        if self.outgoing:  # ij <- sum_k a_ik b_jk: a by rows i, b whole
            whole = self._edges(x, mask, self.right, self.right_gate).transpose(-1, -2)  # b [*, c, k, j]
            source, source_mask, proj, gate = x, mask, self.left, self.left_gate
        else:  # ij <- sum_k a_kj b_ki: b by its columns i, a whole
            whole = self._edges(x, mask, self.left, self.left_gate)  # a [*, c, k, j]
            source, source_mask = x.transpose(-2, -3), mask.transpose(-1, -2)  # rows i = columns of the pair
            proj, gate = self.right, self.right_gate

        def rows(x_rows: Tensor, source_rows: Tensor, source_mask_rows: Tensor) -> Tensor:
            part = self._edges(source_rows, source_mask_rows[..., 0], proj, gate)  # [*, c, n, N_res(k)]
            update = self.norm_out((part @ whole).movedim(-3, -1))  # [*, n, N_res(j), c]
            return self.out(update) * torch.sigmoid(self.gate(x_rows))

        return chunked(rows, chunk_size, dim=-3)(x, source, source_mask[..., None])  # (the mask's rows at -3)


class TriangleMultiplicationOutgoing(TriangleMultiplication):
    """Alg. 11: edge ``ij`` from the edges ``ik`` and ``jk`` leaving ``i`` and ``j``."""

    outgoing = True


class TriangleMultiplicationIncoming(TriangleMultiplication):
    """Alg. 12: edge ``ij`` from the edges ``ki`` and ``kj`` arriving at ``i`` and ``j``."""

    outgoing = False


class TriangleAttentionStartingNode(nn.Module):
    """Alg. 13: edge ``ij`` attends over the edges ``ik`` that start at the same node ``i``, biased by
    a per-head projection of the third edge ``jk``."""

    def __init__(self, *, pair_dim: int, heads: int) -> None:
        super().__init__()
        self.norm = LayerNorm(pair_dim)
        self.pair_bias = nn.Linear(pair_dim, heads, bias=False)
        self.attn = _attention(pair_dim, heads)

    def forward(self, pair: Tensor, pair_mask: Tensor, *, chunk_size: int | None = None) -> Tensor:
        x = self.norm(pair)
        bias = self.pair_bias(x).movedim(-1, -3).unsqueeze(-4)  # [*, 1, H, N_res, N_res]
        attend = chunked(lambda x, m: self.attn(x, mask=mask_bias(m), bias=bias), chunk_size, dim=-3)
        return attend(x, pair_mask[..., None].to(x.dtype))


class TriangleAttentionEndingNode(TriangleAttentionStartingNode):
    """Alg. 14: edge ``ij`` attends over the edges ``kj`` that end at the same node ``j`` (the
    starting-node update on the transposed pair)."""

    def forward(self, pair: Tensor, pair_mask: Tensor, *, chunk_size: int | None = None) -> Tensor:
        # contiguous copies: a strided mask gives the attention a strided bias, ~2x slower on CPU
        return super().forward(pair.transpose(-2, -3).contiguous(), pair_mask.transpose(-1, -2).contiguous(),
                               chunk_size=chunk_size).transpose(-2, -3)


class PairStack(nn.Module):
    """The pair updates of Alg. 6 lines 6-10 in the Evoformer's order (triangle multiplications,
    then triangle attentions, then the transition); the template pair stack (Alg. 16) runs the same
    parts with the attentions first (:class:`TemplatePairBlock`)."""

    def __init__(self, *, pair_dim: int, heads: int, channels: int, factor: int, dropout: float) -> None:
        super().__init__()
        self.tri_mul_out = TriangleMultiplicationOutgoing(pair_dim=pair_dim, channels=channels)
        self.tri_mul_in = TriangleMultiplicationIncoming(pair_dim=pair_dim, channels=channels)
        self.tri_att_start = TriangleAttentionStartingNode(pair_dim=pair_dim, heads=heads)
        self.tri_att_end = TriangleAttentionEndingNode(pair_dim=pair_dim, heads=heads)
        self.transition = Transition(dim=pair_dim, factor=factor)
        self.dropout = dropout

    def _row(self, x: Tensor) -> Tensor:
        return shared_dropout(x, self.dropout, -3, self.training)

    def _col(self, x: Tensor) -> Tensor:
        return shared_dropout(x, self.dropout, -2, self.training)

    def forward(self, pair: Tensor, pair_mask: Tensor, *, chunk_size: int | None = None) -> Tensor:
        pair = pair + self._row(self.tri_mul_out(pair, pair_mask, chunk_size=chunk_size))
        pair = pair + self._row(self.tri_mul_in(pair, pair_mask, chunk_size=chunk_size))
        pair = pair + self._row(self.tri_att_start(pair, pair_mask, chunk_size=chunk_size))
        pair = pair + self._col(self.tri_att_end(pair, pair_mask, chunk_size=chunk_size))
        return pair + self.transition(pair, chunk_size=chunk_size)


class TemplatePairBlock(PairStack):
    """One block of the template pair stack (Alg. 16): triangle attentions first, then the
    triangle multiplications and the transition."""

    def forward(self, pair: Tensor, pair_mask: Tensor, *, chunk_size: int | None = None) -> Tensor:
        pair = pair + self._row(self.tri_att_start(pair, pair_mask, chunk_size=chunk_size))
        pair = pair + self._col(self.tri_att_end(pair, pair_mask, chunk_size=chunk_size))
        pair = pair + self._row(self.tri_mul_out(pair, pair_mask, chunk_size=chunk_size))
        pair = pair + self._row(self.tri_mul_in(pair, pair_mask, chunk_size=chunk_size))
        return pair + self.transition(pair, chunk_size=chunk_size)


class EvoformerBlock(nn.Module):
    """Alg. 6 (one block): the MSA is updated by row attention biased by the pair, column attention
    (``column``: :class:`MSAColumnAttention`, or :class:`MSAColumnGlobalAttention` in the extra-MSA
    stack, Alg. 18) and a transition; the outer product mean carries it into the pair, which is then
    updated by the triangle updates and its transition (:class:`PairStack`).

    ``block(msa, pair, msa_mask, pair_mask) -> (msa, pair)``."""

    def __init__(self, *, msa_dim: int, pair_dim: int, cfg: BlockConfig, column: nn.Module) -> None:
        super().__init__()
        self.row_attn = MSARowAttentionWithPairBias(msa_dim=msa_dim, pair_dim=pair_dim, heads=cfg.msa_heads)
        self.col_attn = column
        self.msa_transition = Transition(dim=msa_dim, factor=cfg.transition_factor)
        self.outer = OuterProductMean(msa_dim=msa_dim, pair_dim=pair_dim, channels=cfg.outer_channels)
        self.pair_stack = PairStack(pair_dim=pair_dim, heads=cfg.pair_heads, channels=cfg.triangle_channels,
                                    factor=cfg.transition_factor, dropout=cfg.pair_dropout)
        self.msa_dropout = cfg.msa_dropout

    def forward(self, msa: Tensor, pair: Tensor, msa_mask: Tensor, pair_mask: Tensor, *,
                chunk_size: int | None = None) -> tuple[Tensor, Tensor]:
        update = self.row_attn(msa, msa_mask, pair, chunk_size=chunk_size)
        msa = msa + shared_dropout(update, self.msa_dropout, -3, self.training)
        msa = msa + self.col_attn(msa, msa_mask, chunk_size=chunk_size)
        msa = msa + self.msa_transition(msa, chunk_size=chunk_size)
        pair = pair + self.outer(msa, msa_mask, chunk_size=chunk_size)
        return msa, self.pair_stack(pair, pair_mask, chunk_size=chunk_size)


def evoformer_block(msa_dim: int, pair_dim: int, cfg: BlockConfig, *, extra: bool = False) -> EvoformerBlock:
    """An Evoformer block, or (``extra``) an extra-MSA stack block with global column attention."""
    column_cls = MSAColumnGlobalAttention if extra else MSAColumnAttention
    return EvoformerBlock(msa_dim=msa_dim, pair_dim=pair_dim, cfg=cfg,
                          column=column_cls(msa_dim=msa_dim, heads=cfg.msa_heads))
