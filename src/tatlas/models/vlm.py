"""What LLaVA and InternVL share: a vision tower whose features a small connector projects to the
width of a decoder LM, spliced in place of the prompt's image placeholder tokens (Liu et al. 2023,
"Visual Instruction Tuning", Fig. 1; Chen et al. 2024, "InternVL", Fig. 4).

:class:`VisionLanguageModel` holds the decoder (:class:`~tatlas.models.llm.LLM`, built from the
text config) and does the splicing, the Hugging Face keyword names and the cached decoding; each
system adds its tower and connector (``image_features``). Attention stays causal over image tokens
too, as in both references."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..nn import CachedDecoderMixin, DecoderCache
from .llm.config import LLMConfig
from .llm.model import LLM

FEATURE_STRATEGIES = ("default", "full")  # drop the tower's class token, or keep it


@dataclass(frozen=True, kw_only=True)
class VLMConfig:
    """Fields both rows carry: the decoder (``text``), the placeholder token's id, which tower
    layer is read (Hugging Face's ``vision_feature_layer``: ``-1`` the last block, ``-2`` the one
    before...; non-negative ``k``: after ``k`` blocks) and whether its class token is dropped."""

    text: LLMConfig
    image_token_id: int
    feature_layer: int = -2
    feature_strategy: str = "default"

    def __post_init__(self) -> None:
        name = type(self).__name__
        if self.feature_strategy not in FEATURE_STRATEGIES:
            raise ValueError(f"{name}.feature_strategy: expected one of {FEATURE_STRATEGIES}, got {self.feature_strategy!r}")
        if self.text.vision is not None:
            raise ValueError(f"{name}.text: the decoder must be text-only (its images come from this model's tower)")
        if self.feature_layer == 0:
            raise ValueError(f"{name}.feature_layer: 0 (the patch embeddings before any block) is not supported")

    @property
    def vision_layer(self) -> int:
        """``feature_layer`` as :meth:`tatlas.nn.VisionTransformer.forward`'s ``layer``."""
        return self.feature_layer if self.feature_layer < 0 else self.feature_layer - 1


def hf_inputs(tokens: Tensor | None, input_ids: Tensor | None, pixels: Tensor | None, pixel_values: Tensor | None
              ) -> tuple[Tensor, Tensor | None]:
    """Our names or transformers' (``input_ids``, ``pixel_values``), each given once -> (tokens, pixels)."""
    if (tokens is None) == (input_ids is None):
        raise ValueError("give the token ids once: tokens= or input_ids=")
    if pixels is not None and pixel_values is not None:
        raise ValueError("give the images once: pixels= or pixel_values=")
    return (tokens if tokens is not None else input_ids), (pixels if pixels is not None else pixel_values)


def padding_side(attention_mask: Tensor) -> str:
    """``"none"``, ``"right"`` (real tokens first) or ``"left"`` (real tokens last) for a ``[B, T]``
    mask; anything else is an error (holes inside a row)."""
    m = attention_mask.to(torch.bool)
    if bool(m.all()):
        return "none"
    ones = m.long().sum(dim=1, keepdim=True)
    pos = torch.arange(m.shape[1], device=m.device)[None, :]
    if bool((m == (pos < ones)).all()):
        return "right"
    if bool((m == (pos >= m.shape[1] - ones)).all()):
        return "left"
    raise ValueError("attention_mask: expected each row's real tokens in one run at its start or end (padding on "
                     "one side), got holes inside a row")


class VisionLanguageModel(CachedDecoderMixin, nn.Module):
    """``forward(tokens [B, T], pixels=..., image_sizes=...) -> logits [B, T, V]``: every
    ``image_token_id`` in ``tokens`` is replaced, in order, by one row of ``image_features`` (all
    images' tokens, in prompt order), then the decoder runs. Subclasses set ``self.vision`` and
    their connector and implement :meth:`image_features`."""

    config: Any

    def __init__(self, config: VLMConfig) -> None:
        super().__init__()
        self.config = config
        self.language_model = LLM(config.text)

    # -- what each system provides
    def image_features(self, pixels: Tensor, image_sizes: Tensor | None = None) -> Tensor:
        """Images -> their placeholder embeddings ``[N_image_tokens, C_text]`` (all images, in order)."""
        raise NotImplementedError

    # -- shared
    def freeze_unread_blocks(self) -> None:
        """Tower blocks after the one read (LLaVA's last, at ``feature_layer=-2``) stay, so
        checkpoints round-trip whole, but never run: they are frozen (no gradient, no optimizer state)."""
        blocks = self.vision.blocks
        for block in blocks[self.config.vision_layer % len(blocks) + 1 :]:
            block.requires_grad_(False)

    def tie_weights(self) -> None:
        self.language_model.tie_weights()

    def new_cache(self, batch: int, max_len: int, **kwargs) -> DecoderCache:
        return self.language_model.new_cache(batch, max_len, **kwargs)

    def embed(self, tokens: Tensor, pixels: Tensor | None = None, image_sizes: Tensor | None = None, *,
              decoding: bool = False) -> Tensor:
        """``tokens [B, T]`` -> input embeddings ``[B, T, C]``, image placeholders replaced.
        ``decoding``: one generated token per row; a generated placeholder id is an ordinary
        embedding then (as in transformers), not a missing image."""
        if pixels is None and decoding:
            return self.language_model.embed_tokens(tokens)
        is_image = tokens == self.config.image_token_id  # [B, T]
        x = self.language_model.embed_tokens(tokens.masked_fill(is_image, 0))  # [B, T, C]
        n = int(is_image.sum()) if not torch.compiler.is_compiling() else None
        if pixels is None:
            if n:
                raise ValueError(f"the prompt holds {n} image tokens (id {self.config.image_token_id}) but no image "
                                 "was given")
            return x
        features = self.image_features(pixels, image_sizes)  # [N, C]
        if n is not None and n != features.shape[0]:
            raise ValueError(f"the image(s) give {features.shape[0]} image tokens but the prompt holds {n} "
                             f"(id {self.config.image_token_id}); expand each image placeholder to its token count")
        return x.masked_scatter(is_image[..., None], features.to(x.dtype))

    def forward(
        self, tokens: Tensor | None = None, *, pixels: Tensor | None = None, image_sizes: Tensor | None = None,
        cache: DecoderCache | None = None, input_pos: Tensor | None = None, last_only: bool = False,
        attention_mask: Tensor | None = None, input_ids: Tensor | None = None, pixel_values: Tensor | None = None,
    ) -> Tensor:
        """Logits ``[B, T, V]`` (``[B, 1, V]`` with ``last_only``). Hugging Face's names work too
        (``input_ids``, ``pixel_values``, ``image_sizes``, ``attention_mask``), so code written
        against transformers' ``...ForConditionalGeneration`` ports over. ``attention_mask`` marks
        real tokens of a padded batch: right padding needs nothing (attention is causal); left
        padding runs through a cache whose positions skip each row's padding (as generation does)."""
        tokens, pixels = hf_inputs(tokens, input_ids, pixels, pixel_values)
        if attention_mask is not None and cache is None and padding_side(attention_mask) == "left":
            cache = self.new_cache(tokens.shape[0], tokens.shape[1])
            return self.prefill(tokens, cache, attention_mask=attention_mask, last_only=last_only, pixels=pixels,
                                image_sizes=image_sizes)
        x = self.embed(tokens, pixels, image_sizes, decoding=cache is not None and tokens.shape[1] == 1)
        return self.language_model(tokens, embeds=x, cache=cache, input_pos=input_pos, last_only=last_only)

    def prefill(self, tokens: Tensor, cache: DecoderCache, *, attention_mask: Tensor | None = None,
                chunk: int | None = None, last_only: bool = False, **kwargs) -> Tensor:
        if kwargs.get("pixels") is not None and chunk is not None and chunk < tokens.shape[1]:
            raise ValueError("chunked prefill with images is not supported: the images' tokens are spliced in one pass")
        return super().prefill(tokens, cache, attention_mask=attention_mask, chunk=chunk, last_only=last_only,
                               **{k: v for k, v in kwargs.items() if v is not None})


def split_hf_vlm_state(tensors: dict[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    """A transformers vision-language checkpoint's tensors by part, prefixes normalised across the
    layouts on disk (transformers 4 and the hub: ``language_model.model.``, ``vision_tower.vision_model.``;
    transformers 5 in memory: ``model.language_model.``, ``model.vision_tower.``):

    - ``"text"``: keys as a causal LM's (``model.layers...``, ``lm_head.weight``);
    - ``"vision"``: the tower's own keys (``embeddings...``, ``encoder...``);
    - ``"projector"``: the connector's (``linear_1...``); ``"other"``: the rest (``image_newline``)."""
    parts: dict[str, dict[str, Tensor]] = {"text": {}, "vision": {}, "projector": {}, "other": {}}
    rules = (
        ("language_model.model.", "text", "model."), ("model.language_model.", "text", "model."),
        ("language_model.lm_head.", "text", "lm_head."), ("lm_head.", "text", "lm_head."),
        ("model.vision_tower.vision_model.", "vision", ""), ("vision_tower.vision_model.", "vision", ""),
        ("model.vision_tower.", "vision", ""), ("vision_tower.", "vision", ""),
        ("model.multi_modal_projector.", "projector", ""), ("multi_modal_projector.", "projector", ""),
        ("model.", "other", ""),
    )
    for key, tensor in tensors.items():
        for prefix, part, new in rules:
            if key.startswith(prefix):
                parts[part][new + key[len(prefix):]] = tensor
                break
        else:
            parts["other"][key] = tensor
    return parts


def join_hf_vlm_state(parts: dict[str, dict[str, Tensor]]) -> dict[str, Tensor]:
    """The inverse of :func:`split_hf_vlm_state`, in the layout transformers 5's ``save_pretrained`` writes."""
    out: dict[str, Tensor] = {}
    for key, t in parts.get("text", {}).items():
        out[("language_model." + key)] = t
    for key, t in parts.get("vision", {}).items():
        out["vision_tower." + key] = t
    for key, t in parts.get("projector", {}).items():
        out["multi_modal_projector." + key] = t
    out.update(parts.get("other", {}))
    return out
