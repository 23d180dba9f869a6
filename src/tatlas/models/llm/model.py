"""The decoder-only language model family, GPT-4/Gemini-style.

A Llama-style decoder (Touvron et al. 2023, "LLaMA", §2.2): token embedding, pre-RMSNorm blocks
of rotary grouped-query attention and a gated MLP, final RMSNorm, LM head. Config switches give
Mistral (sliding-window attention), Qwen2 (q/k/v biases), mixture-of-experts MLPs (Mixtral,
Qwen2-MoE, DeepSeek-V3 with multi-head latent attention) and Gemma 3 (Gemma Team 2025: (1 + w)
RMSNorm, √d embedding scale, QK-norm, norms around each sublayer, local sliding-window layers
interleaved with global ones, each with its own rotary base, GeGLU).

Images, Gemini-style (Gemma Team 2025, §2.1): a ViT encodes each image; its patches are
average-pooled to ``tokens_per_image`` soft tokens, normalised and projected to the text width,
and replace the image placeholder tokens of the sequence. Attention is causal, except that the
tokens of one image see each other bidirectionally.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...nn import (
    Attention,
    CachedDecoderMixin,
    DecoderCache,
    GatedMLP,
    LatentAttention,
    RMSNorm,
    RotaryEmbedding,
    SandwichBlock,
    TransformerBlock,
    VisionTransformer,
    causal_mask,
    check_tokens,
)
from ...nn import decode_layer
from ...nn.moe import DeepSeekRouter, Experts, MoE, Routing, TopKRouter
from .config import LLMConfig, VisionConfig


class ImageProjector(nn.Module):
    """ViT patches ``[B, N, C_v]`` -> image tokens ``[B, tokens_per_image, C]``: average-pool the
    patch grid, RMSNorm (1 + w), project (Gemma 3's multi-modal projector)."""

    def __init__(self, vision: VisionConfig, dim: int, *, eps: float) -> None:
        super().__init__()
        self.grid = vision.grid
        self.kernel = vision.grid // round(vision.tokens_per_image**0.5)
        self.norm = RMSNorm(vision.dim, eps=eps, offset=1.0)
        self.proj = nn.Linear(vision.dim, dim, bias=False)

    def forward(self, patches: Tensor) -> Tensor:
        b, n, c = patches.shape
        grid = patches.transpose(1, 2).reshape(b, c, self.grid, self.grid)  # [B, C_v, g, g]
        pooled = F.avg_pool2d(grid, self.kernel).flatten(2).transpose(1, 2)  # [B, tokens, C_v]
        return self.proj(self.norm(pooled))


def image_blocks(is_image: Tensor) -> Tensor:
    """``is_image [B, T]`` -> block ids ``[B, T]``: the index of the image each token belongs to
    (runs of consecutive image tokens), ``-1`` for text."""
    start = is_image & ~F.pad(is_image, (1, 0), value=False)[:, :-1]
    return torch.where(is_image, start.long().cumsum(dim=1) - 1, -1)


def attention_masks(c: LLMConfig, tokens: Tensor, cache: DecoderCache | None, input_pos: Tensor | None, *,
                    images: bool = False) -> tuple[Tensor, dict[str, Tensor | None]]:
    """The token positions (``[T]``, or ``[B, T]`` from a cache) and each attention type's boolean
    mask (``[T, S]`` or ``[B, 1, T, S]``; ``None``: plain causal attention, SDPA's fast path).

    Causal over the sequence (with a cache: over its slots, left padding masked); ``"sliding"``
    layers see only the last ``sliding_window`` keys; with ``images``, the tokens of one image see
    each other both ways (keys from this call only: an image block is never split across calls)."""
    t, device = tokens.shape[1], tokens.device
    if cache is None:
        if t > c.max_positions:
            raise ValueError(f"sequence of {t} tokens exceeds the model's {c.max_positions} positions")
        positions = q_slot = k_slot = torch.arange(t, device=device)
        base = causal_mask(t, t, device=device)  # [T, S]
    else:
        if input_pos is None:
            raise ValueError("decoding with a cache needs input_pos (the slots of these tokens)")
        positions = cache.positions(input_pos)  # [B, T]
        if not images and cache.plain_causal(input_pos) and (
                "sliding" not in c.layer_types or c.sliding_window >= t):  # a whole prompt, no padding
            return positions, dict.fromkeys({"full", *c.layer_types})
        base = cache.mask(input_pos)  # [B, 1, T, S]
        q_slot, k_slot = input_pos, torch.arange(base.shape[-1], device=device)
    if images:
        blocks = image_blocks(tokens == c.image_token_id)  # [B, T]
        same = (blocks[:, :, None] == blocks[:, None, :]) & (blocks[:, :, None] >= 0)  # [B, T, T]
        overlay = torch.zeros(*same.shape[:2], k_slot.shape[0], dtype=torch.bool, device=device)
        overlay[:, :, q_slot] = same
        base = base | overlay[:, None]
    masks: dict[str, Tensor | None] = {"full": None if cache is None and not images else base}
    if "sliding" in c.layer_types:
        masks["sliding"] = base & (k_slot[None, :] > q_slot[:, None] - c.sliding_window)  # [T, S] window
    return positions, masks


def _attention(c: LLMConfig, norm) -> nn.Module:
    if c.latent is not None:
        a = c.latent
        return LatentAttention(dim=c.dim, heads=c.heads, kv_rank=a.kv_rank, nope_dim=a.nope_dim, rope_dim=a.rope_dim,
                               v_dim=a.v_dim, q_rank=a.q_rank, bias=c.qkv_bias, eps=c.norm_eps)
    return Attention(dim=c.dim, heads=c.heads, kv_heads=c.kv_heads, head_dim=c.head_dim, qkv_bias=c.qkv_bias,
                     qk_norm=norm if c.qk_norm else None,
                     scale=None if c.query_scale is None else c.query_scale**-0.5)


def _mlp(c: LLMConfig, layer: int) -> nn.Module:
    m = c.moe
    if m is None or not m.is_moe(layer):
        return GatedMLP(dim=c.dim, hidden=c.mlp_hidden, act=c.act)
    if m.router == "deepseek":
        router = DeepSeekRouter(dim=c.dim, experts=m.experts, k=m.k, groups=m.groups, topk_groups=m.topk_groups,
                                scaling=m.scaling, normalize=m.normalize)
    else:
        router = TopKRouter(dim=c.dim, experts=m.experts, k=m.k, normalize=m.normalize)
    experts = Experts(dim=c.dim, hidden=m.hidden, experts=m.experts, act=c.act)
    shared = GatedMLP(dim=c.dim, hidden=m.shared_hidden, act=c.act) if m.shared_hidden else None
    gate = nn.Linear(c.dim, 1, bias=False) if m.shared_gate else None  # Qwen2-MoE's sigmoid gate
    return MoE(router=router, experts=experts, shared=shared, shared_gate=gate)


class LLM(CachedDecoderMixin, nn.Module):
    """The decoder of the module docstring, top to bottom as :meth:`forward` runs it:

    - ``embed``: token embeddings ``[B, T, C]`` (times ``sqrt(C)`` for Gemma); image placeholders
      replaced by ``projector(vision(pixels))`` (:class:`ImageProjector`);
    - :func:`attention_masks`: causal (sliding-window for ``"sliding"`` layers, two-way inside an
      image) and the token positions, from which ``rotary`` (``rotary_local`` for sliding layers
      with their own base) gives the rotations of queries and keys;
    - ``layers``: ``layers`` blocks, each ``x + attn(norm(x))`` then ``x + mlp(norm(x))``
      (:class:`~tatlas.nn.TransformerBlock`; norms after each sublayer too for Gemma,
      :class:`~tatlas.nn.SandwichBlock`): grouped-query attention with RoPE (or DeepSeek's latent
      attention, :class:`~tatlas.nn.LatentAttention`) and a gated MLP (or a mixture of experts,
      :class:`~tatlas.nn.moe.MoE`);
    - ``norm`` and ``lm_head`` (tied to ``embed`` if configured): logits ``[B, T, V]``, soft-capped
      for Gemma.

    It decodes through :class:`~tatlas.nn.CachedDecoderMixin` (``new_cache``, ``prefill``, ``decode_step``)."""

    def __init__(self, config: LLMConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.dim)
        rotary_dim = c.latent.rope_dim if c.latent is not None else c.head_dim
        self.rotary = RotaryEmbedding(dim=rotary_dim, theta=c.rope_theta, scaling=c.rope_scaling,
                                      interleaved=c.rope_interleaved)
        if "sliding" in c.layer_types and c.rope_local_theta is not None:
            self.rotary_local = RotaryEmbedding(dim=rotary_dim, theta=c.rope_local_theta, interleaved=c.rope_interleaved)
        else:
            self.rotary_local = None
        norm = partial(RMSNorm, eps=c.norm_eps, offset=c.norm_offset)
        block = SandwichBlock if c.sandwich_norm else TransformerBlock
        self.layers = nn.ModuleList(
            block(dim=c.dim, attn=_attention(c, norm), mlp=_mlp(c, i), norm=norm) for i in range(c.layers)
        )
        self.norm = norm(c.dim)
        self.lm_head = nn.Linear(c.dim, c.vocab_size, bias=False)
        if c.vision is not None:
            v = c.vision
            self.vision = VisionTransformer(image_size=v.image_size, patch=v.patch, dim=v.dim, layers=v.layers,
                                            heads=v.heads, mlp_hidden=v.mlp_hidden, channels=v.channels, act=v.act,
                                            eps=v.eps)
            self.projector = ImageProjector(v, c.dim, eps=v.eps)
        else:
            self.vision = self.projector = None
        self.tie_weights()

    def tie_weights(self) -> None:
        if self.config.tie_embeddings:
            self.lm_head.weight = self.embed.weight

    def new_cache(
        self, batch: int, max_len: int, *, static: bool = True, dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> DecoderCache:
        if max_len > self.config.max_positions:
            raise ValueError(f"cache of {max_len} slots exceeds the model's {self.config.max_positions} positions")
        c = self.config
        if c.latent is not None:  # the latent and the shared rotary key are cached, one "head"
            kv_heads, head_dim, v_dim = 1, c.latent.kv_rank, c.latent.rope_dim
        else:
            kv_heads, head_dim, v_dim = c.kv_heads, c.head_dim, None
        return DecoderCache(
            batch=batch, max_len=max_len, layers=c.layers, kv_heads=kv_heads, head_dim=head_dim, v_dim=v_dim,
            static=static, dtype=dtype or self.embed.weight.dtype, device=device or self.embed.weight.device,
        )

    def encode_images(self, pixels: Tensor) -> Tensor:
        """``pixels [N_img, C, H, W]`` (normalised) -> image tokens ``[N_img, tokens_per_image, C]``."""
        if self.vision is None:
            raise ValueError("this model is text-only: it has no vision encoder for the given image")
        return self.projector(self.vision(pixels))

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        """``tokens [B, T]`` (checked against the vocabulary) -> input embeddings ``[B, T, C]``."""
        return self._embed(tokens, None)

    def _embed(self, tokens: Tensor, pixels: Tensor | None) -> Tensor:
        c = self.config
        is_image = tokens == c.image_token_id if c.image_token_id is not None else None
        ids = tokens.masked_fill(is_image, 0) if is_image is not None and c.image_token_id >= c.vocab_size else tokens
        check_tokens(ids, c.vocab_size)
        x = self.embed(ids)  # [B, T, C]
        if c.embed_scale:
            x = x * torch.tensor(c.dim**0.5, dtype=x.dtype)
        if pixels is not None:
            images = self.encode_images(pixels).to(x.dtype)  # [N_img, tokens_per_image, C]
            n = int(is_image.sum())
            if n != images.shape[0] * images.shape[1]:
                raise ValueError(
                    f"{images.shape[0]} image(s) need {images.shape[0] * images.shape[1]} image tokens "
                    f"(id {c.image_token_id}) in the sequence, got {n}"
                )
            x = x.masked_scatter(is_image[..., None], images)
        elif is_image is not None and not torch.compiler.is_compiling() and not ids.is_meta and bool(is_image.any()):
            raise ValueError("the sequence holds image tokens but no pixels were given")
        return x

    def forward(
        self, tokens: Tensor, *, pixels: Tensor | None = None, cache: DecoderCache | None = None,
        input_pos: Tensor | None = None, last_only: bool = False, routings: list[Routing] | None = None,
        embeds: Tensor | None = None, before_layer: Callable[[int, Tensor], Tensor] | None = None,
    ) -> Tensor:
        """``tokens [B, T]`` -> logits ``[B, T, V]`` (``[B, 1, V]`` with ``last_only``: the LM head
        on the last position alone, as generation's prefill needs). ``pixels [N_img, C, H, W]``: images
        whose tokens replace the placeholders (``image_token_id``), in order. With a ``cache``, the
        tokens go to slots ``input_pos [T]`` and attend everything cached before them. ``routings``: a
        list that receives the :class:`~tatlas.nn.moe.Routing` of every mixture-of-experts layer, in
        layer order (their auxiliary losses and loads; nothing of it is kept on the model).
        ``embeds [B, T, C]``: the input embeddings, given instead of embedding ``tokens`` (a
        vision-language model that spliced its own image features in, LLaVA and InternVL); the
        tokens then only give the positions' count. ``before_layer(i, x) -> x``: runs before layer
        ``i`` (Flamingo's gated cross-attention layers between the frozen LM's own)."""
        c = self.config
        if embeds is not None:
            if pixels is not None or embeds.shape != (*tokens.shape, c.dim):
                raise ValueError(f"embeds: expected [B, T, {c.dim}] = {[*tokens.shape, c.dim]} and no pixels, got "
                                 f"{list(embeds.shape)}{' and pixels' if pixels is not None else ''}")
            x = embeds
        else:
            x = self._embed(tokens, pixels)  # [B, T, C]; checks the tokens
        positions, masks = attention_masks(c, tokens, cache, input_pos, images=pixels is not None)
        full = self.rotary(positions)
        ropes = {"full": full, "sliding": full if self.rotary_local is None else self.rotary_local(positions)}
        fused = None
        if cache is not None and before_layer is None and routings is None and tokens.shape[1] == 1:
            # a one-token decode step: every layer in one C call where they are Llama-style (nn/decode_layer.py)
            fused = decode_layer.run_layers(self.layers, x, masks=[masks[k] for k in c.layer_types],
                                            ropes=[ropes[k] for k in c.layer_types], cache=cache, input_pos=input_pos,
                                            also=(self.norm, self.lm_head))
        if fused is not None:
            x = fused
        else:
            for i, (layer, kind) in enumerate(zip(self.layers, c.layer_types, strict=True)):
                if before_layer is not None:
                    x = before_layer(i, x)
                x = layer(x, mask=masks[kind], causal=masks[kind] is None, rope=ropes[kind],
                          cache=None if cache is None else cache.layers[i], input_pos=input_pos, routings=routings)
        logits = self.lm_head(self.norm(x[:, -1:] if last_only else x))
        if c.final_softcap is not None:
            logits = torch.tanh(logits / c.final_softcap) * c.final_softcap
        return logits

    def prefill(self, tokens: Tensor, cache: DecoderCache, *, attention_mask: Tensor | None = None,
                chunk: int | None = None, last_only: bool = False, pixels: Tensor | None = None) -> Tensor:
        if pixels is not None and chunk is not None and chunk < tokens.shape[1]:
            raise ValueError("chunked prefill with images is not supported: an image block must be in one chunk")
        return super().prefill(tokens, cache, attention_mask=attention_mask, chunk=chunk, last_only=last_only,
                               **({} if pixels is None else {"pixels": pixels}))
