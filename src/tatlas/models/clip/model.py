"""CLIP: contrastive language-image pre-training (Radford et al. 2021, "Learning Transferable Visual
Models From Natural Language Supervision").

Figure 1 / §2.4 of the paper, top to bottom:

- image encoder: a ViT (Dosovitskiy et al. 2020) with "an additional layer normalization to the
  combined patch and position embeddings before the transformer" (``ln_pre``); the class token's
  final state, layer-normalised (``ln_post``), is the image feature;
- text encoder: a GPT-2-style transformer with masked (causal) self-attention over lower-cased
  byte-pair tokens bracketed by ``[SOS]`` and ``[EOS]``; "the activations of the highest layer of
  the transformer at the [EOS] token are treated as the feature representation", after a final
  layer norm;
- both features are linearly projected (no bias) into one embedding space; the logits of an
  (image, text) pair are their cosine similarity times a learned temperature ``exp(logit_scale)``,
  initialised to ``1 / 0.07`` (§2.5).

The contrastive loss (Figure 3) lives in :mod:`.task`, outside the model.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...nn import LayerNorm, LearnedPositions, TransformerBlock, VisionTransformer, check_tokens, classic_block
from .config import CLIPConfig, CLIPTextConfig


class CLIPLogits(NamedTuple):
    """``logits_per_image [B_img, B_txt]`` and its transpose ``logits_per_text [B_txt, B_img]``."""

    logits_per_image: Tensor
    logits_per_text: Tensor


def _last_block_at(block: TransformerBlock, x: Tensor, query: Tensor, mask: Tensor | None = None) -> Tensor:
    """A pre-norm block's output for some positions only: ``query [B, Q, C]`` (states of those
    positions) attends over all of ``x [B, T, C]`` (``mask`` broadcast to ``[B, H, Q, T]``), then
    the MLP. Equal to the block over ``x`` read at those positions (the norms are per token)."""
    normed = block.attn_norm(x)
    h = query + block.attn(block.attn_norm(query), normed, mask=mask)  # cross-attention form: k, v from x
    return h + block.mlp(block.mlp_norm(h))


class TextTransformer(nn.Module):
    """The causal text encoder: ``tokens [B, T] -> states [B, T, C]`` after the final LayerNorm
    (``T <= context_length``; position ``t`` sees positions ``<= t``)."""

    def __init__(self, c: CLIPTextConfig) -> None:
        super().__init__()
        self.config = c
        self.token_embed = nn.Embedding(c.vocab_size, c.dim)
        self.positions = LearnedPositions(c.context_length, c.dim)
        norm = partial(LayerNorm, eps=c.eps)
        self.blocks = nn.ModuleList(
            classic_block(dim=c.dim, heads=c.heads, mlp_hidden=c.mlp_hidden, act=c.act, norm=norm)
            for _ in range(c.layers)
        )
        self.norm = norm(c.dim)

    def check(self, tokens: Tensor) -> None:
        c = self.config
        check_tokens(tokens, c.vocab_size)
        if not 0 < tokens.shape[1] <= c.context_length:
            raise ValueError(
                f"tokens: expected 1..{c.context_length} positions (the context length), got {tokens.shape[1]}; "
                "tokenize with truncation"
            )
        if torch.compiler.is_compiling() or tokens.is_meta:
            return
        if c.pool == "eos" and not bool((tokens == c.eos_token_id).any(dim=1).all()):
            raise ValueError(f"tokens: every row needs the end-of-text token (id {c.eos_token_id}) that is pooled")

    def embed(self, tokens: Tensor) -> Tensor:
        """``tokens [B, T] -> [B, T, C]``: token embeddings plus learned positions."""
        return self.token_embed(tokens) + self.positions.weight[: tokens.shape[1]]

    def forward(self, tokens: Tensor) -> Tensor:
        self.check(tokens)
        x = self.embed(tokens)  # [B, T, C]
        for block in self.blocks:
            x = block(x, causal=True)
        return self.norm(x)

    def pool_index(self, tokens: Tensor) -> Tensor:
        """The position of each row's end-of-text token: ``tokens [B, T] -> [B]``."""
        if self.config.pool == "argmax":
            return tokens.argmax(dim=-1)
        return (tokens == self.config.eos_token_id).int().argmax(dim=-1)  # the first one


class CLIP(nn.Module):
    """``encode_image(pixels [B, 3, S, S]) -> [B, E]``, ``encode_text(tokens [B, T]) -> [B, E]``
    (projected, not normalised); ``forward(pixels, tokens)`` -> :class:`CLIPLogits`."""

    def __init__(self, config: CLIPConfig) -> None:
        super().__init__()
        self.config = c = config
        v, t = c.vision, c.text
        self.vision = VisionTransformer(
            image_size=v.image_size, patch=v.patch, dim=v.dim, layers=v.layers, heads=v.heads,
            mlp_hidden=v.mlp_hidden, channels=v.channels, act=v.act, eps=v.eps,
            class_token=True, pre_norm=True, post_norm=True, patch_bias=False,
        )
        self.image_proj = nn.Linear(v.dim, c.embed_dim, bias=False)
        self.text = TextTransformer(t)
        self.text_proj = nn.Linear(t.dim, c.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(c.logit_scale_init)))
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """OpenAI's initialisation (``CLIP.initialize_parameters`` and the ViT's constructor):
        text embeddings N(0, 0.02), text positions N(0, 0.01); text attention N(0, C^-1/2), residual
        outputs N(0, C^-1/2 (2L)^-1/2), MLP input N(0, (2C)^-1/2); class token, image positions
        and both projections N(0, C^-1/2). Image blocks keep PyTorch's defaults, as in OpenAI's."""
        v, t = self.config.vision, self.config.text
        nn.init.normal_(self.text.token_embed.weight, std=0.02)
        nn.init.normal_(self.text.positions.weight, std=0.01)
        attn_std, proj_std, fc_std = t.dim**-0.5, t.dim**-0.5 * (2 * t.layers) ** -0.5, (2 * t.dim) ** -0.5
        for block in self.text.blocks:
            for lin in (block.attn.q, block.attn.k, block.attn.v):
                nn.init.normal_(lin.weight, std=attn_std)
                nn.init.zeros_(lin.bias)
            nn.init.normal_(block.attn.out.weight, std=proj_std)
            nn.init.zeros_(block.attn.out.bias)
            nn.init.normal_(block.mlp.fc1.weight, std=fc_std)
            nn.init.normal_(block.mlp.fc2.weight, std=proj_std)
        nn.init.normal_(self.text_proj.weight, std=t.dim**-0.5)
        nn.init.normal_(self.vision.class_token, std=v.dim**-0.5)
        nn.init.normal_(self.vision.positions.weight, std=v.dim**-0.5)
        nn.init.normal_(self.image_proj.weight, std=v.dim**-0.5)
        self.logit_scale.fill_(self.config.logit_scale_init)

    def encode_image(self, pixels: Tensor) -> Tensor:
        """``pixels [B, 3, S, S]`` (normalised, see :mod:`.preprocess`) -> ``[B, E]``: the class
        token's final state, projected."""
        return self.image_proj(self.vision(pixels)[:, 0])

    def encode_text(self, tokens: Tensor) -> Tensor:
        """``tokens [B, T]`` (``T <= context_length``, see :mod:`.tokenizer`) -> ``[B, E]``: the
        state at each row's end-of-text token, projected."""
        states = self.text(tokens)  # [B, T, C]
        rows = torch.arange(tokens.shape[0], device=tokens.device)
        return self.text_proj(states[rows, self.text.pool_index(tokens)])

    def logits(self, image_embeds: Tensor, text_embeds: Tensor) -> CLIPLogits:
        """Scaled cosine similarities of ``[B_img, E]`` and ``[B_txt, E]`` embeddings."""
        image = F.normalize(image_embeds, dim=-1)
        text = F.normalize(text_embeds, dim=-1)
        per_image = self.logit_scale.exp() * image @ text.t()  # [B_img, B_txt]
        return CLIPLogits(per_image, per_image.t())

    def forward(self, pixels: Tensor, tokens: Tensor) -> CLIPLogits:
        """``pixels [B_img, 3, S, S]``, ``tokens [B_txt, T]`` -> logits ``[B_img, B_txt]`` and ``[B_txt, B_img]``."""
        return self.logits(self.encode_image(pixels), self.encode_text(tokens))

    @property
    def temperature(self) -> float:
        """``1 / exp(logit_scale)``."""
        return math.exp(-float(self.logit_scale))


class FastCLIP(CLIP):
    """CLIP computing only what its embeddings read (swapped in by ``tatlas.load(..., fast=True)``,
    see :func:`tatlas.nn.fastpath.optimize_`); the same numbers as :class:`CLIP`'s definitions.

    Only the class token (image) and the end-of-text state (text) are read out, so the last block
    runs its query, MLP and final norm for that token alone (keys and values still come from every
    token): a twelfth less work for ViT-B. Text attention is causal, so the positions after the
    batch's last end-of-text token (padding) are dropped before the tower."""

    def encode_image(self, pixels: Tensor) -> Tensor:
        vit = self.vision
        if len(vit.blocks) < 2:
            return super().encode_image(pixels)
        x = vit(pixels, layer=-2)  # [B, 1 + N, C_v] after all but the last block
        cls = _last_block_at(vit.blocks[-1], x, x[:, :1])  # [B, 1, C_v]
        return self.image_proj(vit.post_norm(cls[:, 0]))  # ln_post is per token: == ln_post(all)[:, 0]

    def encode_text(self, tokens: Tensor) -> Tensor:
        text = self.text
        text.check(tokens)
        index = text.pool_index(tokens)  # [B]
        if not torch.compiler.is_compiling() and not tokens.is_meta:
            tokens = tokens[:, : int(index.max()) + 1]
        rows = torch.arange(tokens.shape[0], device=tokens.device)
        x = text.embed(tokens)
        for block in text.blocks[:-1]:
            x = block(x, causal=True)
        keys = torch.arange(tokens.shape[1], device=tokens.device)[None, :] <= index[:, None]  # [B, T]
        pooled = _last_block_at(text.blocks[-1], x, x[rows, index][:, None], mask=keys[:, None, None, :])
        return self.text_proj(text.norm(pooled[:, 0]))
