"""Invariant point attention (Jumper et al. 2021, AlphaFold2 Supplement Alg. 22), as DeepMind's
``folding.InvariantPointAttention`` computes it.

Each residue ``i`` has a frame ``T_i`` (:class:`~tatlas.nn.frames.Rigid`). Its attention logits over
residues ``j`` add three terms, each weighted to unit variance at initialisation (``1 / sqrt(3 var)``):

- scalar: ``q_i . k_j`` over ``scalar_qk`` channels per head, weighted ``1 / sqrt(3 scalar_qk)``;
- points: ``-gamma_h / 2 * sum_p |T_i q_ip - T_j k_jp|^2`` over ``point_qk`` query/key points
  predicted in the residues' local frames and compared in the global frame, weighted
  ``1 / sqrt(3 * 9/2 point_qk)`` times ``softplus(w_h)`` per head (``w_h`` initialised to
  ``softplus^-1(1)``);
- pair: a per-head linear projection of the pair representation, weighted ``1 / sqrt(3)``;

and ``-1e5`` where either residue is masked. The outputs, concatenated and projected back to the
single width: the attended scalar values, the attended value points (moved to the global frame,
averaged, moved back into the query's local frame) with their norms (``sqrt(eps + |x|^2)``,
``eps = 1e-8``), and the attended pair features. A global rotation and translation of every frame
leaves the output unchanged: the defining property.

Point layout: a points projection writes ``3 * H * P`` channels coordinate-major (all x, then all y,
then all z, each head-major), as AlphaFold (and openfold) do.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .frames import Rigid
from .init import initialise

_SOFTPLUS_INV_1 = math.log(math.e - 1.0)  # softplus^-1(1)


class InvariantPointAttention(nn.Module):
    """Alg. 22. ``s [*, N_res, C]``, ``z [*, N_res, N_res, C_z]``, ``frames [*, N_res]`` (a
    :class:`Rigid`), ``mask [*, N_res]`` (1 = present) -> the update ``[*, N_res, C]``.

    Parameters: ``q`` (scalar queries), ``kv`` (scalar keys then values, per head), ``q_points``,
    ``kv_points`` (key then value points, per head), ``pair_bias``, ``point_weights`` (``w_h``, before
    the softplus), ``out``.
    """

    def __init__(self, *, dim: int, pair_dim: int, heads: int, scalar_qk: int, scalar_v: int, point_qk: int,
                 point_v: int, eps: float = 1e-8, inf: float = 1e5) -> None:
        super().__init__()
        for name, value in (("heads", heads), ("scalar_qk", scalar_qk), ("point_qk", point_qk), ("point_v", point_v)):
            if value < 1:
                raise ValueError(f"InvariantPointAttention.{name}: expected >= 1, got {value}")
        self.heads, self.scalar_qk, self.scalar_v = heads, scalar_qk, scalar_v
        self.point_qk, self.point_v = point_qk, point_v
        self.eps, self.inf = eps, inf
        self.q = initialise(nn.Linear(dim, heads * scalar_qk), "lecun")
        self.kv = initialise(nn.Linear(dim, heads * (scalar_qk + scalar_v)), "lecun")
        self.q_points = initialise(nn.Linear(dim, 3 * heads * point_qk), "lecun")
        self.kv_points = initialise(nn.Linear(dim, 3 * heads * (point_qk + point_v)), "lecun")
        self.pair_bias = initialise(nn.Linear(pair_dim, heads), "lecun")
        self.point_weights = nn.Parameter(torch.full((heads,), _SOFTPLUS_INV_1))
        self.out = initialise(nn.Linear(heads * (scalar_v + 4 * point_v + pair_dim), dim), "final")
        self.scalar_weight = (3.0 * max(scalar_qk, 1)) ** -0.5
        self.point_weight = (3.0 * max(point_qk, 1) * 9.0 / 2.0) ** -0.5
        self.pair_weight = 3.0 ** -0.5

    def _points(self, x: Tensor, frames: Rigid, count: int) -> Tensor:
        """Local points ``[*, N_res, 3*H*count]`` (coordinate-major) -> global ``[*, N_res, H, count, 3]``."""
        local = torch.stack(x.chunk(3, dim=-1), dim=-1)  # [*, N_res, H*count, 3]
        return rearrange(frames.unsqueeze(-1).apply(local), "... n (h p) x -> ... n h p x", h=self.heads, p=count)

    def forward(self, s: Tensor, z: Tensor, frames: Rigid, mask: Tensor | None = None) -> Tensor:
        """``s [*, N_res, C]``, ``z [*, N_res, N_res, C_z]``, ``frames [*, N_res]``, ``mask [*, N_res]``
        (``None``: every residue present) -> ``[*, N_res, C]``."""
        h = self.heads
        q = rearrange(self.q(s), "... n (h c) -> ... h n c", h=h)  # [*, H, N_res, c_qk]
        k, v = rearrange(self.kv(s), "... n (h c) -> ... h n c", h=h).split([self.scalar_qk, self.scalar_v], dim=-1)
        q_pts = self._points(self.q_points(s), frames, self.point_qk)  # [*, N_res, H, P_qk, 3]
        kv_pts = self._points(self.kv_points(s), frames, self.point_qk + self.point_v)
        k_pts, v_pts = kv_pts.split([self.point_qk, self.point_v], dim=-2)  # [*, N_res, H, P, 3]

        scalar = (q * self.scalar_weight) @ k.transpose(-1, -2)  # [*, H, i, j]
        dist2 = (q_pts[..., :, None, :, :, :] - k_pts[..., None, :, :, :, :]).square().sum(-1)  # [*, i, j, H, P_qk]
        gamma = F.softplus(self.point_weights) * self.point_weight  # [H]
        points = -0.5 * (gamma[:, None] * dist2).sum(-1)  # [*, i, j, H]
        pair = self.pair_weight * self.pair_bias(z)  # [*, i, j, H]
        logits = scalar + rearrange(points + pair, "... i j h -> ... h i j")
        if mask is not None:
            mask = mask.to(logits.dtype)
            logits = logits - self.inf * (1.0 - mask[..., :, None] * mask[..., None, :])[..., None, :, :]
        attn = logits.softmax(dim=-1)  # [*, H, i, j]

        o_scalar = rearrange(attn @ v, "... h n c -> ... n (h c)")  # [*, N_res, H*c_v]
        o_global = torch.einsum("...hij,...jhpx->...ihpx", attn, v_pts)  # [*, N_res, H, P_v, 3]
        o_local = frames.unsqueeze(-1).invert_apply(rearrange(o_global, "... n h p x -> ... n (h p) x"))
        o_norm = torch.sqrt(self.eps + o_local.square().sum(-1))  # [*, N_res, H*P_v]
        o_pair = rearrange(torch.einsum("...hij,...ijc->...ihc", attn, z), "... n h c -> ... n (h c)")
        return self.out(torch.cat([o_scalar, *o_local.unbind(-1), o_norm, o_pair], dim=-1))
