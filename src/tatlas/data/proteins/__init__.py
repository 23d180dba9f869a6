"""Embedded protein families for the Evoformer: generated on the fly, deterministic by seed,
nothing downloaded.

A family is a compact random Cα fold (:mod:`.chains`), a Potts model whose couplings sit on the
fold's contacts (:mod:`.potts`), and an alignment Gibbs-sampled from it with the native sequence as
its query (:mod:`.families`): the coevolution signal that direct coupling analysis (Weigt et al.
2009) and AlphaFold2's Evoformer (Jumper et al. 2021) read, in miniature. :mod:`.residues` holds
AlphaFold's residue alphabet.

- :func:`protein_families` ``(n, *, seed, split, length, depth, config)`` -> ``ProteinFamily``
  records (``sequence``, ``coords [L, 3]``, ``contacts [L, L]``, ``msa [N, L]``, ...), made as
  :class:`FamilyConfig` says; ``"train"`` and ``"test"`` are different families; one of them:
  :func:`protein_family`; made on first access: :class:`LazyFamilies`;
- :func:`random_chain`, :func:`contact_map`, :func:`distance_matrix`: the geometry;
- :func:`make_potts`, :func:`gibbs_sample`: the sequence model and its sampler.
"""

from .chains import (
    BOND, CONTACT_CUTOFF, LONG_RANGE, MEDIUM_RANGE, MIN_DISTANCE, contact_count, contact_map, distance_matrix,
    radius_of_gyration, random_chain, secondary_structure,
)
from .families import (
    FAMILY_SPLITS, FamilyConfig, LazyFamilies, ProteinFamily, make_family, protein_families, protein_family,
)
from .potts import Potts, compatibility_matrix, gibbs_sample, make_potts
from .residues import (
    AA_TO_ID, GAP, MASK_TOKEN, RESNAMES, RESTYPE_1TO3, RESTYPES, RESTYPES_WITH_X, RESTYPES_WITH_X_AND_GAP, UNKNOWN,
    decode, encode,
)

__all__ = [
    "AA_TO_ID", "BOND", "CONTACT_CUTOFF", "FAMILY_SPLITS", "GAP", "LONG_RANGE", "MASK_TOKEN", "MEDIUM_RANGE",
    "MIN_DISTANCE", "RESNAMES", "RESTYPES", "RESTYPES_WITH_X", "RESTYPES_WITH_X_AND_GAP", "RESTYPE_1TO3", "UNKNOWN",
    "FamilyConfig", "LazyFamilies", "Potts", "ProteinFamily", "compatibility_matrix", "contact_count", "contact_map", "decode",
    "distance_matrix", "encode", "gibbs_sample", "make_family", "make_potts", "protein_families", "protein_family",
    "radius_of_gyration",
    "random_chain", "secondary_structure",
]
