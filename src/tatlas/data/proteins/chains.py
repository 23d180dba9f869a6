"""Random compact Cα chains: the folds of the embedded protein families.

A chain is grown one Cα at a time by the natural extension reference frame (NeRF; Parsons et al.
2005) from a virtual bond angle and torsion drawn per secondary-structure state, with the Cα
statistics of real proteins (Levitt 1976; Oldfield & Hubbard 1994): helices ~91° and ~+50°, strands
~120° and ~-170°, loops broad. Every bond is 3.8 Å. Of ``candidates`` proposals for the next
residue those within :data:`MIN_DISTANCE` of an earlier non-bonded residue are refused, and one
of the rest is drawn with a Boltzmann weight that rewards neighbours and a small distance to the
centre (a Rosenbluth-style growth, Rosenbluth & Rosenbluth 1955): the chains come out
self-avoiding and globular (radius of gyration near 2.2 N^0.38 Å, Skolnick et al. 1997) with
many long-range contacts. A dead end backs off a few residues (a residue that keeps meeting one
becomes a loop residue, a kink); of a few grown chains the one with the most contacts
``|i - j| >= 12`` is kept.

Shapes: coordinates ``[L, 3]`` in Å; distance matrix ``[L, L]``; contact map ``[L, L]`` bool.
"""

from __future__ import annotations

import numpy as np

BOND = 3.8  # Å between consecutive Cα (trans peptide)
MIN_DISTANCE = 4.0  # Å: no two non-consecutive Cα closer
CONTACT_CUTOFF = 8.0  # Å between Cα
LONG_RANGE = 24  # |i - j| of long-range contacts (CASP)
MEDIUM_RANGE = 12  # |i - j| of medium-range contacts (12..23)

# secondary-structure states: mean and spread of the virtual bond angle and torsion (degrees)
_STATES = {"H": (91.0, 2.0, 50.0, 4.0), "E": (121.0, 5.0, -170.0, 12.0)}
_LOOP_ANGLE = (85.0, 145.0)  # loops: angle uniform in this range, torsion uniform


def secondary_structure(length: int, rng: np.random.Generator) -> str:
    """A random string over ``H`` (helix, 7-14 long), ``E`` (strand, 4-8) and ``C`` (loop, 2-5),
    starting and ending in a loop: the plan a chain is grown along."""
    if length < 4:
        raise ValueError(f"length: expected >= 4 residues, got {length}")
    helix_share = rng.uniform(0.0, 1.0)  # all-alpha ... all-beta folds
    out = ["C" * int(rng.integers(1, 4))]
    while sum(map(len, out)) < length:
        state = "H" if rng.random() < helix_share else "E"
        out.append(state * int(rng.integers(7, 15) if state == "H" else rng.integers(4, 9)))
        out.append("C" * int(rng.integers(2, 6)))
    return "".join(out)[:length]


def _place(a: np.ndarray, b: np.ndarray, c: np.ndarray, angle: np.ndarray, torsion: np.ndarray) -> np.ndarray:
    """NeRF: points ``[K, 3]`` at :data:`BOND` from ``c`` with the angle (b, c, d) and torsion
    (a, b, c, d), radians ``[K]``."""
    bc = c - b
    bc = bc / np.linalg.norm(bc)
    n = np.cross(b - a, bc)
    n = n / np.linalg.norm(n)
    m = np.cross(n, bc)
    sin = BOND * np.sin(angle)
    d2 = np.stack([-BOND * np.cos(angle), sin * np.cos(torsion), sin * np.sin(torsion)], -1)  # [K, 3], local frame
    return c + d2[:, :1] * bc + d2[:, 1:2] * m + d2[:, 2:] * n  # [K, 3]


def _proposals(state: str, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if state in _STATES:
        am, asd, tm, tsd = _STATES[state]
        angle, torsion = rng.normal(am, asd, k), rng.normal(tm, tsd, k)
    else:
        angle, torsion = rng.uniform(*_LOOP_ANGLE, k), rng.uniform(-180.0, 180.0, k)
    return np.radians(angle), np.radians(torsion)


def _grow(plan: str, rng: np.random.Generator, *, candidates: int, compactness: float) -> tuple[np.ndarray, str] | None:
    """Grow along ``plan``; a residue that keeps meeting dead ends becomes a loop residue (a kink),
    so the returned plan is what was built."""
    ss = list(plan)
    length = len(ss)
    x = np.zeros((length, 3))
    x[1] = (BOND, 0.0, 0.0)
    t = np.radians(rng.uniform(*_LOOP_ANGLE))
    x[2] = x[1] + BOND * np.array([-np.cos(t), np.sin(t), 0.0])
    radius = 2.2 * length ** 0.38  # target radius of gyration (Å)
    i, failures, stuck = 3, 0, np.zeros(length, dtype=int)
    while i < length:
        if stuck[i] >= 2:
            ss[i] = "C"
        # loops choose among many turns; helices and strands among a few near-ideal ones
        angle, torsion = _proposals(ss[i], candidates if ss[i] == "C" else max(2, candidates // 6), rng)
        cand = _place(x[i - 3], x[i - 2], x[i - 1], angle, torsion)  # [K, 3]
        d = np.linalg.norm(cand[:, None, :] - x[None, : i - 1], axis=-1)  # [K, i-1] to non-bonded residues
        ok = d.min(axis=1) >= MIN_DISTANCE
        if not ok.any():
            failures += 1
            if failures > 50:
                return None
            stuck[i] += 1
            i = max(3, i - int(rng.integers(2, 6)))  # back off a few residues
            continue
        neighbours = (d[:, : max(i - 4, 0)] < 10.0).sum(axis=1)
        centre = x[:i].mean(axis=0)
        r2 = ((cand - centre) ** 2).sum(axis=1) / radius**2
        energy = compactness * (0.25 * neighbours - r2)
        energy = np.where(ok, energy, -np.inf)
        p = np.exp(energy - energy.max())
        x[i] = cand[rng.choice(len(cand), p=p / p.sum())]
        i += 1
    return x - x.mean(axis=0), "".join(ss)


def random_chain(length: int, rng: np.random.Generator, *, candidates: int = 24, compactness: float = 8.0,
                 min_contacts: float = 0.5, tries: int = 4) -> tuple[np.ndarray, str]:
    """A compact self-avoiding Cα trace of ``length`` residues and its secondary structure.

    Returns ``(coords [L, 3] float64 Å centred on the origin, ss str of length L)``. Consecutive
    Cα are 3.8 Å apart, no two others closer than 4 Å. A grown chain counts if it has at least
    ``min_contacts * (L - 24)`` contacts with ``|i - j| >= 12`` (Cα closer than 8 Å); of ``tries``
    such chains the one with the most of these contacts is kept.
    """
    if length < 4 or tries < 1:
        raise ValueError(f"random_chain: expected length >= 4 and tries >= 1, got {length} and {tries}")
    best, best_count = None, -1
    for _ in range(200 * tries):
        grown = _grow(secondary_structure(length, rng), rng, candidates=candidates, compactness=compactness)
        if grown is None:
            continue
        count = contact_count(grown[0], min_separation=MEDIUM_RANGE)
        if count < min_contacts * (length - 2 * MEDIUM_RANGE):
            continue
        if count > best_count:
            best, best_count = grown, count
        tries -= 1
        if tries == 0:
            return best
    if best is None:
        raise RuntimeError(f"no compact chain of {length} residues after {200 * tries} draws")
    return best


def distance_matrix(coords: np.ndarray) -> np.ndarray:
    """Euclidean distances ``[L, L]`` between the rows of ``coords [L, 3]``."""
    coords = np.asarray(coords, dtype=np.float64)
    return np.sqrt(((coords[:, None, :] - coords[None, :, :]) ** 2).sum(-1))


def contact_map(coords: np.ndarray, *, cutoff: float = CONTACT_CUTOFF) -> np.ndarray:
    """Cα pairs closer than ``cutoff`` Å, bool ``[L, L]`` (the diagonal is False)."""
    c = distance_matrix(coords) < cutoff
    np.fill_diagonal(c, False)
    return c


def contact_count(coords: np.ndarray, *, min_separation: int = MEDIUM_RANGE, cutoff: float = CONTACT_CUTOFF) -> int:
    """Number of contacts (pairs i < j) with ``j - i >= min_separation``."""
    c = np.triu(contact_map(coords, cutoff=cutoff), k=min_separation)
    return int(c.sum())


def radius_of_gyration(coords: np.ndarray) -> float:
    """Root-mean-square distance (Å) of the Cα from their centroid."""
    coords = np.asarray(coords, dtype=np.float64)
    return float(np.sqrt(((coords - coords.mean(0)) ** 2).sum(-1).mean()))
