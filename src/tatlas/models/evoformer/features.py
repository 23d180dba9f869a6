"""From an alignment to the tensors the Evoformer takes, as AlphaFold's input pipeline builds them
(Jumper et al. 2021, Suppl. §1.2.5-1.2.7 and Table 1; ``alphafold/model/tf/data_transforms.py``).

:func:`make_features` runs, in AlphaFold's order: the HHblits profile over the whole alignment
(``make_hhblits_profile``); the query plus a random choice of rows as cluster centres, the rest
extra sequences (``sample_msa``); BERT-style corruption of the centres (``make_masked_msa``, Suppl.
§1.9.9: 15 % of positions; each becomes a uniform amino acid with p 0.1, a draw from the profile
0.1, itself 0.1, the mask token 0.7); each extra sequence assigned to its nearest centre by
Hamming agreement, gaps and masks not counting (``nearest_neighbor_clusters``), and per-centre
profiles and deletion means (``summarize_clusters``); the extra sequences cropped to
``max_extra`` at random (``crop_extra_msa``); and the features (``make_msa_feat``).

Features (one protein; N_clust centres, N_extra extra rows, N_res residues):

- ``aatype [N_res]`` long (AlphaFold order, 20 = X), ``residue_index [N_res]`` long,
  ``seq_mask [N_res]`` float;
- ``target_feat [N_res, 22]``: a between-segment flag (0 for single chains) then one-hot aatype (21);
- ``msa_feat [N_clust, N_res, 49]``: one-hot corrupted centre (23) | has_deletion |
  ``2/π·atan(d/3)`` | cluster profile (23) | ``2/π·atan(mean d/3)``; ``msa_mask [N_clust, N_res]``;
- ``true_msa [N_clust, N_res]`` long and ``bert_mask [N_clust, N_res]`` float: the masked-MSA targets;
- ``extra_msa [N_extra, N_res]`` long, ``extra_has_deletion``, ``extra_deletion_value``,
  ``extra_msa_mask`` (float, ``[N_extra, N_res]``).

:func:`stack_features` pads several proteins to common sizes (AlphaFold's ``make_fixed_size``,
zeros with zero masks) and stacks them on a leading batch dimension.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tatlas.data.proteins import GAP, ProteinFamily, encode

from .msa_io import Msa

N_CLASSES = 23  # 20 amino acids, X, gap, mask


@dataclass(frozen=True, kw_only=True)
class FeatureOptions:
    """How an alignment becomes features: at most ``max_clusters`` centres (the query always
    first) and ``max_extra`` extra rows; the BERT corruption (``masked_fraction`` of positions,
    then ``uniform_prob`` / ``profile_prob`` / ``same_prob``, the rest the mask token); the weight
    of gap agreement when clustering. ``masked_fraction = 0`` turns the corruption off;
    ``shuffle=False`` takes the first ``max_clusters`` rows as centres and the first ``max_extra``
    of the rest as extra rows, in order (AlphaFold always draws both at random)."""

    max_clusters: int = 128
    max_extra: int = 1024
    masked_fraction: float = 0.15
    uniform_prob: float = 0.1
    profile_prob: float = 0.1
    same_prob: float = 0.1
    gap_agreement_weight: float = 0.0
    shuffle: bool = True

    def __post_init__(self) -> None:
        if self.max_clusters < 1 or self.max_extra < 0:
            raise ValueError(f"FeatureOptions: expected max_clusters >= 1 and max_extra >= 0, "
                             f"got {self.max_clusters}, {self.max_extra}")
        probs = (self.uniform_prob, self.profile_prob, self.same_prob)
        if not 0.0 <= self.masked_fraction <= 1.0 or min(probs) < 0.0 or sum(probs) > 1.0:
            raise ValueError(f"FeatureOptions: expected masked_fraction in [0, 1] and uniform/profile/same "
                             f"probabilities >= 0 summing to <= 1, got {self.masked_fraction} and {probs}")


def merge_msas(msas: Sequence[Msa]) -> tuple[np.ndarray, np.ndarray]:
    """Several alignments of one query -> ``(msa [N, L], deletion_matrix [N, L])`` int64, AlphaFold
    order, duplicate rows dropped (the first kept), as ``pipeline.make_msa_features`` does."""
    if not msas:
        raise ValueError("msas: expected at least one alignment, got none")
    seen, rows, dels = set(), [], []
    for m in msas:
        if m.length != msas[0].length:
            raise ValueError(f"msas: expected alignments of one query length, got {msas[0].length} and {m.length}")
        for seq, d in zip(m.sequences, m.deletion_matrix):
            if seq not in seen:
                seen.add(seq)
                rows.append(encode(seq))
                dels.append(d)
    return np.stack(rows), np.stack(dels).astype(np.int64)


def _one_hot(x: np.ndarray, n: int) -> np.ndarray:
    return np.eye(n, dtype=np.float32)[x]


def _deletion_value(d: np.ndarray) -> np.ndarray:
    return (np.arctan(d / 3.0) * (2.0 / math.pi)).astype(np.float32)


def make_features(msa: np.ndarray, deletion_matrix: np.ndarray | None = None, *,
                  options: FeatureOptions = FeatureOptions(),
                  seed: int | np.random.Generator = 0) -> dict[str, torch.Tensor]:
    """Features of one protein from ``msa [N, L]`` (AlphaFold indices, row 0 the query, no gaps
    in it) and ``deletion_matrix [N, L]`` (zeros if None). Deterministic given ``seed`` (an int or a
    numpy ``Generator``). See the module docstring for the keys and shapes."""
    msa = np.asarray(msa)
    dels = np.zeros(msa.shape, np.float32) if deletion_matrix is None else np.asarray(deletion_matrix, np.float32)
    if msa.ndim != 2 or msa.shape[0] < 1 or msa.shape[1] < 1 or dels.shape != msa.shape:
        raise ValueError(f"msa and deletion_matrix: expected the same [N >= 1, L >= 1], "
                         f"got {list(msa.shape)} and {list(dels.shape)}")
    if msa.min() < 0 or msa.max() > GAP:
        raise ValueError(f"msa: expected residue indices 0..{GAP} (AlphaFold order), got {msa.min()}..{msa.max()}")
    if (msa[0] == GAP).any():
        raise ValueError(f"msa: the query (row 0) has a gap at position {int(np.argmax(msa[0] == GAP))}; expected none")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    n, length = msa.shape
    o = options
    profile = _one_hot(msa, 22).mean(0)  # [L, 22] hhblits_profile over every row

    others = rng.permutation(n - 1) if o.shuffle else np.arange(n - 1)
    order = np.concatenate([[0], 1 + others])  # sample_msa: the query stays first
    sel, rest = order[: o.max_clusters], order[o.max_clusters :]
    true_msa, cdel = msa[sel], dels[sel]  # [C, L]
    xmsa, xdel = msa[rest], dels[rest]  # [E, L] before cropping

    # make_masked_msa: categorical over 22 classes + the mask token, at masked_fraction of positions
    uniform = np.array([0.05] * 20 + [0.0, 0.0], np.float32)
    probs = o.uniform_prob * uniform + o.profile_prob * profile[None] + o.same_prob * _one_hot(true_msa, 22)
    mask_prob = 1.0 - o.uniform_prob - o.profile_prob - o.same_prob
    probs = np.concatenate([probs, np.full(probs.shape[:-1] + (1,), mask_prob, np.float32)], -1)  # [C, L, 23]
    bert_mask = rng.random(true_msa.shape) < o.masked_fraction
    gumbel = -np.log(-np.log(rng.random(probs.shape)))
    replaced = np.argmax(np.log(probs + 1e-10) + gumbel, -1)
    centres = np.where(bert_mask, replaced, true_msa)  # [C, L] corrupted centres

    # nearest_neighbor_clusters: weighted agreement, gaps weighted gap_agreement_weight, masks 0
    weights = np.array([1.0] * 21 + [o.gap_agreement_weight, 0.0], np.float32)
    width = length * N_CLASSES
    extra_flat = _one_hot(xmsa, N_CLASSES).reshape(len(rest), width)  # [E, L*23]
    centre_flat = (_one_hot(centres, N_CLASSES) * weights).reshape(len(sel), width)  # [C, L*23]
    agreement = extra_flat @ centre_flat.T  # [E, C]
    assignment = np.argmax(agreement, 1) if len(rest) else np.zeros(0, np.int64)  # [E]

    # summarize_clusters: profiles and deletion means include the centre itself
    counts = 1e-6 + 1.0 + np.zeros((len(sel), length), np.float32)
    summed = _one_hot(centres, N_CLASSES)
    del_sum = cdel.copy()
    np.add.at(counts, assignment, 1.0)
    np.add.at(summed, assignment, _one_hot(xmsa, N_CLASSES))
    np.add.at(del_sum, assignment, xdel)
    cluster_profile = summed / counts[..., None]
    deletion_mean = del_sum / counts

    keep = (rng.permutation(len(rest)) if o.shuffle else np.arange(len(rest)))[: o.max_extra]  # crop_extra_msa
    xmsa, xdel = xmsa[keep], xdel[keep]

    msa_feat = np.concatenate([_one_hot(centres, N_CLASSES), np.clip(cdel, 0.0, 1.0)[..., None],
                               _deletion_value(cdel)[..., None], cluster_profile,
                               _deletion_value(deletion_mean)[..., None]], -1)  # [C, L, 49]
    has_break = np.zeros((length, 1), np.float32)  # between_segment_residues: 0 in one chain
    target_feat = np.concatenate([has_break, _one_hot(np.minimum(msa[0], 20), 21)], -1)  # [L, 22]
    t = torch.from_numpy
    return {
        "aatype": t(msa[0].astype(np.int64)),
        "residue_index": torch.arange(length),
        "seq_mask": torch.ones(length),
        "target_feat": t(target_feat),
        "msa_feat": t(msa_feat.astype(np.float32)),
        "msa_mask": torch.ones(len(sel), length),
        "true_msa": t(true_msa.astype(np.int64)),
        "bert_mask": t(bert_mask.astype(np.float32)),
        "extra_msa": t(xmsa.astype(np.int64)),
        "extra_has_deletion": t(np.clip(xdel, 0.0, 1.0).astype(np.float32)),
        "extra_deletion_value": t(_deletion_value(xdel)),
        "extra_msa_mask": torch.ones(len(keep), length),
    }


def family_features(family: ProteinFamily, *, options: FeatureOptions = FeatureOptions(),
                    seed: int | np.random.Generator = 0) -> dict[str, torch.Tensor]:
    """:func:`make_features` of an embedded family, plus its structure for the losses:
    ``pseudo_beta [N_res, 3]`` (the Cα, as AlphaFold uses for glycine) and ``pseudo_beta_mask``."""
    feats = make_features(family.msa, family.deletion_matrix, options=options, seed=seed)
    feats["pseudo_beta"] = torch.from_numpy(np.array(family.coords, dtype=np.float32))
    feats["pseudo_beta_mask"] = torch.ones(family.length)
    return feats


# the dimensions of every key, "R" residues, "M" centres, "E" extra rows; others are fixed
SCHEMA: dict[str, tuple[str, ...]] = {
    "aatype": ("R",), "residue_index": ("R",), "seq_mask": ("R",), "target_feat": ("R", "-"),
    "msa_feat": ("M", "R", "-"), "msa_mask": ("M", "R"), "true_msa": ("M", "R"), "bert_mask": ("M", "R"),
    "extra_msa": ("E", "R"), "extra_has_deletion": ("E", "R"), "extra_deletion_value": ("E", "R"),
    "extra_msa_mask": ("E", "R"), "pseudo_beta": ("R", "-"), "pseudo_beta_mask": ("R",),
}


def stack_features(features: Sequence[dict[str, torch.Tensor]], *, num_res: int | None = None,
                   num_clusters: int | None = None, num_extra: int | None = None) -> dict[str, torch.Tensor]:
    """Pad each protein's features with zeros (masks 0) to common sizes -- the largest in the list,
    or the given ones -- and stack them: every key gains a leading batch dimension B."""
    if not features:
        raise ValueError("features: expected at least one protein, got none")
    keys = set(features[0])
    unknown = sorted(keys - set(SCHEMA))
    if unknown or any(set(f) != keys for f in features):
        raise ValueError(f"features: expected the same keys from {sorted(SCHEMA)} in every protein, "
                         f"got unknown {unknown} or differing key sets")
    sizes = {}
    for dim, wanted in (("R", num_res), ("M", num_clusters), ("E", num_extra)):
        axes = [(k, a) for k in keys for a, d in enumerate(SCHEMA[k]) if d == dim]
        biggest = max([f[k].shape[a] for f in features for k, a in axes], default=0)
        if wanted is not None and wanted < biggest:
            raise ValueError(f"stack_features: a protein has {biggest} along {dim!r}, more than the requested {wanted}")
        sizes[dim] = biggest if wanted is None else wanted
    out = {}
    for k in sorted(keys):
        padded = []
        for f in features:
            x = f[k]
            pad = []
            for axis in reversed(range(x.dim())):
                dim = SCHEMA[k][axis]
                pad += [0, (sizes[dim] - x.shape[axis]) if dim in sizes else 0]
            padded.append(torch.nn.functional.pad(x, pad))
        out[k] = torch.stack(padded)
    return out
