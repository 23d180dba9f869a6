"""The embedders that turn features into the first MSA and pair representations (Jumper et al. 2021,
AlphaFold2 Supplement §1.5): the input embedder with relative positions (Alg. 3-5), the recycling
embedder (Alg. 32) and the extra-MSA embedding (Alg. 2 line 14), as DeepMind's
``EmbeddingsAndEvoformer`` computes them.

Shapes: ``target_feat [*, N_res, 22]``, ``msa_feat [*, N_seq, N_res, 49]``, ``residue_index [*, N_res]``,
``extra_msa [*, N_extra, N_res]`` (ids), positions ``[*, N_res, 3]`` in Å.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...nn import LayerNorm
from .config import EXTRA_MSA_FEAT, MSA_CLASSES, MSA_FEAT, TARGET_FEAT

CA, CB = 1, 3  # atom37 indices (AlphaFold's residue_constants.atom_order)
GLYCINE = 7  # AlphaFold's residue order ARNDCQEGHILKMFPSTWYV


def pseudo_beta(aatype: Tensor, atom37: Tensor) -> Tensor:
    """Cβ, or Cα for glycine: ``aatype [*, N_res]``, ``atom37 [*, N_res, 37, 3]`` -> ``[*, N_res, 3]``."""
    return torch.where((aatype == GLYCINE)[..., None], atom37[..., CA, :], atom37[..., CB, :])


def dgram_from_positions(positions: Tensor, bins: int, low: float, high: float) -> Tensor:
    """One-hot distogram of ``positions [*, N_res, 3]`` -> ``[*, N_res, N_res, bins]``: bin ``b`` holds
    distances in ``(edge_b, edge_{b+1})`` with edges ``linspace(low, high, bins)``, the last bin
    open-ended (AlphaFold2's ``dgram_from_positions``; compared as squared distances)."""
    lower = torch.linspace(low, high, bins, dtype=positions.dtype, device=positions.device) ** 2
    upper = torch.cat([lower[1:], lower.new_full((1,), 1e8)])
    dist2 = (positions[..., :, None, :] - positions[..., None, :, :]).square().sum(-1, keepdim=True)
    return ((dist2 > lower) & (dist2 < upper)).to(positions.dtype)


class InputEmbedder(nn.Module):
    """Alg. 3-4: the MSA representation ``msa_feat`` projected plus the projected target features
    on every row; the pair representation as the outer sum of two projections of the target
    features plus the embedding of the relative position ``clip(i - j, -max, max)`` (one-hot)."""

    def __init__(self, *, msa_dim: int, pair_dim: int, max_relative: int) -> None:
        super().__init__()
        self.max_relative = max_relative
        self.target_msa = nn.Linear(TARGET_FEAT, msa_dim)
        self.msa = nn.Linear(MSA_FEAT, msa_dim)
        self.left, self.right = nn.Linear(TARGET_FEAT, pair_dim), nn.Linear(TARGET_FEAT, pair_dim)
        self.relpos = nn.Linear(2 * max_relative + 1, pair_dim) if max_relative else None

    def forward(self, target_feat: Tensor, msa_feat: Tensor, residue_index: Tensor) -> tuple[Tensor, Tensor]:
        msa = self.msa(msa_feat) + self.target_msa(target_feat).unsqueeze(-3)  # [*, N_seq, N_res, c_m]
        pair = self.left(target_feat)[..., :, None, :] + self.right(target_feat)[..., None, :, :]  # [*, N_res, N_res, c_z]
        if self.relpos is not None:
            offset = residue_index[..., :, None] - residue_index[..., None, :]
            rel = (offset + self.max_relative).clamp(0, 2 * self.max_relative).long()
            pair = pair + self.relpos(F.one_hot(rel, 2 * self.max_relative + 1).to(pair.dtype))
        return msa, pair


class RecyclingEmbedder(nn.Module):
    """Alg. 32: the last pass's pseudo-β distogram (projected), its first MSA row and its pair
    representation (each layer-normalised) added to this pass's representations. The first pass
    recycles zeros, as AlphaFold2 does."""

    def __init__(self, *, msa_dim: int, pair_dim: int, bins: int, low: float, high: float) -> None:
        super().__init__()
        self.bins, self.low, self.high = bins, low, high
        self.positions = nn.Linear(bins, pair_dim)
        self.msa_norm, self.pair_norm = LayerNorm(msa_dim), LayerNorm(pair_dim)

    def forward(self, msa: Tensor, pair: Tensor, prev_msa_first_row: Tensor, prev_pair: Tensor,
                prev_positions: Tensor) -> tuple[Tensor, Tensor]:
        pair = pair + self.positions(dgram_from_positions(prev_positions, self.bins, self.low, self.high))
        first = msa[..., :1, :, :] + self.msa_norm(prev_msa_first_row).unsqueeze(-3)
        return torch.cat([first, msa[..., 1:, :, :]], dim=-3), pair + self.pair_norm(prev_pair)


class ExtraMsaEmbedder(nn.Module):
    """Alg. 2 line 14: the extra MSA's one-hot residues (23 classes) and deletion features projected
    to ``c_e``."""

    def __init__(self, *, extra_msa_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(EXTRA_MSA_FEAT, extra_msa_dim)

    def forward(self, extra_msa: Tensor, has_deletion: Tensor, deletion_value: Tensor) -> Tensor:
        one_hot = F.one_hot(extra_msa.long(), MSA_CLASSES).to(has_deletion.dtype)
        return self.proj(torch.cat([one_hot, has_deletion[..., None], deletion_value[..., None]], dim=-1))
