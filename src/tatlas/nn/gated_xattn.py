"""Tanh-gated cross-attention dense layers (Alayrac et al. 2022, "Flamingo", §2.2 and Fig. 4) and
the media-location masking of interleaved image-text sequences.

A :class:`GatedCrossAttentionBlock` sits before a frozen LM layer: ``x + tanh(a) * xattn(norm(x),
media)``, then ``x + tanh(b) * mlp(norm(x))``, with ``a = b = 0`` at initialisation, so the LM starts
exactly as it was trained. Which visual tokens a text token may attend is given per media item by
:func:`media_attention`: only the latest image at or before the token (the paper's choice,
OpenFlamingo's ``only_attend_immediate_media``), or all earlier ones; a token before any image
attends to none, and its cross-attention output is zero (the MLP branch still runs)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .attention import Attention


def media_attention(media_locations: Tensor, n_media: int, *, immediate: bool = True,
                    seen: Tensor | None = None) -> Tensor:
    """``media_locations [B, T]`` (True at each media token) -> ``[B, T, n_media]``: which media
    item each token may attend. Token ``t`` is at "time" ``k`` = the number of media tokens at or
    before it (plus ``seen [B]``, those of earlier chunks); it attends item ``k`` (``immediate``)
    or items ``1..k``; time 0 attends nothing."""
    time = media_locations.long().cumsum(dim=-1)  # [B, T]
    if seen is not None:
        time = time + seen[:, None]
    items = torch.arange(1, n_media + 1, device=media_locations.device)  # [N]
    return time[..., None] == items if immediate else time[..., None] >= items


class GatedCrossAttentionBlock(nn.Module):
    """``x [B, T, C]``, ``media [B, S, C_v]`` (all media items' tokens, in order) -> ``[B, T, C]``.

    ``attn_gate``/``mlp_gate``: scalars (shape ``[1]``) or per channel (``[C]``), zero at
    initialisation. ``norm`` builds both norms (LayerNorm in Flamingo, RMSNorm in IDEFICS)."""

    def __init__(self, *, dim: int, attn: Attention, mlp: nn.Module, norm: Callable[[int], nn.Module],
                 gate_dim: int = 1) -> None:
        super().__init__()
        self.attn_norm = norm(dim)
        self.attn = attn
        self.attn_gate = nn.Parameter(torch.zeros(gate_dim))
        self.mlp_norm = norm(dim)
        self.mlp = mlp
        self.mlp_gate = nn.Parameter(torch.zeros(gate_dim))

    def forward(self, x: Tensor, media: Tensor | None = None, *, mask: Tensor | None = None,
                has_media: Tensor | None = None, cache=None) -> Tensor:
        """``mask [B, 1, T, S]`` (True: may attend; rows of tokens with no media are ignored);
        ``has_media [B, T]``: tokens that attend some media (others get no cross-attention output).
        ``cache``: a :class:`~tatlas.nn.CrossKVCache` holding the media's keys/values (filled on
        first use). No media at all (``media`` and ``cache`` empty): only the MLP branch runs."""
        if media is not None or (cache is not None and cache.filled):
            if has_media is not None and mask is not None:  # a row of all False would give NaN: let it see all
                mask = mask | ~has_media[:, None, :, None]
            h = self.attn(self.attn_norm(x), media, mask=mask, cache=cache)
            if has_media is not None:
                h = h.masked_fill(~has_media[..., None], 0.0)
            x = x + torch.tanh(self.attn_gate).to(x.dtype) * h
        return x + torch.tanh(self.mlp_gate).to(x.dtype) * self.mlp(self.mlp_norm(x))
