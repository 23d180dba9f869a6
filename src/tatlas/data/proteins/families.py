"""Protein families: a fold, a Potts model on its contacts, and an alignment sampled from it.

Family ``i`` of a split is a pure function of ``(seed, split, i)``: its own generator draws a
compact Cα chain (:mod:`.chains`), a native sequence whose hydrophobic residues prefer the buried
positions (as in real proteins, Kyte & Doolittle 1982), a Potts model (:mod:`.potts`) coupling the
contacts, and ``depth - 1`` Gibbs samples; the native is row 0 of the alignment (the query). Some
rows are fragments (a run of gaps at one end) and a few positions carry insertions (the deletion
matrix), as in alignments HHblits returns. ``"train"`` and ``"test"`` families come from different
generators, so they share no fold or sequence; all families share the amino-acid contact
potential (:func:`.potts.compatibility_matrix`), the physics a model may learn.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .chains import contact_map, distance_matrix, random_chain
from .potts import BACKGROUND, Potts, gibbs_sample, make_potts
from .residues import GAP, RESTYPES, decode

FAMILY_SPLITS: tuple[str, ...] = ("train", "test")
_HYDROPHOBICITY = {  # Kyte & Doolittle (1982), scaled by 1/4.5
    "A": 1.8, "R": -4.5, "N": -3.5, "D": -3.5, "C": 2.5, "Q": -3.5, "E": -3.5, "G": -0.4, "H": -3.2, "I": 4.5,
    "L": 3.8, "K": -3.9, "M": 1.9, "F": 2.8, "P": -1.6, "S": -0.8, "T": -0.7, "W": -0.9, "Y": -1.3, "V": 4.2,
}
HYDROPHOBICITY = np.array([_HYDROPHOBICITY[a] for a in RESTYPES]) / 4.5
HYDROPHOBICITY.setflags(write=False)


@dataclass(frozen=True, kw_only=True)
class FamilyConfig:
    """How families are made: the chain's ``compactness`` (see :func:`.chains.random_chain`); the
    Potts model's ``coupling``, ``shared`` fraction, ``native_field`` and ``gap_field`` (see
    :func:`.potts.make_potts`); ``burial`` (how strongly buried positions of the native prefer
    hydrophobic residues); the sampler's ``chains``, ``burn_in`` and ``thin``; the share of
    ``fragments`` among the rows and the ``insertion_rate`` per residue."""

    compactness: float = 8.0
    coupling: float = 0.4
    shared: float = 0.2
    native_field: float = 2.0
    gap_field: float = -4.0
    burial: float = 1.0
    chains: int = 64
    burn_in: int = 40
    thin: int = 5
    fragments: float = 0.2
    insertion_rate: float = 0.01

    def __post_init__(self) -> None:
        for name in ("chains", "thin"):
            if getattr(self, name) < 1:
                raise ValueError(f"FamilyConfig.{name}: expected >= 1, got {getattr(self, name)}")
        for name in ("shared", "fragments", "insertion_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"FamilyConfig.{name}: expected a fraction in [0, 1], got {getattr(self, name)}")
        for name in ("compactness", "coupling", "burn_in"):
            if getattr(self, name) < 0:
                raise ValueError(f"FamilyConfig.{name}: expected >= 0, got {getattr(self, name)}")


@dataclass(frozen=True, kw_only=True, eq=False)
class ProteinFamily:
    """One family. ``msa [N, L]`` holds AlphaFold residue indices (0..19 amino acids, 21 gap),
    row 0 the query; ``deletion_matrix [N, L]`` the residues inserted before each column;
    ``coords [L, 3]`` the query's Cα (Å), ``distances [L, L]`` and ``contacts [L, L]`` (Cα < 8 Å)
    from them; ``ss`` the secondary-structure plan (``H``/``E``/``C``); ``potts`` the model the
    alignment was sampled from."""

    name: str
    sequence: str
    coords: np.ndarray
    ss: str
    msa: np.ndarray
    deletion_matrix: np.ndarray
    potts: Potts = field(repr=False)

    @property
    def length(self) -> int:
        return len(self.sequence)

    @property
    def depth(self) -> int:
        return len(self.msa)

    @property
    def aatype(self) -> np.ndarray:
        """The query's residue indices ``[L]`` (AlphaFold order)."""
        return self.msa[0]

    @functools.cached_property
    def distances(self) -> np.ndarray:
        """Cα distances ``[L, L]`` (Å), read-only."""
        return _read_only(distance_matrix(self.coords))

    @functools.cached_property
    def contacts(self) -> np.ndarray:
        """Cα pairs closer than 8 Å, bool ``[L, L]``, read-only."""
        return _read_only(contact_map(self.coords))


def _read_only(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def _native(coords: np.ndarray, rng: np.random.Generator, burial: float) -> np.ndarray:
    """A sequence ``[L]`` drawn from the background composition, tilted towards hydrophobic
    residues at positions with many neighbours (within 10 Å) and polar ones at exposed positions."""
    neighbours = (distance_matrix(coords) < 10.0).sum(1).astype(np.float64)
    z = (neighbours - neighbours.mean()) / (neighbours.std() + 1e-9)  # [L] burial, standardised
    logits = np.log(BACKGROUND)[None] + burial * z[:, None] * HYDROPHOBICITY[None]  # [L, 20]
    gumbel = -np.log(-np.log(rng.random(logits.shape)))
    return np.argmax(logits + gumbel, axis=-1)


def make_family(rng: np.random.Generator, *, length: int, depth: int, config: FamilyConfig = FamilyConfig(),
                name: str = "family") -> ProteinFamily:
    """One family of ``length`` residues and ``depth`` sequences (the query included) from ``rng``."""
    if depth < 1:
        raise ValueError(f"depth: expected >= 1 sequences, got {depth}")
    coords, ss = random_chain(length, rng, compactness=config.compactness)
    coords = coords.astype(np.float32)  # as stored: the contacts below are exactly ``family.contacts``
    native = _native(coords, rng, config.burial)
    potts = make_potts(native, contact_map(coords), rng, coupling=config.coupling, shared=config.shared,
                       native_field=config.native_field, gap_field=config.gap_field)
    msa = native[None]
    if depth > 1:
        rows = gibbs_sample(potts, depth - 1, rng, start=native, chains=config.chains, burn_in=config.burn_in,
                            thin=config.thin)
        cut = rng.integers(length // 8, length // 4 + 1, size=len(rows))  # fragment: gaps at one end
        frag = rng.random(len(rows)) < config.fragments
        left = rng.random(len(rows)) < 0.5
        pos = np.arange(length)[None]
        gaps = frag[:, None] & np.where(left[:, None], pos < cut[:, None], pos >= length - cut[:, None])
        msa = np.concatenate([msa, np.where(gaps, GAP, rows)])
    deletions = np.where(rng.random(msa.shape) < config.insertion_rate, rng.geometric(0.5, size=msa.shape), 0)
    deletions[0] = 0  # the query has no insertions relative to itself
    arrays = [_read_only(a) for a in (coords, msa.astype(np.int64), deletions.astype(np.int64))]
    return ProteinFamily(name=name, sequence=decode(native), coords=arrays[0], ss=ss, msa=arrays[1],
                         deletion_matrix=arrays[2], potts=potts)


def _length_range(length: int | tuple[int, int]) -> tuple[int, int]:
    lo, hi = (length, length) if isinstance(length, int) else length
    if not 8 <= lo <= hi:
        raise ValueError(f"length: expected an int >= 8 or a range (lo, hi) with 8 <= lo <= hi, got {length!r}")
    return lo, hi


def protein_family(i: int, *, seed: int = 0, split: str = "train", length: int | tuple[int, int] = (32, 48),
                   depth: int = 256, config: FamilyConfig = FamilyConfig()) -> ProteinFamily:
    """Family ``i`` of ``split``: the ``i``-th of :func:`protein_families` with the same arguments."""
    if split not in FAMILY_SPLITS:
        raise ValueError(f"split: expected one of {FAMILY_SPLITS}, got {split!r}")
    lo, hi = _length_range(length)
    rng = np.random.default_rng([seed, FAMILY_SPLITS.index(split), i])
    size = int(rng.integers(lo, hi + 1))
    return make_family(rng, length=size, depth=depth, config=config, name=f"{split}-{seed}-{i:04d}")


def protein_families(n: int, *, seed: int = 0, split: str = "train", length: int | tuple[int, int] = (32, 48),
                     depth: int = 256, config: FamilyConfig = FamilyConfig()) -> tuple[ProteinFamily, ...]:
    """The first ``n`` families of ``split`` (``"train"`` or ``"test"``; disjoint by construction).

    ``length`` is a fixed length or an inclusive range drawn per family; family ``i`` depends
    only on ``(seed, split, i, length, depth, config)``, not on ``n``, and is named
    ``"{split}-{seed}-{i:04d}"``."""
    return tuple(LazyFamilies(n, seed=seed, split=split, length=length, depth=depth, config=config))


class LazyFamilies(Sequence):
    """The families :func:`protein_families` returns, each made on first access and kept: a training
    run (or each rank of one) pays only for the families it draws."""

    def __init__(self, n: int, *, seed: int = 0, split: str = "train", length: int | tuple[int, int] = (32, 48),
                 depth: int = 256, config: FamilyConfig = FamilyConfig()) -> None:
        if split not in FAMILY_SPLITS:
            raise ValueError(f"split: expected one of {FAMILY_SPLITS}, got {split!r}")
        _length_range(length)
        self.n, self._made = n, {}
        self._kwargs = dict(seed=seed, split=split, length=length, depth=depth, config=config)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        if not -self.n <= i < self.n:
            raise IndexError(f"family {i}: expected an index below {self.n}")
        i %= self.n
        if i not in self._made:
            self._made[i] = protein_family(i, **self._kwargs)
        return self._made[i]
