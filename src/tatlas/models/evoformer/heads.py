"""Heads on the trunk's representations and their losses (Jumper et al. 2021, AlphaFold2 Supplement
§1.9.8 "Distogram prediction" and §1.9.9 "Masked MSA prediction"); losses are computed outside the
model, from its outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import MSA_CLASSES


class DistogramHead(nn.Module):
    """``pair [*, N_res, N_res, c_z]`` -> symmetric logits ``[*, N_res, N_res, bins]`` over distance
    bins whose ``bins - 1`` inner edges are ``linspace(first, last)`` Å (:attr:`edges`)."""

    def __init__(self, *, pair_dim: int, bins: int, first: float, last: float) -> None:
        super().__init__()
        self.proj = nn.Linear(pair_dim, bins)
        self.register_buffer("edges", torch.linspace(first, last, bins - 1), persistent=False)
        self._edges = (first, last, bins - 1)

    def reset_buffers(self, device: torch.device | str | None = None) -> None:
        self.edges = torch.linspace(*self._edges, device=device or "cpu")

    def forward(self, pair: Tensor) -> Tensor:
        half = self.proj(pair)
        return half + half.transpose(-2, -3)


class MaskedMsaHead(nn.Module):
    """``msa [*, N_seq, N_res, c_m]`` -> logits ``[*, N_seq, N_res, 23]`` of each MSA entry's residue."""

    def __init__(self, *, msa_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(msa_dim, MSA_CLASSES)

    def forward(self, msa: Tensor) -> Tensor:
        return self.proj(msa)


def distogram_loss(logits: Tensor, edges: Tensor, positions: Tensor, mask: Tensor) -> Tensor:
    """Cross-entropy of the distogram against the true distances between ``positions [*, N_res, 3]``
    (pseudo-β), over the pairs where both ``mask [*, N_res]`` entries are set (AlphaFold2's
    ``_distogram_log_loss``). Returns ``[*]``."""
    dist2 = (positions[..., :, None, :] - positions[..., None, :, :]).square().sum(-1, keepdim=True)
    true_bins = (dist2 > edges.square()).sum(-1)  # [*, N_res, N_res]
    errors = -(F.log_softmax(logits.float(), -1) * F.one_hot(true_bins, logits.shape[-1])).sum(-1)
    square = mask[..., :, None] * mask[..., None, :]
    return (errors * square).sum((-1, -2)) / (1e-6 + square.sum((-1, -2)))


def masked_msa_loss(logits: Tensor, true_msa: Tensor, bert_mask: Tensor) -> Tensor:
    """Cross-entropy at the masked MSA entries (``bert_mask [*, N_seq, N_res]``), AlphaFold2's
    ``MaskedMsaHead.loss``. Returns ``[*]``."""
    errors = -(F.log_softmax(logits.float(), -1) * F.one_hot(true_msa.long(), MSA_CLASSES)).sum(-1)
    return (errors * bert_mask).sum((-1, -2)) / (1e-8 + bert_mask.sum((-1, -2)))
