"""Cα traces as PDB files (wwPDB Format 3.3, "Coordinate Section"), the way AlphaFold's
``alphafold/common/protein.py`` ``to_pdb`` writes its ATOM and TER records, with a per-residue
confidence (AlphaFold's pLDDT, Jumper et al. 2021 Suppl. §1.9.6) in the B-factor column.

Columns of an ATOM record (1-based, inclusive): 1-6 ``ATOM``, 7-11 serial, 13-16 atom name
(`` CA ``), 17 altLoc, 18-20 residue name, 22 chain, 23-26 residue number, 27 insertion code,
31-38 / 39-46 / 47-54 x / y / z (8.3f, Å), 55-60 occupancy (6.2f), 61-66 B-factor (6.2f), 77-78
element. Every record is padded to 80 columns. ``conect=True`` adds CONECT records joining
consecutive Cα, for viewers that do not guess a trace's bonds.
"""

from __future__ import annotations

import pathlib

import numpy as np
import torch

from tatlas.data.proteins import RESNAMES, encode


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _resnames(sequence, length: int) -> list[str]:
    ids = encode(sequence) if isinstance(sequence, str) else np.asarray(sequence).reshape(-1)
    if len(ids) != length:
        raise ValueError(f"sequence: expected {length} residues (one per coordinate), got {len(ids)}")
    if len(ids) and (ids.min() < 0 or ids.max() > 20):
        raise ValueError(f"sequence: expected residue indices 0..20 (AlphaFold order; 20 = UNK), "
                         f"got {ids.min()}..{ids.max()}")
    return [RESNAMES[int(i)] for i in ids]


def ca_pdb(coords, sequence, *, b_factors=None, chain: str = "A", residue_index=None, conect: bool = False) -> str:
    """PDB text of a Cα trace: ``coords [L, 3]`` (Å), ``sequence`` (letters, or AlphaFold
    residue indices ``[L]``; X / 20 is written ``UNK``), ``b_factors [L]`` (e.g. pLDDT in 0..100;
    default 0), residue numbers ``residue_index [L]`` (default 1..L), one ``chain`` letter."""
    x = _np(coords).astype(np.float64)
    if x.ndim != 2 or x.shape[1] != 3 or len(x) == 0:
        raise ValueError(f"coords: expected [L >= 1, 3], got {list(x.shape)}")
    length = len(x)
    names = _resnames(sequence if isinstance(sequence, str) else _np(sequence), length)
    b = np.zeros(length) if b_factors is None else _np(b_factors).astype(np.float64).reshape(-1)
    res = np.arange(1, length + 1) if residue_index is None else _np(residue_index).reshape(-1)
    if len(b) != length or len(res) != length:
        raise ValueError(f"b_factors and residue_index: expected {length} values each, got {len(b)} and {len(res)}")
    if not np.isfinite(x).all() or x.min() < -999.999 or x.max() > 9999.999:
        raise ValueError("coords: expected finite values in [-999.999, 9999.999] (PDB columns 31-54, 8.3f)")
    if not np.isfinite(b).all() or b.min() < -99.99 or b.max() > 999.99:
        raise ValueError("b_factors: expected finite values in [-99.99, 999.99] (PDB columns 61-66, 6.2f)")
    if res.min() < -999 or res.max() > 9999:
        raise ValueError(f"residue_index: expected -999..9999 (PDB columns 23-26), got {res.min()}..{res.max()}")
    if len(chain) != 1 or not chain.isalnum():
        raise ValueError(f"chain: expected one letter or digit, got {chain!r}")
    if length + 1 > 99999:
        raise ValueError(f"coords: expected at most 99998 residues (PDB columns 7-11), got {length}")
    lines = []
    for k in range(length):
        lines.append(f"{'ATOM':<6}{k + 1:>5} {' CA ':<4}{'':>1}{names[k]:>3} {chain:>1}{int(res[k]):>4}{'':>1}   "
                     f"{x[k, 0]:>8.3f}{x[k, 1]:>8.3f}{x[k, 2]:>8.3f}{1.0:>6.2f}{b[k]:>6.2f}{'':>10}{'C':>2}{'':>2}")
    lines.append(f"{'TER':<6}{length + 1:>5}      {names[-1]:>3} {chain:>1}{int(res[-1]):>4}")
    if conect:
        for k in range(1, length + 1):
            bonded = [j for j in (k - 1, k + 1) if 1 <= j <= length]
            lines.append("CONECT" + "".join(f"{j:>5}" for j in [k, *bonded]))
    lines.append("END")
    return "\n".join(line.ljust(80) for line in lines) + "\n"


def write_ca_pdb(path: str | pathlib.Path, coords, sequence, **kwargs) -> None:
    """Write :func:`ca_pdb` of the same arguments to ``path``."""
    pathlib.Path(path).write_text(ca_pdb(coords, sequence, **kwargs))
