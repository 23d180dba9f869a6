"""How good a predicted contact map or Cα trace is, and the classic baselines a learned model must
beat.

- :func:`contact_precision`: precision of the top-L/k contacts in a separation range, CASP's
  measure (Monastyrskyy et al. 2014): long range ``|i - j| >= 24``, medium ``12..23``;
- :func:`contact_probs_from_distogram`: contact probabilities from distogram logits, the mass of
  the bins below 8 Å (AlphaFold's distogram head, Jumper et al. 2021 Suppl. §1.9.8: 64 bins,
  breaks ``linspace(2.3125, 21.6875, 63)``);
- :func:`covariance_contacts`: coevolution from the alignment alone: the Frobenius norm of the
  covariance (``"covariance"``) or of the mean-field DCA couplings, the negative inverse of the
  regularised covariance (``"mfdca"``; Morcos et al. 2011), after sequence reweighting at 80 %
  identity and with the average product correction (APC; Dunn et al. 2008);
- :func:`lddt`: Cα lDDT (Mariani et al. 2013) as ``alphafold/model/lddt.py`` computes it, and
  :func:`kabsch_rmsd`: RMSD after optimal superposition (Kabsch 1976);
- :func:`structure_from_contacts`: a trace from a contact map by classical multidimensional
  scaling (Torgerson 1952) of shortest-path distances through the contact graph.

Shapes: contact maps ``[L, L]``; distogram logits ``[..., L, L, B]``; MSAs ``[N, L]`` of AlphaFold
residue indices; coordinates ``[..., L, 3]`` in Å.
"""

from __future__ import annotations

import numpy as np
import torch

from tatlas.data.proteins.chains import CONTACT_CUTOFF, LONG_RANGE, MEDIUM_RANGE

RANGES = {"long": (LONG_RANGE, None), "medium": (MEDIUM_RANGE, LONG_RANGE - 1), "medium+long": (MEDIUM_RANGE, None)}


def _numpy(x, name: str, ndim: int | None = None) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {list(a.shape)}")
    return a


def _tensor(x, dtype: torch.dtype) -> torch.Tensor:
    return x.to(dtype) if isinstance(x, torch.Tensor) else torch.tensor(np.asarray(x), dtype=dtype)


def contact_precision(probs, contacts, *, top: float = 5, separation: str = "long") -> float:
    """Precision of the ``L // top`` most probable pairs (``top`` may also be a fraction: L/0.5 =
    2L) with ``i < j`` in the ``separation`` range (:data:`RANGES`) against the true ``contacts``.

    ``probs [L, L]`` is symmetrised; ties keep the lower pair index (a stable sort). Returns a
    float in [0, 1] (0 when the range holds no pair)."""
    p, c = _numpy(probs, "probs", 2).astype(np.float64), _numpy(contacts, "contacts", 2).astype(bool)
    if p.shape != c.shape or p.shape[0] != p.shape[1]:
        raise ValueError(f"probs and contacts: expected the same square [L, L], "
                         f"got {list(p.shape)} and {list(c.shape)}")
    if separation not in RANGES:
        raise ValueError(f"separation: expected one of {sorted(RANGES)}, got {separation!r}")
    length = p.shape[0]
    lo, hi = RANGES[separation]
    i, j = np.triu_indices(length, k=lo)
    if hi is not None:
        keep = j - i <= hi
        i, j = i[keep], j[keep]
    k = max(1, int(length / top))
    if len(i) == 0:
        return 0.0
    score = 0.5 * (p[i, j] + p[j, i])
    best = np.argsort(-score, kind="stable")[:k]
    return float(c[i[best], j[best]].mean())


def distogram_breaks(num_bins: int = 64, first_break: float = 2.3125, last_break: float = 21.6875) -> torch.Tensor:
    """The ``num_bins - 1`` upper edges (Å) of a distogram's bins, as AlphaFold's distogram head."""
    return torch.linspace(first_break, last_break, num_bins - 1)


def contact_probs_from_distogram(logits: torch.Tensor, *, first_break: float = 2.3125, last_break: float = 21.6875,
                                 cutoff: float = CONTACT_CUTOFF) -> torch.Tensor:
    """``logits [..., L, L, B]`` -> contact probabilities ``[..., L, L]``: the softmax mass of the
    bins whose upper edge is at most ``cutoff`` Å (with the default breaks, bins 0..18, below
    7.9375 Å)."""
    breaks = distogram_breaks(logits.shape[-1], first_break, last_break).to(logits.device)
    below = torch.cat([breaks <= cutoff, breaks.new_zeros(1, dtype=torch.bool)])  # [B]: the last bin is open
    return (logits.float().softmax(-1) * below).sum(-1)


def sequence_weights(msa, *, identity: float = 0.8) -> np.ndarray:
    """Weights ``[N]``: 1 / the number of rows (itself included) at least ``identity`` identical to
    each row (fraction of identical positions; Morcos et al. 2011)."""
    m = _numpy(msa, "msa", 2)
    one = np.eye(22, dtype=np.float32)[m].reshape(len(m), -1)  # [N, L*22]
    same = one @ one.T / m.shape[1]  # [N, N] identity fractions
    return 1.0 / (same >= identity).sum(1)


def apc(scores: np.ndarray) -> np.ndarray:
    """Average product correction: ``F_ij - F_i. F_.j / F_..`` with the diagonal excluded from the
    means and set to 0."""
    f = np.array(scores, dtype=np.float64)
    np.fill_diagonal(f, 0.0)
    length = len(f)
    row = f.sum(1) / (length - 1)
    total = f.sum() / (length * (length - 1))
    out = f - np.outer(row, row) / total
    np.fill_diagonal(out, 0.0)
    return out


def covariance_contacts(msa, *, method: str = "mfdca", identity: float = 0.8, pseudocount: float = 0.5) -> np.ndarray:
    """Contact scores ``[L, L]`` (symmetric, larger = more likely) from an alignment
    ``msa [N, L]`` (AlphaFold indices; X and gap are one state, so q = 21).

    Frequencies are reweighted at ``identity`` and mixed with a uniform pseudocount of weight
    ``pseudocount`` (``f = (1 - w) f_data + w / q``). ``"covariance"`` scores the Frobenius norm of
    ``C_ij(a, b) = f_ij(a, b) - f_i(a) f_j(b)`` over the 20 amino acids; ``"mfdca"`` inverts ``C``
    over the first q - 1 states, puts ``-C^{-1}`` in the zero-sum gauge and takes its Frobenius
    norm. Both with APC."""
    if method not in ("covariance", "mfdca"):
        raise ValueError(f"method: expected 'covariance' or 'mfdca', got {method!r}")
    m = np.minimum(_numpy(msa, "msa", 2), 20)  # X and gap -> state 20
    n, length = m.shape
    q = 21
    w = sequence_weights(msa, identity=identity)
    one = np.eye(q)[m].reshape(n, length * q)  # [N, L*q]
    f1 = (w @ one) / w.sum()
    f2 = (one.T * w) @ one / w.sum()  # [L*q, L*q]
    f1 = (1 - pseudocount) * f1 + pseudocount / q
    f2 = (1 - pseudocount) * f2 + pseudocount / q**2
    for i in range(length):  # the single-site block is diagonal in a one-hot code
        s = slice(i * q, (i + 1) * q)
        f2[s, s] = np.diag(f1[s])
    cov = (f2 - np.outer(f1, f1)).reshape(length, q, length, q)
    if method == "covariance":
        scores = np.sqrt((cov[:, :20, :, :20] ** 2).sum((1, 3)))
    else:
        c = cov[:, : q - 1, :, : q - 1].reshape(length * (q - 1), length * (q - 1))
        e = -np.linalg.inv(c).reshape(length, q - 1, length, q - 1)
        e = np.concatenate([e, np.zeros((length, 1, length, q - 1))], 1)
        e = np.concatenate([e, np.zeros((length, q, length, 1))], 3)  # [L, q, L, q], gap couplings 0
        e = e - e.mean(1, keepdims=True) - e.mean(3, keepdims=True) + e.mean((1, 3), keepdims=True)
        scores = np.sqrt((e**2).sum((1, 3)))
    return apc(0.5 * (scores + scores.T))


def lddt(predicted: torch.Tensor, true: torch.Tensor, mask: torch.Tensor | None = None, *, cutoff: float = 15.0,
         per_residue: bool = False) -> torch.Tensor:
    """Cα lDDT of ``predicted [*, L, 3]`` against ``true [*, L, 3]`` (``mask [*, L]``, 1 = present),
    as ``alphafold/model/lddt.py``: over the pairs closer than ``cutoff`` Å in the true structure
    (self excluded), the mean of the fractions of |Δd| below 0.5, 1, 2 and 4 Å. Returns ``[*]``,
    or ``[*, L]`` with ``per_residue``; in [0, 1]."""
    predicted, true = _tensor(predicted, torch.float32), _tensor(true, torch.float32)
    if predicted.shape != true.shape or predicted.shape[-1] != 3:
        raise ValueError(f"lddt: expected predicted and true of one shape [*, L, 3], "
                         f"got {list(predicted.shape)} and {list(true.shape)}")
    mask = torch.ones(true.shape[:-1]) if mask is None else _tensor(mask, torch.float32)
    d_true = torch.sqrt(1e-10 + ((true[..., :, None, :] - true[..., None, :, :]) ** 2).sum(-1))  # [*, L, L]
    d_pred = torch.sqrt(1e-10 + ((predicted[..., :, None, :] - predicted[..., None, :, :]) ** 2).sum(-1))
    eye = torch.eye(true.shape[-2], device=true.device)
    scored = (d_true < cutoff).float() * mask[..., :, None] * mask[..., None, :] * (1.0 - eye)
    diff = (d_true - d_pred).abs()
    score = 0.25 * sum((diff < t).float() for t in (0.5, 1.0, 2.0, 4.0))
    dims = (-1,) if per_residue else (-2, -1)
    return (1e-10 + (scored * score).sum(dims)) / (1e-10 + scored.sum(dims))


def kabsch_rmsd(predicted: torch.Tensor, true: torch.Tensor, mask: torch.Tensor | None = None, *,
                allow_reflection: bool = False) -> torch.Tensor:
    """RMSD (Å) of ``predicted [*, L, 3]`` to ``true [*, L, 3]`` after the optimal rotation and
    translation (Kabsch 1976) over the residues in ``mask [*, L]``: proper rotations only, so a
    mirror image does not superpose, unless ``allow_reflection`` (for traces of arbitrary
    handedness, such as :func:`structure_from_contacts`). Returns ``[*]``."""
    p, t = _tensor(predicted, torch.float64), _tensor(true, torch.float64)
    if p.shape != t.shape or p.shape[-1] != 3:
        raise ValueError(f"kabsch_rmsd: expected predicted and true of one shape [*, L, 3], "
                         f"got {list(p.shape)} and {list(t.shape)}")
    m = torch.ones(t.shape[:-1], dtype=torch.float64) if mask is None else _tensor(mask, torch.float64)
    n = m.sum(-1, keepdim=True)[..., None]  # [*, 1, 1]
    p = p - (p * m[..., None]).sum(-2, keepdim=True) / n
    t = t - (t * m[..., None]).sum(-2, keepdim=True) / n
    h = (p * m[..., None]).transpose(-1, -2) @ t  # [*, 3, 3] covariance
    u, _, vt = torch.linalg.svd(h)
    d = torch.sign(torch.linalg.det(vt.transpose(-1, -2) @ u.transpose(-1, -2)))
    d = torch.ones_like(d) if allow_reflection else d
    fix = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    rot = vt.transpose(-1, -2) @ fix @ u.transpose(-1, -2)  # rotates p onto t
    diff = (p @ rot.transpose(-1, -2) - t) ** 2
    return torch.sqrt((diff.sum(-1) * m).sum(-1) / n[..., 0, 0]).float()


def structure_from_contacts(contacts, *, threshold: float = 0.5, bond: float = 3.8,
                            contact_distance: float = 6.0) -> np.ndarray:
    """A Cα trace ``[L, 3]`` guessed from a contact map or probabilities ``[L, L]`` (``>= threshold``
    counts as a contact): shortest paths through the graph whose edges are the chain (``bond`` Å)
    and the contacts (``contact_distance`` Å) give a distance matrix, classical MDS embeds it in 3-D
    (centred; its handedness is arbitrary). The baseline a predicted trace should beat."""
    c = _numpy(contacts, "contacts", 2) >= threshold
    length = len(c)
    d = np.full((length, length), np.inf)
    d[c | c.T] = contact_distance
    idx = np.arange(length - 1)
    d[idx, idx + 1] = d[idx + 1, idx] = bond
    np.fill_diagonal(d, 0.0)
    for k in range(length):  # Floyd-Warshall
        d = np.minimum(d, d[:, k : k + 1] + d[k : k + 1, :])
    centre = np.eye(length) - 1.0 / length
    b = -0.5 * centre @ (d**2) @ centre  # Gram matrix of the centred points
    vals, vecs = np.linalg.eigh(b)
    top = np.argsort(vals)[::-1][:3]
    return vecs[:, top] * np.sqrt(np.maximum(vals[top], 0.0))[None]
