"""The ``evoformer`` system's record (:class:`~tatlas.models.spec.System`)."""

from __future__ import annotations

import dataclasses

import torch

from ..spec import System
from .config import MSA_CLASSES, MSA_FEAT, PRESETS, TARGET_FEAT, EvoformerConfig
from .convert import from_alphafold_params
from .model import Evoformer
from .templates import TemplateFeatures
from .task import train_task


def _sample(model: Evoformer, gen: torch.Generator) -> dict:
    """Three proteins of 10 residues (the second with its last two padded), 4 MSA rows, 5 extra rows."""
    b, n, s, e = 3, 10, 4, 5
    aatype = torch.randint(0, 20, (b, n), generator=gen)
    seq_mask = torch.ones(b, n)
    seq_mask[1, -2:] = 0
    msa_mask = (torch.rand(b, s, n, generator=gen) > 0.1).float() * seq_mask[:, None]
    extra_mask = (torch.rand(b, e, n, generator=gen) > 0.1).float() * seq_mask[:, None]
    device = model.single.weight.device
    sample = {
        "target_feat": torch.nn.functional.one_hot(aatype + 1, TARGET_FEAT).float(),
        "msa_feat": torch.rand(b, s, n, MSA_FEAT, generator=gen),
        "residue_index": torch.arange(n).expand(b, n).clone(),
        "seq_mask": seq_mask, "msa_mask": msa_mask,
        "extra_msa": torch.randint(0, MSA_CLASSES, (b, e, n), generator=gen),
        "extra_has_deletion": (torch.rand(b, e, n, generator=gen) > 0.8).float(),
        "extra_deletion_value": torch.rand(b, e, n, generator=gen), "extra_msa_mask": extra_mask,
    }
    sample = {k: v.to(device) for k, v in sample.items()}
    if model.config.template is not None:  # two templates each; the second protein's second one absent
        t = 2
        atoms = torch.randn(b, t, n, 37, 3, generator=gen) * 3 + torch.arange(n)[:, None, None] * 3.8
        sample["templates"] = TemplateFeatures(
            aatype=torch.randint(0, 21, (b, t, n), generator=gen).to(device), atom_positions=atoms.to(device),
            atom_mask=(torch.rand(b, t, n, 37, generator=gen) > 0.1).float().to(device),
            pseudo_beta=atoms[..., 1, :].to(device), pseudo_beta_mask=torch.ones(b, t, n, device=device),
            mask=torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]], device=device))
    return sample


def _rows(sample: dict) -> list:
    """Batch invariance: protein ``i`` alone (its features and its templates) gives row ``i`` of
    every output."""
    def part(v, i):
        if isinstance(v, TemplateFeatures):
            return TemplateFeatures(**{f.name: getattr(v, f.name)[i : i + 1] for f in dataclasses.fields(v)})
        return v[i : i + 1]

    n = sample["target_feat"].shape[0]
    return [({k: part(v, i) for k, v in sample.items()}, lambda outs, i=i: [_row(o, i, n) for o in outs])
            for i in range(n)]


def _row(output: torch.Tensor, i: int, n: int) -> torch.Tensor:
    """Row ``i`` of an output of ``n`` rows; the structure module's trajectories lead with their
    iteration axis (``[L, B, ...]``: the sample's batch of 3 is never the tiny presets' L)."""
    return output[i : i + 1] if output.shape[0] == n else output[:, i : i + 1]


SYSTEM = System(
    name="evoformer",
    summary="AlphaFold2: Evoformer (MSA and pair stacks, triangle updates), templates, structure module with IPA",
    config_cls=EvoformerConfig,
    model_cls=Evoformer,
    presets=PRESETS,
    sample_input=_sample,
    batch_views=_rows,
    formats={"alphafold2": from_alphafold_params},
    train_task=train_task,
    train_preset="tiny-families",
    diagram=(
        "MSA features [S,R,49] + target [R,22] -> MSA rep m [S,R,c_m]; pair rep z [R,R,c_z] (outer sum + relpos)\n"
        "  + recycled (first row, pair, positions) + templates (pair stack, pointwise attention)\n"
        "  -> extra-MSA stack (global column attention) -> z\n"
        "  -> [ m: row attention biased by z, column attention, transition\n"
        "       z: + outer product mean(m), triangle mult out/in, triangle attention start/end, transition ] x blocks\n"
        "  -> single s = linear(m[0]); heads: distogram(z), masked MSA(m)\n"
        "  -> structure module: [ IPA(s, z, frames) -> transition -> backbone update -> torsion angles ] x layers\n"
        "  -> frames, Cα trace; FAPE loss"
    ),
    idea=(
        'Reason jointly over a multiple sequence alignment (which residues co-vary across evolution) and a pair '
        'representation (what each residue pair is like): row attention over the MSA is biased by the pair, the '
        'outer product mean writes MSA statistics into the pair, and triangle updates make the pair geometrically'
        ' consistent (edge i-j is updated from edges i-k and k-j, as the triangle inequality constrains '
        'distances).'
    ),
    paper=(
        'Jumper et al. 2021, Highly accurate protein structure prediction with AlphaFold (Nature 596), Supplement'
        ' §1.6'
    ),
    question=(
        'Why are the pair updates shaped as triangles, and by which two routes does information flow between the '
        'MSA and the pair representation?'
    ),
    highlight=(
        'MSARowAttentionWithPairBias', 'OuterProductMean', 'TriangleMultiplicationOutgoing',
        'TriangleMultiplicationIncoming', 'TriangleAttentionStartingNode', 'TriangleAttentionEndingNode',
        'InvariantPointAttention',
    ),
)
