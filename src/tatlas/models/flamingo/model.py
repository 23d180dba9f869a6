"""Flamingo: a frozen decoder LM taught to see through gated cross-attention (Alayrac et al. 2022).

``forward`` runs, per call:

1. each image (``pixels [B, N, 3, S, S]``, or video frames ``[B, N, F, 3, S, S]``) through the CLIP
   tower, its tokens through the Perceiver resampler: ``[B, N, latents, C_v]`` (§2.1);
2. which image each text token may see (:func:`~tatlas.nn.media_attention`): the latest
   ``<image>`` token at or before it, counted along the sequence, or transformers' explicit
   ``image_attention_mask [B, T, N]``;
3. the LM (:class:`~tatlas.models.llm.LLM`), with a :class:`~tatlas.nn.GatedCrossAttentionBlock`
   run before each of its ``cross_layers`` (§2.2). The LM's own weights are frozen.

With a cache, the images' keys/values are computed once per cross layer at the prompt and kept
(:class:`FlamingoCache`); each generated token sees the image the prompt's last token saw."""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from ...nn import (
    MLP, Attention, CachedDecoderMixin, CrossKVCache, DecoderCache, GatedCrossAttentionBlock, GatedMLP, LayerNorm,
    PerceiverResampler, RMSNorm, VisionTransformer, media_attention,
)
from ..llm.model import LLM
from ..vlm import hf_inputs, padding_side
from .config import FlamingoConfig


class FlamingoCache(DecoderCache):
    """The LM's self-attention caches (``layers``), one :class:`~tatlas.nn.CrossKVCache` per gated
    layer (``cross``), and per row which images the newest token sees (``media_row [B, N]``) and how
    many ``<image>`` tokens it has passed (``media_seen [B]``)."""

    def __init__(self, *, cross_layers: int, **kwargs) -> None:
        super().__init__(cross=False, **kwargs)
        self.cross = [CrossKVCache() for _ in range(cross_layers)]
        self.media_row: Tensor | None = None
        self.media_seen = torch.zeros(self.batch, dtype=torch.long, device=self.key_valid.device)

    @property
    def filled(self) -> bool:
        return bool(self.cross) and self.cross[0].filled

    def reorder(self, index: Tensor, slots: int | None = None) -> None:
        super().reorder(index, slots)
        self.media_seen = self.media_seen.index_select(0, index)
        if self.media_row is not None:
            self.media_row = self.media_row.index_select(0, index)

    def repeat_rows(self, group: int, slots: int | None = None) -> FlamingoCache:
        base = super().repeat_rows(group, slots)
        out = object.__new__(FlamingoCache)
        out.__dict__.update(base.__dict__)
        out.media_seen = self.media_seen.repeat_interleave(group, dim=0)
        out.media_row = None if self.media_row is None else self.media_row.repeat_interleave(group, dim=0)
        return out


def _cross_block(config: FlamingoConfig) -> GatedCrossAttentionBlock:
    c, t = config.cross, config.text
    norm = partial(RMSNorm, eps=t.norm_eps) if c.norm == "rms" else partial(LayerNorm, eps=1e-5)
    attn = Attention(dim=t.dim, heads=c.heads, head_dim=c.head_dim, kv_dim=config.vision.dim,
                     qk_norm=partial(RMSNorm, eps=t.norm_eps) if c.qk_norm else None)
    mlp = (GatedMLP(dim=t.dim, hidden=c.mlp_hidden, act=c.act) if c.mlp == "gated"
           else MLP(dim=t.dim, hidden=c.mlp_hidden, act=c.act, bias=False))
    return GatedCrossAttentionBlock(dim=t.dim, attn=attn, mlp=mlp, norm=norm, gate_dim=t.dim if c.gate == "vector" else 1)


class Flamingo(CachedDecoderMixin, nn.Module):
    """``forward(tokens [B, T], pixels=...) -> logits [B, T, V]`` (the module docstring's steps)."""

    def __init__(self, config: FlamingoConfig) -> None:
        super().__init__()
        self.config = c = config
        v = c.vision
        self.vision = VisionTransformer(
            image_size=v.image_size, patch=v.patch, dim=v.dim, layers=v.layers, heads=v.heads, mlp_hidden=v.mlp_hidden,
            channels=v.channels, act=v.act, eps=v.eps, class_token=True, pre_norm=True,
            post_norm=c.vision_tokens == "patches", patch_bias=False,  # IDEFICS never reads ln_post
        )
        r = c.resampler
        self.resampler = None if r is None else PerceiverResampler(
            dim=v.dim, depth=r.depth, heads=r.heads, head_dim=r.head_dim, latents=r.latents,
            mlp_hidden=r.mlp_mult * v.dim, act=r.act, max_media=r.max_media, max_frames=r.max_frames, qk_norm=r.qk_norm)
        self.language_model = LLM(c.text)
        self.cross_layers = nn.ModuleList(_cross_block(c) for _ in c.cross_layers)
        self._cross_index = {layer: j for j, layer in enumerate(c.cross_layers)}
        self.freeze_lm()

    # -- parts
    def freeze_lm(self) -> None:
        """The pretrained LM stays as it was (the paper freezes it; so do both references)."""
        self.language_model.requires_grad_(False)

    def tie_weights(self) -> None:
        self.language_model.tie_weights()

    def new_cache(self, batch: int, max_len: int, *, static: bool = True, dtype: torch.dtype | None = None,
                  device: torch.device | str | None = None) -> FlamingoCache:
        t = self.config.text
        if max_len > t.max_positions:
            raise ValueError(f"cache of {max_len} slots exceeds the model's {t.max_positions} positions")
        w = self.language_model.embed.weight
        return FlamingoCache(cross_layers=len(self.cross_layers), batch=batch, max_len=max_len, layers=t.layers,
                             kv_heads=t.kv_heads, head_dim=t.head_dim, static=static, dtype=dtype or w.dtype,
                             device=device or w.device)

    def encode_media(self, pixels: Tensor, batch: int) -> Tensor:
        """``pixels [B, N, 3, S, S]`` / ``[B, N, F, 3, S, S]`` (or ``[N, 3, S, S]`` for one row)
        -> visual tokens ``[B, N, n, C_v]`` (``n``: the resampler's latents, or the tower's tokens x F)."""
        c, v = self.config, self.config.vision
        if pixels.dim() == 4 and batch == 1:
            pixels = pixels[None]
        if pixels.dim() == 5:
            pixels = pixels[:, :, None]
        if pixels.dim() != 6 or pixels.shape[0] != batch or pixels.shape[-3:] != (v.channels, v.image_size, v.image_size):
            raise ValueError(f"pixels: expected [B={batch}, N_images, {v.channels}, {v.image_size}, {v.image_size}] (or "
                             f"[B, N_images, F, {v.channels}, {v.image_size}, {v.image_size}] for video), got "
                             f"{list(pixels.shape)}")
        b, n, f = pixels.shape[:3]
        tokens = self.vision(pixels.flatten(0, 2).to(self.vision.patch_embed.proj.weight.dtype))  # [B*N*F, V(+1), C_v]
        if c.vision_tokens == "patches":
            tokens = tokens[:, 1:]
        tokens = tokens.unflatten(0, (b, n, f))  # [B, N, F, V, C_v]
        if self.resampler is not None:
            return self.resampler(tokens)  # [B, N, n, C_v]
        return tokens.flatten(2, 3)

    def _media_mask(self, tokens: Tensor, n_media: int, image_attention_mask: Tensor | None,
                    cache: FlamingoCache | None, decoding: bool) -> Tensor:
        """Which images each token sees, ``[B, T, N]`` (and the cache's bookkeeping updated)."""
        if decoding and cache is not None and cache.media_row is not None and image_attention_mask is None:
            return cache.media_row[:, None].expand(-1, tokens.shape[1], -1)
        if image_attention_mask is not None:
            if image_attention_mask.shape != (*tokens.shape, n_media):
                raise ValueError(f"image_attention_mask: expected [B, T, N_images] = {[*tokens.shape, n_media]}, got "
                                 f"{list(image_attention_mask.shape)}")
            seen = image_attention_mask.to(torch.bool)
        else:
            media_id = self.config.media_token_id
            if media_id is None:
                raise ValueError("this model has no <image> token id (media_token_id): pass image_attention_mask "
                                 "[B, T, N_images] with the images")
            is_media = tokens == media_id
            counts = is_media.long().sum(dim=1) + (cache.media_seen if cache is not None else 0)
            if int(counts.max()) > n_media:
                raise ValueError(f"the prompt holds {int(counts.max())} <image> tokens (id {media_id}) in a row but "
                                 f"{n_media} image(s) were given per row")
            seen = media_attention(is_media, n_media, immediate=self.config.immediate,
                                   seen=cache.media_seen if cache is not None else None)
            if cache is not None:
                cache.media_seen = counts
        if cache is not None:
            cache.media_row = seen[:, -1]
        return seen

    # -- forward
    def forward(
        self, tokens: Tensor | None = None, *, pixels: Tensor | None = None, image_attention_mask: Tensor | None = None,
        cache: FlamingoCache | None = None, input_pos: Tensor | None = None, last_only: bool = False,
        attention_mask: Tensor | None = None, input_ids: Tensor | None = None, pixel_values: Tensor | None = None,
    ) -> Tensor:
        """Logits ``[B, T, V]`` (``[B, 1, V]`` with ``last_only``). transformers' IDEFICS keywords
        work too: ``input_ids``, ``attention_mask``, ``pixel_values [B, N, 3, S, S]`` and
        ``image_attention_mask [B, T, N]``. Left padding (``attention_mask``) runs through a cache."""
        tokens, pixels = hf_inputs(tokens, input_ids, pixels, pixel_values)
        if attention_mask is not None and cache is None and padding_side(attention_mask) == "left":
            cache = self.new_cache(tokens.shape[0], tokens.shape[1])
            return self.prefill(tokens, cache, attention_mask=attention_mask, last_only=last_only, pixels=pixels,
                                image_attention_mask=image_attention_mask)
        media = None
        if pixels is not None and not (cache is not None and cache.filled):
            media = self.encode_media(pixels, tokens.shape[0])  # [B, N, n, C_v]
        n_media = media.shape[1] if media is not None else (
            cache.media_row.shape[-1] if cache is not None and cache.media_row is not None else 0)
        have_media = media is not None or (cache is not None and cache.filled)
        mask = has = None
        if have_media:
            decoding = pixels is None  # a generated token sees what the prompt's last token saw
            seen = self._media_mask(tokens, n_media, image_attention_mask, cache, decoding)  # [B, T, N]
            has = seen.any(dim=-1)  # [B, T]
            per = media.shape[2] if media is not None else cache.cross[0].k.shape[-2] // n_media
            mask = seen.repeat_interleave(per, dim=-1)[:, None]  # [B, 1, T, N*n]
        elif image_attention_mask is not None and bool(image_attention_mask.any()):
            raise ValueError("image_attention_mask lets tokens see images but no pixels were given")
        elif self.config.media_token_id is not None and cache is None and bool((tokens == self.config.media_token_id).any()):
            raise ValueError(f"the prompt holds <image> tokens (id {self.config.media_token_id}) but no image was given")
        flat = None if media is None else media.flatten(1, 2)  # [B, N*n, C_v]

        def before(i: int, x: Tensor) -> Tensor:
            j = self._cross_index.get(i)
            if j is None:
                return x
            return self.cross_layers[j](x, flat, mask=mask, has_media=has,
                                        cache=None if cache is None or not have_media else cache.cross[j])

        return self.language_model(tokens, cache=cache, input_pos=input_pos, last_only=last_only, before_layer=before)
