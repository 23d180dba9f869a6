"""Whisper (Radford et al. 2022, "Robust Speech Recognition via Large-Scale Weak Supervision"), §2.2
"Model": an encoder–decoder Transformer over a 30-second log-Mel window.

Encoder: two convolutions with GELU (the second with stride 2, 3000 frames -> 1500 positions),
fixed sinusoidal positions, pre-norm blocks, a final LayerNorm. Decoder: token embedding plus
learned positions, pre-norm blocks with causal self-attention and cross-attention to the encoder
output, a final LayerNorm, and the output projection tied to the token embedding.

Attention keys carry no bias in the released models. Self-attention here projects q, k and v with one
fused matrix whose key-bias slice is zero (adding a bias to every key shifts all scores of a query by
the same amount, so it cannot change the attention): the converters write zeros there and drop it
on export. In decoding, the cross-attention keys/values of a window are computed once
(:class:`~tatlas.nn.CrossKVCache`) and the self-attention keys/values are cached per token.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...nn import (
    CachedDecoderMixin,
    DecoderCache,
    LayerNorm,
    LearnedPositions,
    TiedLinear,
    TransformerBlock,
    check_tokens,
    classic_block,
    decode_layer,
    init_normal_,
    sinusoidal_positions,
)
from .config import WhisperConfig


def _block(dim: int, heads: int, eps: float, *, cross: bool) -> TransformerBlock:
    return classic_block(dim=dim, heads=heads, mlp_hidden=4 * dim, norm=partial(LayerNorm, eps=eps), fused_qkv=True,
                         cross=cross)


class AudioEncoder(nn.Module):
    """``mel [B, mels, 2 * audio_ctx] -> [B, audio_ctx, C]``."""

    def __init__(self, c: WhisperConfig) -> None:
        super().__init__()
        self.config = c
        self.conv1 = nn.Conv1d(c.mels, c.audio_dim, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(c.audio_dim, c.audio_dim, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positions", sinusoidal_positions(c.audio_ctx, c.audio_dim), persistent=False)
        self.layers = nn.ModuleList(_block(c.audio_dim, c.audio_heads, c.norm_eps, cross=False)
                                    for _ in range(c.audio_layers))
        self.norm = LayerNorm(c.audio_dim, eps=c.norm_eps)

    def reset_buffers(self, device: torch.device | str | None = None) -> None:
        """Recompute the sinusoidal positions on ``device`` (after building on the meta device)."""
        self.positions = sinusoidal_positions(self.config.audio_ctx, self.config.audio_dim).to(device or "cpu")

    def forward(self, mel: Tensor) -> Tensor:
        c = self.config
        if mel.dim() != 3 or mel.shape[1] != c.mels or mel.shape[2] != c.n_frames:
            raise ValueError(f"mel: expected [B, {c.mels}, {c.n_frames}] (one {c.n_frames // 100}-s window of "
                             f"{c.mels}-bin log-Mel frames), got {list(mel.shape)}")
        x = F.gelu(self.conv1(mel.to(self.conv1.weight.dtype)))
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # [B, C, audio_ctx] -> [B, audio_ctx, C]
        x = x + self.positions.to(x.dtype)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


class TextDecoder(nn.Module):
    """``tokens [B, T]`` and audio features ``[B, S, C]`` -> logits ``[B, T, V]``."""

    def __init__(self, c: WhisperConfig) -> None:
        super().__init__()
        self.config = c
        self.embed = nn.Embedding(c.vocab_size, c.text_dim)
        self.positions = LearnedPositions(c.text_ctx, c.text_dim)
        self.layers = nn.ModuleList(_block(c.text_dim, c.text_heads, c.norm_eps, cross=True)
                                    for _ in range(c.text_layers))
        self.norm = LayerNorm(c.text_dim, eps=c.norm_eps)
        self.head = TiedLinear()  # the output projection reads the token embedding's weight

    def forward(
        self, tokens: Tensor, audio: Tensor | None, *, cache: DecoderCache | None = None,
        input_pos: Tensor | None = None, last_only: bool = False, cross_weights: list[Tensor] | None = None,
    ) -> Tensor:
        if cache is None:
            t = tokens.shape[1]
            if t > self.config.text_ctx:
                raise ValueError(f"tokens: {t} exceed the decoder's {self.config.text_ctx} positions")
            positions, mask, causal = torch.arange(t, device=tokens.device), None, True
        else:
            if input_pos is None:
                raise ValueError("decoding with a cache needs input_pos (the slots of these tokens)")
            positions, (mask, causal) = cache.positions(input_pos), cache.mask_or_causal(input_pos)
        x = self.embed(tokens) + self.positions(positions)  # [B, T, C]
        fused = None
        if cache is not None and cross_weights is None and tokens.shape[1] == 1 and cache.cross[0].filled:
            # a one-token decode step: every layer in one C call where the fast path serves it (nn/decode_layer.py)
            n = len(self.layers)
            fused = decode_layer.run_layers(self.layers, x, masks=[mask] * n, ropes=[None] * n, cache=cache,
                                            input_pos=input_pos)
        if fused is not None:
            x = fused
        else:
            for i, layer in enumerate(self.layers):
                x = layer(
                    x, audio, mask=mask, causal=causal, cache=None if cache is None else cache.layers[i],
                    input_pos=input_pos, cross_cache=None if cache is None else cache.cross[i],
                    cross_weights=cross_weights,
                )
        x = self.norm(x[:, -1:] if last_only else x)
        return self.head(x, self.embed.weight)  # output tied to the token embedding


class Whisper(CachedDecoderMixin, nn.Module):
    def __init__(self, config: WhisperConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = AudioEncoder(config)
        self.decoder = TextDecoder(config)
        init_normal_(self, std=0.02)

    # ------------------------------------------------------------------ encoder

    def embed_audio(self, mel: Tensor) -> Tensor:
        """``mel [B, mels, 2 * audio_ctx]`` -> audio features ``[B, audio_ctx, C]``. For inference
        on the CPU the windows are encoded one at a time: a window is already 1,500 rows for every
        product, and one window's activations stay in the caches where several windows' do not
        (tiny.en, 6 windows, 2 threads: 1.36 s one at a time vs 1.42-1.63 s together), and the
        peak memory holds one window's activations, not B."""
        if mel.shape[0] > 1 and mel.device.type == "cpu" and not (torch.is_grad_enabled() and self.training):
            return torch.cat([self.encoder(mel[i : i + 1]) for i in range(mel.shape[0])])
        return self.encoder(mel)

    # ------------------------------------------------------------------ decoder

    def new_cache(
        self, batch: int, max_len: int | None = None, *, static: bool = True, dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> DecoderCache:
        """Self-attention caches of ``max_len`` slots (default: every text position) and empty
        cross-attention caches, filled from the audio features by the first call."""
        c = self.config
        max_len = max_len or c.text_ctx
        if max_len > c.text_ctx:
            raise ValueError(f"cache of {max_len} slots exceeds the decoder's {c.text_ctx} positions")
        weight = self.decoder.embed.weight
        return DecoderCache(
            batch=batch, max_len=max_len, layers=c.text_layers, kv_heads=c.text_heads, head_dim=c.text_dim // c.text_heads,
            static=static, cross=True, dtype=dtype or weight.dtype, device=device or weight.device,
        )

    def fill_cross_cache(self, cache: DecoderCache, audio: Tensor) -> None:
        """Every decoder layer's cross-attention keys/values from ``audio [B, S, C]``, once per window."""
        for layer, cross in zip(self.decoder.layers, cache.cross, strict=True):
            cross.store(*layer.cross_attn.project_kv(audio))  # [B, H, S, D] each

    def decode_step(self, tokens: Tensor, cache: DecoderCache, input_pos: Tensor) -> Tensor:
        """``tokens [B, T]`` written at slots ``input_pos [T]`` (cross-attention caches filled) ->
        logits of the last position ``[B, V]``. No checks on the tokens (a decoding loop builds
        them; a check would synchronise with the host every step)."""
        return self.decoder(tokens, None, cache=cache, input_pos=input_pos, last_only=True)[:, -1]

    def logits(
        self, tokens: Tensor, audio: Tensor | None, *, cache: DecoderCache | None = None,
        input_pos: Tensor | None = None, last_only: bool = False,
    ) -> Tensor:
        """``tokens [B, T]`` and audio features ``[B, S, C]`` -> logits ``[B, T, V]``. With a
        ``cache`` the tokens go to slots ``input_pos [T]``; ``audio`` is needed only while the
        cross-attention caches are empty (the first call for a window)."""
        if not torch.compiler.is_compiling():
            check_tokens(tokens, self.config.vocab_size)
            if audio is None and (cache is None or not cache.cross[0].filled):
                raise ValueError("the decoder needs the audio features (no cross-attention cache is filled)")
        return self.decoder(tokens, audio, cache=cache, input_pos=input_pos, last_only=last_only)

    def forward(
        self, tokens: Tensor, mel: Tensor | None = None, *, audio: Tensor | None = None,
        cache: DecoderCache | None = None, input_pos: Tensor | None = None, last_only: bool = False,
    ) -> Tensor:
        """Teacher forcing or one decoding call: ``tokens [B, T]`` with ``mel [B, mels, 2 *
        audio_ctx]`` (encoded here) or precomputed ``audio`` features -> logits ``[B, T, V]``."""
        if mel is not None:
            if audio is not None:
                raise ValueError("give either mel or audio features, not both")
            audio = self.embed_audio(mel)
        return self.logits(tokens, audio, cache=cache, input_pos=input_pos, last_only=last_only)

    def logits_and_cross_weights(self, tokens: Tensor, audio: Tensor) -> tuple[Tensor, Tensor]:
        """A teacher-forced pass that also keeps every decoder layer's cross-attention weights (word
        alignment): ``tokens [B, T]``, ``audio [B, S, C]`` -> logits ``[B, T, V]`` and weights
        ``[layers, B, heads, T, S]``."""
        check_tokens(tokens, self.config.vocab_size)
        weights: list[Tensor] = []
        logits = self.decoder(tokens, audio, cross_weights=weights)
        return logits, torch.stack(weights)
