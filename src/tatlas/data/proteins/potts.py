"""Potts models of protein families and their Gibbs-sampled alignments.

A family's sequences follow P(s) ∝ exp(Σ_i h_i(s_i) + Σ_{i<j} J_ij(s_i, s_j)) over Q = 21 states
per position (the 20 amino acids in AlphaFold's order, then the gap): the maximum-entropy model
that direct coupling analysis fits to real alignments (Weigt et al. 2009; Morcos et al. 2011), here
run forwards. Couplings live only on the structure's contacts, so the covariation that DCA, the
outer product mean of the Evoformer and :func:`tatlas.models.evoformer.metrics.covariance_contacts`
detect points at exactly those contacts. :func:`make_potts` builds them as
``J_ij = strength * (E + noise_ij)`` with ``E`` a symmetric amino-acid compatibility matrix shared
by every family (a contact potential, as Miyazawa & Jernigan 1985 tabulate for real proteins:
hydrophobic pairs and opposite charges attract) and a random part per contact; the fields pull
towards a native sequence and the background composition, and make gaps rare.

:func:`gibbs_sample` draws sequences from many chains at once: positions are coloured so that no
two of one colour are coupled, and each colour is updated together (an exact systematic-scan Gibbs
sweep), with numpy and the Gumbel-max trick. Chains start at the native sequence, run ``burn_in``
sweeps, then give a sample every ``thin`` sweeps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .residues import GAP, RESTYPES

Q = 21  # Potts states: 20 amino acids (AlphaFold order) + gap
GAP_STATE = 20

# UniProtKB/Swiss-Prot amino-acid composition (%), AlphaFold order ARNDCQEGHILKMFPSTWYV
BACKGROUND = np.array([8.25, 5.53, 4.06, 5.45, 1.37, 3.93, 6.75, 7.07, 2.27, 5.96,
                       9.66, 5.84, 2.42, 3.86, 4.70, 6.56, 5.34, 1.08, 2.92, 6.87])
BACKGROUND = BACKGROUND / BACKGROUND.sum()  # the rounded table sums to 99.89
BACKGROUND.setflags(write=False)
_HYDROPHOBIC = set("AVILMFWC")
_CHARGE = {"D": -1, "E": -1, "K": 1, "R": 1}


def compatibility_matrix() -> np.ndarray:
    """The shared contact potential ``E [20, 20]`` (symmetric, unit RMS): hydrophobic pairs and
    opposite charges attract, like charges repel, plus a fixed random symmetric part."""
    hyd = np.array([1.0 if a in _HYDROPHOBIC else -0.5 for a in RESTYPES])
    charge = np.array([_CHARGE.get(a, 0) for a in RESTYPES], dtype=np.float64)
    noise = np.random.default_rng(20130901).normal(size=(20, 20))
    e = np.outer(hyd, hyd) - 1.5 * np.outer(charge, charge) + 0.7 * (noise + noise.T) / np.sqrt(2)
    e = e - e.mean(0, keepdims=True) - e.mean(1, keepdims=True) + e.mean()  # zero-sum gauge: no residue favoured
    return e / np.sqrt((e**2).mean())


@dataclass(frozen=True, kw_only=True, eq=False)
class Potts:
    """One family's model, stored sparsely: fields ``h [L, Q]``, the coupled pairs ``pairs [P, 2]``
    (``i < j``) and their couplings ``blocks [P, Q, Q]`` (``J_ij(a, b) = blocks[p, a, b]``,
    ``J_ji = J_ij^T``; every other pair is uncoupled). States are AlphaFold residue indices 0..19
    and :data:`GAP_STATE` (20) for the gap."""

    fields: np.ndarray
    pairs: np.ndarray
    blocks: np.ndarray

    @property
    def length(self) -> int:
        return self.fields.shape[0]

    def couplings(self) -> np.ndarray:
        """The dense couplings ``J [L, L, Q, Q]``."""
        j = np.zeros((self.length, self.length, Q, Q))
        i, k = self.pairs.T
        j[i, k] = self.blocks
        j[k, i] = self.blocks.transpose(0, 2, 1)
        return j

    def energy(self, states: np.ndarray) -> np.ndarray:
        """Log-probability up to a constant, Σ_i h_i + Σ_{i<j} J_ij, of each row of ``states [N, L]``
        (AlphaFold indices; the gap may be given as 21)."""
        s = np.where(np.asarray(states) == GAP, GAP_STATE, np.asarray(states))
        e = self.fields[np.arange(self.length), s].sum(-1)
        i, k = self.pairs.T
        return e + self.blocks[np.arange(len(i)), s[:, i], s[:, k]].sum(-1)


def make_potts(native: np.ndarray, contacts: np.ndarray, rng: np.random.Generator, *, coupling: float = 0.4,
               shared: float = 0.2, native_field: float = 2.0, gap_field: float = -4.0,
               min_separation: int = 3) -> Potts:
    """A family's Potts model around ``native [L]`` (residue indices 0..19) on ``contacts [L, L]``
    (bool, symmetric): ``J_ij = coupling * (sqrt(shared) E + sqrt(1 - shared) noise_ij)`` (``E``
    from :func:`compatibility_matrix`, ``noise_ij`` symmetric standard normal) on the contacts
    with ``|i - j| >= min_separation``; ``h_i = log background + native_field * onehot(native_i)``
    plus site noise (s.d. 0.3), and ``gap_field`` for the gap. Above ``coupling`` ~0.5 (and
    sooner the larger ``shared``) the model orders collectively and the alignments lose their
    diversity."""
    native = np.asarray(native)
    length = len(native)
    if contacts.shape != (length, length):
        raise ValueError(f"contacts: expected [{length}, {length}] (the native's length), got {list(contacts.shape)}")
    if not 0.0 <= shared <= 1.0:
        raise ValueError(f"shared: expected a fraction in [0, 1], got {shared}")
    sep = np.abs(np.subtract.outer(np.arange(length), np.arange(length)))
    pairs = np.argwhere(np.triu(contacts & (sep >= min_separation)))  # [P, 2], i < j
    noise = rng.normal(size=(len(pairs), 20, 20))
    noise = (noise + noise.transpose(0, 2, 1)) / np.sqrt(2)
    blocks = np.zeros((len(pairs), Q, Q))
    blocks[:, :20, :20] = coupling * (np.sqrt(shared) * compatibility_matrix()[None] + np.sqrt(1 - shared) * noise)
    fields = np.zeros((length, Q))
    fields[:, :20] = np.log(BACKGROUND)[None] + 0.3 * rng.normal(size=(length, 20))
    fields[np.arange(length), native] += native_field
    fields[:, GAP_STATE] = gap_field
    return Potts(fields=fields, pairs=pairs, blocks=blocks)


def _colouring(adjacency: np.ndarray) -> list[np.ndarray]:
    """Greedy colouring (largest degree first): classes of mutually uncoupled positions."""
    order = np.argsort(-adjacency.sum(1), kind="stable")
    colour = np.full(len(adjacency), -1)
    for i in order:
        used = set(colour[adjacency[i]].tolist())
        colour[i] = next(c for c in range(len(adjacency)) if c not in used)
    return [np.flatnonzero(colour == c) for c in range(colour.max() + 1)]


def gibbs_sample(potts: Potts, n: int, rng: np.random.Generator, *, start: np.ndarray, chains: int = 64,
                 burn_in: int = 40, thin: int = 5) -> np.ndarray:
    """``n`` sequences ``[n, L]`` (int64, AlphaFold indices: gaps as 21) drawn from ``potts`` by
    ``chains`` parallel Gibbs chains started at ``start [L]``: ``burn_in`` sweeps, then one sample
    per chain every ``thin`` sweeps."""
    if n < 1 or chains < 1 or burn_in < 0 or thin < 1:
        raise ValueError(f"gibbs_sample: expected n, chains, thin >= 1 and burn_in >= 0, "
                         f"got {n}, {chains}, {thin}, {burn_in}")
    length, chains = potts.length, min(chains, n)
    couplings = potts.couplings()
    adjacency = np.zeros((length, length), dtype=bool)
    adjacency[tuple(potts.pairs.T)] = adjacency[tuple(potts.pairs[:, ::-1].T)] = True
    classes = []
    for members in _colouring(adjacency):
        k = max(1, int(adjacency[members].sum(1).max()))
        nbr = np.full((len(members), k), length)  # index L: a dummy always-zero neighbour
        jt = np.zeros((len(members), k, Q, Q))  # jt[p, k, b, a] = J[i, j_k, a, b]
        for p, i in enumerate(members):
            js = np.flatnonzero(adjacency[i])
            nbr[p, : len(js)] = js
            jt[p, : len(js)] = couplings[i, js].transpose(0, 2, 1)
        classes.append((members, nbr, jt.reshape(len(members), k * Q, Q), np.arange(k) * Q,
                        np.arange(len(members))[None, :, None]))
    state = np.empty((chains, length + 1), dtype=np.int64)
    state[:, :length] = np.where(np.asarray(start) == GAP, GAP_STATE, np.asarray(start))[None]
    state[:, length] = 0
    per_chain = -(-n // chains)
    samples = []
    for sweep in range(burn_in + (per_chain - 1) * thin + 1):
        for members, nbr, jt, offset, rows in classes:
            b = state[:, nbr] + offset  # [C, p, k]: row of each neighbour's state in jt
            local = jt[rows, b].sum(2)  # [C, p, k, Q] -> [C, p, Q]
            logits = potts.fields[members][None] + local
            gumbel = -np.log(-np.log(rng.random(logits.shape)))
            state[:, members] = np.argmax(logits + gumbel, axis=-1)
        if sweep >= burn_in and (sweep - burn_in) % thin == 0:
            samples.append(state[:, :length].copy())
    out = np.concatenate(samples)[:n]  # sweep-major: the first ``chains`` rows come from distinct chains
    return np.where(out == GAP_STATE, GAP, out)
