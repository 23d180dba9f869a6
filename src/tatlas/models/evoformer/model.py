"""AlphaFold2 (Jumper et al. 2021, "Highly accurate protein structure prediction with AlphaFold"),
Supplement Alg. 2 "Inference", from features to structure, as DeepMind's ``AlphaFoldIteration``
composes it:

1. embed the MSA and the pair (Alg. 3-5) and add last pass's outputs (recycling, Alg. 32);
2. add the templates' pair embedding (Alg. 16-17);
3. the extra-MSA stack (Alg. 18: Evoformer blocks with global column attention) refines the pair;
4. the Evoformer stack (Alg. 6) refines MSA and pair together;
5. the single representation is a projection of the first MSA row;
6. the heads: distogram (§1.9.8), masked MSA (§1.9.9), and the structure module (Alg. 20), whose
   frames give the backbone and the Cα trace.

Features are named as AlphaFold's batch (:mod:`.features` builds them from an MSA). A leading batch
dimension is optional everywhere. :meth:`Evoformer.predict` runs the recycling passes
(``config.recycles`` extra passes, each fed the last one's first MSA row, pair and positions,
without gradients through them). Recycled positions are the predicted Cα (AlphaFold2 recycles the
pseudo-β of its full-atom model, which is not built here).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .config import EvoformerConfig
from .embed import ExtraMsaEmbedder, InputEmbedder, RecyclingEmbedder
from .heads import DistogramHead, MaskedMsaHead
from .structure import StructureModule
from .templates import TemplateEmbedder, TemplateFeatures
from .trunk import evoformer_block


@dataclass(frozen=True)
class Recycled:
    """What one pass hands to the next: the first MSA row ``[*, N_res, c_m]``, the pair
    ``[*, N_res, N_res, c_z]`` and the positions ``[*, N_res, 3]`` (Å)."""

    msa_first_row: Tensor
    pair: Tensor
    positions: Tensor


@dataclass(frozen=True)
class EvoformerOutput:
    """One pass: the representations, the heads' logits, the structure module's result (``None``
    without one), and what the next pass recycles."""

    msa: Tensor  # [*, N_seq, N_res, c_m] (the MSA rows only)
    pair: Tensor  # [*, N_res, N_res, c_z]
    single: Tensor  # [*, N_res, c_s]
    distogram_logits: Tensor  # [*, N_res, N_res, bins]
    masked_msa_logits: Tensor  # [*, N_seq, N_res, 23]
    structure: object | None
    recycled: Recycled

    @property
    def positions(self) -> Tensor | None:
        """Predicted Cα positions ``[*, N_res, 3]`` (Å) of the last structure-module iteration."""
        return None if self.structure is None else self.structure.positions[-1]


class Evoformer(nn.Module):
    """See the module docstring; ``forward(**features) -> EvoformerOutput`` is one pass."""

    def __init__(self, config: EvoformerConfig) -> None:
        super().__init__()
        self.config = c = config
        self.input_embedder = InputEmbedder(msa_dim=c.msa_dim, pair_dim=c.pair_dim, max_relative=c.max_relative)
        self.recycling = RecyclingEmbedder(msa_dim=c.msa_dim, pair_dim=c.pair_dim, bins=c.recycle_bins,
                                           low=c.recycle_min, high=c.recycle_max)
        self.templates = None if c.template is None else TemplateEmbedder(pair_dim=c.pair_dim, cfg=c.template,
                                                                          block=c.block)
        self.extra_embedder = ExtraMsaEmbedder(extra_msa_dim=c.extra_msa_dim) if c.extra_blocks else None
        self.extra_blocks = nn.ModuleList(evoformer_block(c.extra_msa_dim, c.pair_dim, c.block, extra=True)
                                          for _ in range(c.extra_blocks))
        self.blocks = nn.ModuleList(evoformer_block(c.msa_dim, c.pair_dim, c.block) for _ in range(c.blocks))
        self.single = nn.Linear(c.msa_dim, c.single_dim)
        self.distogram = DistogramHead(pair_dim=c.pair_dim, bins=c.distogram_bins, first=c.distogram_first,
                                       last=c.distogram_last)
        self.masked_msa = MaskedMsaHead(msa_dim=c.msa_dim)
        self.structure = None if c.structure is None else StructureModule(
            single_dim=c.single_dim, pair_dim=c.pair_dim, config=c.structure)

    def initial_recycled(self, target_feat: Tensor) -> Recycled:
        """The zeros the first pass recycles (as AlphaFold2 starts)."""
        c, lead = self.config, target_feat.shape[:-1]  # [*, N_res]
        zeros = lambda *shape: target_feat.new_zeros(*lead[:-1], *shape)  # noqa: E731
        n = lead[-1]
        return Recycled(zeros(n, c.msa_dim), zeros(n, n, c.pair_dim), zeros(n, 3))

    def forward(
        self, *, target_feat: Tensor, msa_feat: Tensor, residue_index: Tensor, seq_mask: Tensor, msa_mask: Tensor,
        extra_msa: Tensor, extra_has_deletion: Tensor, extra_deletion_value: Tensor, extra_msa_mask: Tensor,
        templates: TemplateFeatures | None = None, recycled: Recycled | None = None, chunk_size: int | None = None,
        **unused: Tensor,
    ) -> EvoformerOutput:
        """One pass over the features of AlphaFold's batch (shapes in :mod:`.features`); ``recycled``:
        the last pass's :class:`Recycled` (zeros for the first pass); ``chunk_size``: run the
        attentions, transitions and outer product means on slices of this many rows."""
        seq_mask = seq_mask.to(target_feat.dtype)
        recycled = recycled if recycled is not None else self.initial_recycled(target_feat)
        msa, pair = self.input_embedder(target_feat, msa_feat, residue_index)
        msa, pair = self.recycling(msa, pair, recycled.msa_first_row, recycled.pair, recycled.positions)
        pair_mask = seq_mask[..., :, None] * seq_mask[..., None, :]  # [*, N_res, N_res]
        if self.templates is not None and templates is not None:
            pair = pair + self.templates(pair, templates, pair_mask, chunk_size=chunk_size)
        if self.extra_embedder is not None:  # the extra-MSA stack (Alg. 2 lines 14-15)
            extra = self.extra_embedder(extra_msa, extra_has_deletion, extra_deletion_value)
            for block in self.extra_blocks:
                extra, pair = block(extra, pair, extra_msa_mask, pair_mask, chunk_size=chunk_size)
        for block in self.blocks:
            msa, pair = block(msa, pair, msa_mask, pair_mask, chunk_size=chunk_size)
        single = self.single(msa[..., 0, :, :])
        structure = None if self.structure is None else self.structure(single, pair, seq_mask)
        positions = structure.positions[-1] if structure is not None else recycled.positions
        return EvoformerOutput(
            msa=msa, pair=pair, single=single, distogram_logits=self.distogram(pair),
            masked_msa_logits=self.masked_msa(msa), structure=structure,
            recycled=Recycled(msa[..., 0, :, :], pair, positions),
        )

    def predict(self, features: dict[str, Tensor], *, recycles: int | None = None,
                chunk_size: int | None = None) -> EvoformerOutput:
        """``recycles`` (default ``config.recycles``) passes without gradient, then the last one."""
        recycled = None
        for _ in range(self.config.recycles if recycles is None else recycles):
            with torch.no_grad():
                out = self(**features, recycled=recycled, chunk_size=chunk_size)
            recycled = Recycled(*(t.detach() for t in (out.recycled.msa_first_row, out.recycled.pair,
                                                      out.recycled.positions)))
        return self(**features, recycled=recycled, chunk_size=chunk_size)
