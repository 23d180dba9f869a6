"""Templates: known structures of related proteins, embedded into the pair representation (Jumper et
al. 2021, AlphaFold2 Supplement Alg. 2 lines 9-13, Alg. 16 "TemplatePairStack", Alg. 17
"TemplatePointwiseAttention"), as DeepMind's ``TemplateEmbedding`` computes them.

Each template's pair features — the one-hot distogram of its pseudo-β atoms, the residue types of
both ends, unit vectors from each residue's backbone frame to every other Cα, and masks — are
embedded at ``c_t``, refined by a small pair stack and normalised; then every pair ``ij`` of the
query attends over the templates' pairs ``ij`` (weights shared by all templates). (The template rows
AlphaFold2 adds to the MSA from torsion angles are not part of this port.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...nn import Attention, LayerNorm, chunked
from ...nn.frames import Rigid
from .config import TARGET_FEAT, BlockConfig, TemplateConfig
from .embed import dgram_from_positions
from .trunk import TemplatePairBlock

N, CA, C = 0, 1, 2  # atom37 indices


@dataclass(frozen=True)
class TemplateFeatures:
    """``T`` templates aligned to the query's ``N_res`` residues (AlphaFold's ``template_*`` features)."""

    aatype: Tensor  # [*, T, N_res] int, AlphaFold order (21 = gap)
    atom_positions: Tensor  # [*, T, N_res, 37, 3] Å
    atom_mask: Tensor  # [*, T, N_res, 37]
    pseudo_beta: Tensor  # [*, T, N_res, 3]
    pseudo_beta_mask: Tensor  # [*, T, N_res]
    mask: Tensor  # [*, T]: whether the template exists


def template_pair_features(t: TemplateFeatures, cfg: TemplateConfig) -> Tensor:
    """``[*, T, N_res, N_res, pair_feat]``: distogram, pseudo-β mask, residue types of ``j`` then
    ``i``, unit vectors (zeros unless ``use_unit_vector``), backbone mask; zero where either
    residue lacks its backbone."""
    dtype = t.pseudo_beta.dtype
    pb_mask = t.pseudo_beta_mask.to(dtype)
    dgram = dgram_from_positions(t.pseudo_beta, cfg.dgram_bins, cfg.dgram_min, cfg.dgram_max)
    aatype = F.one_hot(t.aatype.long(), TARGET_FEAT).to(dtype)  # [*, T, N_res, 22]
    n = aatype.shape[-2]
    backbone = t.atom_mask[..., N] * t.atom_mask[..., CA] * t.atom_mask[..., C]  # [*, T, N_res]
    backbone_2d = (backbone[..., :, None] * backbone[..., None, :]).to(dtype)
    frames = Rigid.from_3_points(t.atom_positions[..., N, :], t.atom_positions[..., CA, :], t.atom_positions[..., C, :])
    local = frames.unsqueeze(-1).invert_apply(t.atom_positions[..., None, :, CA, :])  # [*, T, i, j, 3]
    unit = local * torch.rsqrt(1e-6 + local.square().sum(-1, keepdim=True)) * backbone_2d[..., None]
    if not cfg.use_unit_vector:
        unit = torch.zeros_like(unit)
    features = torch.cat([
        dgram, (pb_mask[..., :, None] * pb_mask[..., None, :])[..., None],
        aatype[..., None, :, :].expand(*aatype.shape[:-2], n, n, TARGET_FEAT),
        aatype[..., :, None, :].expand(*aatype.shape[:-2], n, n, TARGET_FEAT),
        unit, backbone_2d[..., None],
    ], dim=-1)
    return features * backbone_2d[..., None]


class TemplateEmbedder(nn.Module):
    """``pair [*, N_res, N_res, c_z]`` and :class:`TemplateFeatures` -> the pair update: each template
    embedded (Alg. 2 line 9), run through the template pair stack (Alg. 16) and normalised, then
    attended point by point from the query (Alg. 17); zero when no template exists."""

    def __init__(self, *, pair_dim: int, cfg: TemplateConfig, block: BlockConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Linear(cfg.pair_feat, cfg.pair_dim)
        self.blocks = nn.ModuleList(
            TemplatePairBlock(pair_dim=cfg.pair_dim, heads=cfg.heads, channels=cfg.triangle_channels,
                              factor=cfg.transition_factor, dropout=cfg.dropout)
            for _ in range(cfg.blocks))
        self.norm = LayerNorm(cfg.pair_dim)
        self.attn = Attention(dim=pair_dim, heads=cfg.attention_heads, head_dim=cfg.attention_dim // cfg.attention_heads,
                              kv_dim=cfg.pair_dim, qkv_bias=False, out_bias=True)

    def forward(self, pair: Tensor, templates: TemplateFeatures, pair_mask: Tensor, *,
                chunk_size: int | None = None) -> Tensor:
        x = self.embed(template_pair_features(templates, self.cfg))  # [*, T, N_res, N_res, c_t]
        mask = pair_mask.unsqueeze(-3).expand(x.shape[:-1])  # [*, T, N_res, N_res]
        for block in self.blocks:
            x = block(x, mask, chunk_size=chunk_size)
        x = self.norm(x).movedim(-4, -2)  # [*, N_res, N_res, T, c_t]
        tmask = templates.mask.to(pair.dtype)  # [*, T]
        bias = (1e9 * (tmask - 1.0))[..., None, None, None, None, :]  # [*, 1, 1, 1(H), 1(q), T]
        query = pair.unsqueeze(-2)  # [*, N_res, N_res, 1, c_z]
        attend = chunked(lambda q, kv: self.attn(q, kv, bias=bias), chunk_size, dim=-4)
        out = attend(query, x)[..., 0, :]  # [*, N_res, N_res, c_z]
        return out * (tmask.sum(-1) > 0).to(out.dtype)[..., None, None, None]
