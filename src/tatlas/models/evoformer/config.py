"""Configuration of the AlphaFold2 trunk and structure module (Jumper et al. 2021, Supplementary
Information §1.5-1.8; sizes of the released ``model_1``: Supplementary Table 1 and DeepMind's
``alphafold/model/config.py``).

Widths: ``msa_dim`` (c_m), ``pair_dim`` (c_z), ``extra_msa_dim`` (c_e), ``single_dim`` (c_s).
The extra-MSA stack uses the Evoformer's own block settings (:class:`BlockConfig`) at width c_e,
as DeepMind's code does. Dropout rates are those of training (Supplementary Table 4); inference
runs without them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TARGET_FEAT = 22  # one-hot residue type (20 + unknown) + the "between-segment" flag of AF2's target_feat
MSA_FEAT = 49  # cluster one-hot (23) + has_deletion + deletion_value + cluster profile (23) + deletion_mean
EXTRA_MSA_FEAT = 25  # one-hot (23) + has_deletion + deletion_value
MSA_CLASSES = 23  # 20 amino acids, unknown X, gap, the BERT mask token


@dataclass(frozen=True, kw_only=True)
class BlockConfig:
    """One Evoformer block (Alg. 6): MSA row attention with pair bias and column attention heads
    (per-head width = msa width / heads), the transitions' widening, the outer product mean's
    channels, the triangle updates' channels and heads, and the training dropout rates
    (row-wise for MSA rows and starting-node updates, column-wise for ending-node ones)."""

    msa_heads: int = 8
    pair_heads: int = 4
    transition_factor: int = 4
    outer_channels: int = 32
    triangle_channels: int = 128
    msa_dropout: float = 0.15
    pair_dropout: float = 0.25

    def __post_init__(self) -> None:
        for name in ("msa_heads", "pair_heads", "transition_factor", "outer_channels", "triangle_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"BlockConfig.{name}: expected >= 1, got {getattr(self, name)}")
        for name in ("msa_dropout", "pair_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"BlockConfig.{name}: expected a rate in [0, 1), got {getattr(self, name)}")


@dataclass(frozen=True, kw_only=True)
class TemplateConfig:
    """Template embedding (Alg. 2 lines 9-13, Alg. 16-17): each template's pair features
    (distogram of its pseudo-beta atoms, residue types, masks, optionally unit vectors between
    backbone frames) embedded at ``pair_dim`` (c_t), run through a ``blocks``-deep pair stack, and
    attended from the query pair representation point by point (``attention_heads`` of total
    width ``attention_dim``)."""

    pair_dim: int = 64
    blocks: int = 2
    heads: int = 4
    triangle_channels: int = 64
    transition_factor: int = 2
    attention_heads: int = 4
    attention_dim: int = 64
    dgram_bins: int = 39
    dgram_min: float = 3.25
    dgram_max: float = 50.75
    use_unit_vector: bool = False
    dropout: float = 0.25

    @property
    def pair_feat(self) -> int:
        """Width of a template's pair features: distogram + mask + two residue one-hots + unit
        vector (3) + backbone mask."""
        return self.dgram_bins + 1 + 2 * TARGET_FEAT + 3 + 1


@dataclass(frozen=True, kw_only=True)
class StructureConfig:
    """The structure module (Alg. 20): ``layers`` shared fold iterations of invariant point
    attention (Alg. 22: ``heads`` heads of ``scalar_qk``/``scalar_v`` scalar and
    ``point_qk``/``point_v`` point channels), a ``transition_layers``-deep transition, the backbone
    update (Alg. 23), and the torsion-angle head (Alg. 20 lines 11-14: ``angle_dim`` wide,
    ``angle_blocks`` residual blocks). Positions are in Å, the frames' translations in units of
    ``position_scale`` Å inside the module. FAPE (Alg. 28) clamps at ``fape_clamp`` Å and divides
    by ``fape_scale`` Å."""

    dim: int = 384
    layers: int = 8
    heads: int = 12
    scalar_qk: int = 16
    scalar_v: int = 16
    point_qk: int = 4
    point_v: int = 8
    transition_layers: int = 3
    angle_dim: int = 128
    angle_blocks: int = 2
    position_scale: float = 10.0
    fape_clamp: float = 10.0
    fape_scale: float = 10.0
    dropout: float = 0.1


@dataclass(frozen=True, kw_only=True)
class EvoformerConfig:
    """The AlphaFold2 network without its data pipeline: input and recycling embedders, optional
    templates, the extra-MSA stack, the Evoformer stack, the single representation, the distogram
    and masked-MSA heads and the structure module."""

    msa_dim: int = 256
    pair_dim: int = 128
    extra_msa_dim: int = 64
    single_dim: int = 384
    blocks: int = 48
    extra_blocks: int = 4
    block: BlockConfig = field(default_factory=BlockConfig)
    max_relative: int = 32  # relative positions clipped to +-32 (Alg. 4)
    recycle_bins: int = 15  # the recycled pseudo-beta distogram (Alg. 32)
    recycle_min: float = 3.25
    recycle_max: float = 20.75
    recycles: int = 3  # extra passes at inference (Alg. 2), each fed the last one's outputs
    template: TemplateConfig | None = field(default_factory=TemplateConfig)
    distogram_bins: int = 64
    distogram_first: float = 2.3125
    distogram_last: float = 21.6875
    structure: StructureConfig | None = field(default_factory=StructureConfig)

    def __post_init__(self) -> None:
        for name in ("msa_dim", "pair_dim", "extra_msa_dim", "single_dim", "distogram_bins"):
            if getattr(self, name) < 1:
                raise ValueError(f"EvoformerConfig.{name}: expected >= 1, got {getattr(self, name)}")
        for name in ("blocks", "extra_blocks", "recycles", "max_relative"):
            if getattr(self, name) < 0:
                raise ValueError(f"EvoformerConfig.{name}: expected >= 0, got {getattr(self, name)}")
        b = self.block
        for width, heads, what in ((self.msa_dim, b.msa_heads, "msa_dim"), (self.extra_msa_dim, b.msa_heads, "extra_msa_dim"),
                                   (self.pair_dim, b.pair_heads, "pair_dim")):
            if width % heads:
                raise ValueError(f"EvoformerConfig.{what} ({width}) must be divisible by its heads ({heads})")


_TINY_BLOCK = BlockConfig(msa_heads=2, pair_heads=2, transition_factor=2, outer_channels=4, triangle_channels=8)

PRESETS: dict[str, EvoformerConfig] = {
    "tiny": EvoformerConfig(
        msa_dim=16, pair_dim=16, extra_msa_dim=8, single_dim=16, blocks=2, extra_blocks=1, block=_TINY_BLOCK,
        max_relative=8, recycles=1,
        template=TemplateConfig(pair_dim=8, blocks=1, heads=2, triangle_channels=8, attention_heads=2, attention_dim=8),
        structure=StructureConfig(dim=16, layers=2, heads=2, scalar_qk=4, scalar_v=4, point_qk=2, point_v=2,
                                  transition_layers=2, angle_dim=8, angle_blocks=1),
    ),
    # what `tatlas train evoformer` and the demo train on the embedded families (which have no templates
    # and whose shallow alignments all fit the clusters, so no extra-MSA stack): dropout off for short runs
    "tiny-families": EvoformerConfig(
        msa_dim=16, pair_dim=32, extra_msa_dim=8, single_dim=32, blocks=2, extra_blocks=0,
        block=BlockConfig(msa_heads=2, pair_heads=2, transition_factor=2, outer_channels=8, triangle_channels=32,
                          msa_dropout=0.0, pair_dropout=0.0),
        max_relative=32, recycles=0, template=None,
        structure=StructureConfig(dim=32, layers=2, heads=2, scalar_qk=8, scalar_v=8, point_qk=2, point_v=2,
                                  transition_layers=1, angle_dim=16, angle_blocks=1, dropout=0.0),
    ),
    "alphafold2": EvoformerConfig(),  # DeepMind's model_1 sizes
}
