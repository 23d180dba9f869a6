"""The residue alphabet, as AlphaFold's ``alphafold/common/residue_constants.py`` (Jumper et al.
2021) writes it.

Two orders are in play. HHblits (and so every A3M file) numbers the letters
``"ACDEFGHIKLMNPQRSTVWYX-"`` (:data:`HHBLITS_AA_TO_ID`, which also folds the rare letters B -> D,
Z -> E, U -> C and J, O -> X); AlphaFold's model numbers them by sorted three-letter names,
``"ARNDCQEGHILKMFPSTWYV"`` then ``X`` (20) and the gap ``-`` (21) (:data:`RESTYPES_WITH_X_AND_GAP`).
:data:`MAP_HHBLITS_AATYPE_TO_OUR_AATYPE` takes the first order to the second, as
``data_transforms.correct_msa_restypes`` does. Everything in ``tatlas`` past the file parsers uses
AlphaFold's order; :data:`MASK_TOKEN` (22) is the masked-MSA token of BERT-style training.
"""

from __future__ import annotations

import numpy as np

RESTYPES = "ARNDCQEGHILKMFPSTWYV"  # AlphaFold's order: 3-letter names sorted alphabetically
RESTYPE_NUM = 20
UNKNOWN = 20  # X
GAP = 21  # "-"
MASK_TOKEN = 22  # the BERT mask of the masked-MSA objective
RESTYPES_WITH_X = RESTYPES + "X"
RESTYPES_WITH_X_AND_GAP = RESTYPES + "X-"
RESTYPE_ORDER = {r: i for i, r in enumerate(RESTYPES)}

RESTYPE_1TO3 = {
    "A": "ALA", "R": "ARG", "N": "ASN", "D": "ASP", "C": "CYS", "Q": "GLN", "E": "GLU", "G": "GLY",
    "H": "HIS", "I": "ILE", "L": "LEU", "K": "LYS", "M": "MET", "F": "PHE", "P": "PRO", "S": "SER",
    "T": "THR", "W": "TRP", "Y": "TYR", "V": "VAL",
}
RESNAMES = tuple(RESTYPE_1TO3[r] for r in RESTYPES) + ("UNK",)  # index by aatype (0..20)

# HHblits numbering of every letter it accepts (upper case), as residue_constants.HHBLITS_AA_TO_ID.
HHBLITS_ORDER = "ACDEFGHIKLMNPQRSTVWYX-"
HHBLITS_AA_TO_ID: dict[str, int] = {a: i for i, a in enumerate(HHBLITS_ORDER)}
HHBLITS_AA_TO_ID.update({"B": 2, "Z": 3, "U": 1, "J": 20, "O": 20})
MAP_HHBLITS_AATYPE_TO_OUR_AATYPE: tuple[int, ...] = tuple(RESTYPES_WITH_X_AND_GAP.index(a) for a in HHBLITS_ORDER)

# letter -> AlphaFold index in one step (HHblits folding, then the reorder)
AA_TO_ID: dict[str, int] = {a: MAP_HHBLITS_AATYPE_TO_OUR_AATYPE[i] for a, i in HHBLITS_AA_TO_ID.items()}
_LOOKUP = np.full(128, -1, dtype=np.int64)
for _a, _i in AA_TO_ID.items():
    _LOOKUP[ord(_a)] = _i


def encode(sequence: str) -> np.ndarray:
    """Letters (upper case, ``-`` for gaps, B/Z/U/J/O folded as HHblits does) -> AlphaFold indices,
    int64 ``[len(sequence)]``. Anything else raises one ``ValueError`` naming the first bad letter."""
    codes = np.frombuffer(sequence.encode("ascii", errors="replace"), dtype=np.uint8)
    ids = _LOOKUP[np.minimum(codes, 127)] if len(codes) else np.zeros(0, dtype=np.int64)
    bad = np.flatnonzero(ids < 0)
    if len(bad):
        raise ValueError(f"residue {sequence[bad[0]]!r} at position {bad[0] + 1}: expected one of "
                         f"{''.join(sorted(AA_TO_ID))}")
    return ids


def decode(ids: np.ndarray | list[int]) -> str:
    """AlphaFold indices (0..21) -> letters ``"ARNDCQEGHILKMFPSTWYVX-"``."""
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() > GAP):
        raise ValueError(f"residue ids: expected 0..{GAP}, got {int(ids.min())}..{int(ids.max())}")
    return "".join(RESTYPES_WITH_X_AND_GAP[i] for i in ids.reshape(-1))
