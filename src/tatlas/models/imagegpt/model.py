"""ImageGPT (Chen et al. 2020, "Generative Pretraining from Pixels"): a GPT-2 decoder (Radford
et al. 2019) over raster-ordered colour-cluster tokens, trained to predict the next pixel.

§2 of the paper ("Pre-training", "Architecture"): token and learned position embeddings, pre-norm
blocks of causal multi-head attention and an MLP, a final norm, and a head over the K colours. The norm is
the RMS-style layer norm of OpenAI's iGPT code (no mean-centring, no bias: ``x / sqrt(mean(x²) +
eps) * w``), which is exactly :class:`tatlas.nn.RMSNorm`; the activation is the sigmoid GELU
(``quick_gelu``). A sequence starts with the SOS token ``K``, which is input only: the head has K
outputs. Linear probes (§2, "Linear Probing"): the features of layer ``l`` are its output,
normalised and average-pooled over the sequence (:meth:`ImageGPT.features`).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...nn import (
    CachedDecoderMixin,
    DecoderCache,
    LearnedPositions,
    RMSNorm,
    check_tokens,
    classic_block,
)
from ..gpt2 import init_gpt2_
from .config import ImageGPTConfig
from .palette import Palette


class ImageGPT(CachedDecoderMixin, nn.Module):
    def __init__(self, config: ImageGPTConfig) -> None:
        super().__init__()
        self.config = c = config
        self.palette = Palette(c.clusters)
        self.embed = nn.Embedding(c.vocab_size, c.dim)
        self.positions = LearnedPositions(c.max_positions, c.dim)
        self.layers = nn.ModuleList(
            classic_block(dim=c.dim, heads=c.heads, mlp_hidden=c.mlp_width, act=c.act, fused_qkv=True,
                          norm=partial(RMSNorm, eps=c.norm_eps))
            for _ in range(c.layers)
        )
        self.norm = RMSNorm(c.dim, eps=c.norm_eps)
        self.lm_head = nn.Linear(c.dim, c.clusters, bias=False)  # SOS is never predicted
        self._init_weights()

    def _init_weights(self) -> None:
        """GPT-2: N(0, 0.02), the residual-branch outputs scaled by 1/sqrt(2 * layers)."""
        init_gpt2_(self, self.layers, self.config.layers)

    # ------------------------------------------------------------------ images <-> tokens

    def encode_images(self, images: Tensor) -> Tensor:
        """``images [B, 3, S, S]`` in [0, 1] (``S = image_size``) -> pixel tokens ``[B, S * S]``."""
        s = self.config.image_size
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, s, s):
            raise ValueError(f"images: expected [B, 3, {s}, {s}] RGB in [0, 1], got {list(images.shape)}")
        return self.palette.encode(images)

    def decode_images(self, pixels: Tensor) -> Tensor:
        """Pixel tokens ``[B, S * S]`` -> images ``[B, 3, S, S]`` in [0, 1]."""
        s = self.config.image_size
        return self.palette.decode(pixels, s, s)

    def inputs(self, pixels: Tensor) -> Tensor:
        """Teacher-forcing input for pixel tokens ``[B, N]``: ``[SOS, p_0 .. p_{N-2}] [B, N]``;
        ``model(model.inputs(p))[:, i]`` predicts ``p_i``."""
        sos = torch.full_like(pixels[:, :1], self.config.sos_token)
        return torch.cat([sos, pixels[:, :-1]], dim=1)

    # ------------------------------------------------------------------ decoder

    def new_cache(
        self, batch: int, max_len: int, *, static: bool = True, dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> DecoderCache:
        """A KV cache of ``max_len`` slots. ``max_positions + 1`` slots are allowed: ``generate``
        reserves a slot for the last sampled token, which is never fed back (an image's last pixel
        completes the sequence ``[SOS, p_0 .. p_{N-1}]`` of ``N + 1`` tokens)."""
        if max_len > self.config.max_positions + 1:
            raise ValueError(f"cache of {max_len} slots exceeds the model's {self.config.max_positions} "
                             f"positions (+1 for the final sampled pixel)")
        return DecoderCache(
            batch=batch, max_len=max_len, layers=self.config.layers, kv_heads=self.config.heads,
            head_dim=self.config.head_dim, static=static, dtype=dtype or self.embed.weight.dtype,
            device=device or self.embed.weight.device,
        )

    def _hidden(self, tokens: Tensor, cache: DecoderCache | None, input_pos: Tensor | None, upto: int,
                keep: list[Tensor] | None = None) -> Tensor:
        """The residual stream ``[B, T, C]`` after the first ``upto`` blocks; ``keep`` collects the
        embeddings and every block's output on the way."""
        check_tokens(tokens, self.config.vocab_size)
        t = tokens.shape[1]
        if cache is None:
            if t > self.config.max_positions:
                raise ValueError(f"sequence of {t} tokens exceeds the model's {self.config.max_positions} positions")
            positions = torch.arange(t, device=tokens.device)
            mask, causal = None, True
        else:
            if input_pos is None:
                raise ValueError("decoding with a cache needs input_pos (the slots of these tokens)")
            positions = cache.positions(input_pos)  # [B, T]
            mask, causal = cache.mask_or_causal(input_pos)
        x = self.embed(tokens) + self.positions(positions)  # [B, T, C]
        if keep is not None:
            keep.append(x)
        for i, layer in enumerate(self.layers[:upto]):
            x = layer(x, mask=mask, causal=causal, cache=None if cache is None else cache.layers[i],
                      input_pos=input_pos)
            if keep is not None:
                keep.append(x)
        return x

    def forward(
        self, tokens: Tensor, *, cache: DecoderCache | None = None, input_pos: Tensor | None = None,
        last_only: bool = False,
    ) -> Tensor:
        """``tokens [B, T]`` (colours ``0..K-1``, SOS ``K``) -> logits over the K colours ``[B, T, K]``
        (``[B, 1, K]`` for the last position only with ``last_only``). With a ``cache``, the tokens go
        to slots ``input_pos [T]`` and attend everything cached before."""
        x = self._hidden(tokens, cache, input_pos, self.config.layers)
        return self.lm_head(self.norm(x[:, -1:] if last_only else x))

    # ------------------------------------------------------------------ linear-probe features

    def pooled_features(self, tokens: Tensor) -> Tensor:
        """Features of every depth at once: ``tokens [B, T] -> [B, layers + 1, C]`` (index 0: the
        embeddings, ``l``: the output of block ``l``), each as in :meth:`features`."""
        hidden: list[Tensor] = []
        self._hidden(tokens, None, None, self.config.layers, keep=hidden)
        return torch.stack([self._pool(x) for x in hidden], dim=1)

    def features(self, tokens: Tensor, layer: int) -> Tensor:
        """Average-pooled features of ``layer`` for a linear probe: ``tokens [B, T] -> [B, C]``.

        ``layer`` is 1-based, the output of block ``layer`` (0: the input embeddings). As in the
        paper (``f^l = <n^l_i>_i`` with ``n^l = layer_norm(h^l)``) the features are normalised
        before pooling; we use the model's own RMS norm without a learned scale (the final norm's
        scale is trained for the last layer only): ``mean_t(h_t / rms(h_t))``. Blocks above
        ``layer`` are not run."""
        if not 0 <= layer <= self.config.layers:
            raise ValueError(f"layer: expected 0..{self.config.layers} (0 = embeddings, l = output of block l), "
                             f"got {layer}")
        return self._pool(self._hidden(tokens, None, None, layer))

    def _pool(self, x: Tensor) -> Tensor:
        return F.rms_norm(x.float(), (x.shape[-1],), eps=self.config.norm_eps).mean(dim=1).to(x.dtype)
