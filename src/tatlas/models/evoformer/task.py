"""Training the ``evoformer`` system on embedded protein families (:mod:`tatlas.data.proteins`:
self-avoiding Cα chains, Potts models coupled on their contacts, Gibbs-sampled alignments), with
AlphaFold2's losses (Jumper et al. 2021, Supplement §1.9): the distogram cross-entropy (weight 0.3),
the masked-MSA cross-entropy (2.0) and, with a structure module, the backbone FAPE over the
trajectory (1.0; Alg. 20 line 17) and the torsion head's angle-norm penalty (0.01; no side-chain labels
here, so no χ loss). The families carry Cα positions only, so the target frames are
built from three consecutive Cα (``Rigid.from_3_points(Cα_{i-1}, Cα_i, Cα_{i+1})``; the chain's ends
are left out of the frames' mask), and the distogram's pseudo-β is the Cα.

Each draw of a family re-samples its MSA clusters, extra rows and BERT mask, as AlphaFold's data
pipeline does per step. Evaluation: top-L/5 long-range contact precision on held-out families
(contact probability = the distogram's mass below 8 Å), beside the coevolution baseline computed
from the same alignments.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ...data.proteins import LazyFamilies, ProteinFamily, protein_families
from ...nn.frames import Rigid
from ..spec import TrainTask
from .config import EvoformerConfig
from .features import FeatureOptions, family_features, stack_features
from .heads import distogram_loss, masked_msa_loss
from .metrics import contact_precision, contact_probs_from_distogram
from .structure import angle_norm_loss, backbone_loss

WEIGHTS = {"distogram": 0.3, "masked_msa": 2.0, "fape": 1.0, "angle_norm": 0.01}  # AlphaFold2's (Suppl. §1.9)


class FamilyDataset(Dataset):
    """Draw ``i`` is family ``i % len(families)`` featurised with its own seed (fresh clusters, extra
    rows and BERT mask each draw)."""

    def __init__(self, families: Sequence[ProteinFamily], *, options: FeatureOptions, seed: int = 0) -> None:
        # kept as given: a LazyFamilies makes each family when it is first drawn (list() made them all)
        self.families = families if isinstance(families, Sequence) else list(families)
        self.options, self.seed = options, seed

    def __len__(self) -> int:
        return len(self.families) * 1000  # an endless stream for the trainer's sampler

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        family = self.families[index % len(self.families)]
        return family_features(family, options=self.options, seed=np.random.default_rng([self.seed, index]))


def collate(batch: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    return stack_features(batch)


def ca_frames(ca: Tensor, mask: Tensor) -> tuple[Rigid, Tensor]:
    """Frames from consecutive Cα: ``ca [*, N_res, 3]``, ``mask [*, N_res]`` -> frames ``[*, N_res]``
    and their mask (both neighbours present; the ends never are)."""
    prev, nxt = torch.roll(ca, 1, -2), torch.roll(ca, -1, -2)
    frames = Rigid.from_3_points(prev, ca, nxt)
    ok = mask * torch.roll(mask, 1, -1) * torch.roll(mask, -1, -1)
    ok[..., 0] = 0
    ok[..., -1] = 0
    return frames, ok


def evoformer_loss(model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """AlphaFold2's weighted losses on one pass (no recycling in training here)."""
    out = model(**batch)
    distogram = distogram_loss(out.distogram_logits, _edges(model), batch["pseudo_beta"], batch["pseudo_beta_mask"])
    msa = masked_msa_loss(out.masked_msa_logits, batch["true_msa"], batch["bert_mask"])
    losses = {"distogram": distogram.mean(), "masked_msa": msa.mean()}
    if out.structure is not None:
        target, mask = ca_frames(batch["pseudo_beta"], batch["pseudo_beta_mask"])
        losses["fape"] = backbone_loss(out.structure, target, mask, _config(model).structure).mean()
        losses["angle_norm"] = angle_norm_loss(out.structure, batch["seq_mask"]).mean()
    total = sum(WEIGHTS[k] * v for k, v in losses.items())
    return {"loss": total, **losses}


def _config(model: nn.Module) -> EvoformerConfig:
    return getattr(model, "module", model).config  # through DDP


def _edges(model: nn.Module) -> Tensor:
    return getattr(model, "module", model).distogram.edges


@torch.no_grad()
def predictions(model: nn.Module, families: Sequence[ProteinFamily], *, options: FeatureOptions,
                seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Each family's predicted contact probabilities ``[L, L]`` and (with a structure module) Cα
    trace ``[L, 3]`` (Å), one pass per family in eval mode."""
    was = model.training
    model.eval()
    net = getattr(model, "module", model)
    c = net.config
    device = next(model.parameters()).device
    contacts, traces = [], []
    for i, family in enumerate(families):
        feats = family_features(family, options=options, seed=np.random.default_rng([seed, 10_000 + i]))
        out = net(**{k: v.to(device) for k, v in feats.items()})
        probs = contact_probs_from_distogram(out.distogram_logits.float(), first_break=c.distogram_first,
                                             last_break=c.distogram_last)
        contacts.append(probs.cpu().numpy())
        if out.positions is not None:
            traces.append(out.positions.float().cpu().numpy())
    model.train(was)
    return contacts, traces or None


def contact_scores(model: nn.Module, families: Sequence[ProteinFamily], *, options: FeatureOptions,
                   seed: int = 0) -> list[np.ndarray]:
    """Each family's predicted contact probabilities ``[L, L]``."""
    return predictions(model, families, options=options, seed=seed)[0]


def mean_precision(scores: Sequence[np.ndarray], families: Sequence[ProteinFamily], *, top: int = 5,
                   separation: str = "long") -> float:
    return float(np.mean([contact_precision(s, f.contacts, top=top, separation=separation)
                          for s, f in zip(scores, families, strict=True)]))


DEPTH = 64  # sequences per embedded alignment: shallow, where coevolution statistics are noisy
LENGTH = (32, 48)


def train_options(config: EvoformerConfig, depth: int = DEPTH) -> FeatureOptions:
    """MSA sizes a small model trains on in a fraction of a second per step: every row a cluster when
    the model has no extra-MSA stack (as the covariance baseline reads every row), else half and half."""
    if config.extra_blocks == 0:
        return FeatureOptions(max_clusters=depth, max_extra=0)
    return FeatureOptions(max_clusters=depth // 2, max_extra=depth - depth // 2)


def make_task(config: EvoformerConfig, seed: int = 0, *, n_train: int = 64, n_test: int = 8,
              length: tuple[int, int] = LENGTH, depth: int = DEPTH) -> tuple[TrainTask, tuple, tuple]:
    """The task (``eval_fn``: long-range top-L/5 contact precision on the test families) and its families."""
    train = LazyFamilies(n_train, seed=seed, split="train", length=length, depth=depth)  # made when drawn
    test = protein_families(n_test, seed=seed, split="test", length=length, depth=depth)
    options = train_options(config, depth)

    def evaluate(model: nn.Module) -> dict[str, float]:
        return {"contact_precision": mean_precision(contact_scores(model, test, options=options, seed=seed), test)}

    task = TrainTask(train_data=FamilyDataset(train, options=options, seed=seed), loss_fn=evoformer_loss,
                     eval_fn=evaluate, collate_fn=collate)
    return task, train, test


def train_task(config: EvoformerConfig, seed: int = 0) -> TrainTask:
    return make_task(config, seed)[0]
