"""The decoder interface that ``tatlas.generate`` drives: a model with ``new_cache``, and
``forward(tokens, cache=, input_pos=)`` returning logits, gets ``prefill`` and ``decode_step`` here.

``prefill`` writes a (possibly left-padded) prompt into slots ``0..T0-1``; ``decode_step`` writes
one token per row into slot ``input_pos`` and returns the next-token logits. With a static cache both
have fixed shapes, so ``decode_step`` compiles once (gpt-fast's prefill / decode_one_token split).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .cache import DecoderCache


class CachedDecoderMixin:
    def prefill(self, tokens: Tensor, cache: DecoderCache, *, attention_mask: Tensor | None = None,
                chunk: int | None = None, last_only: bool = False, **kwargs) -> Tensor:
        """``tokens [B, T0]`` (left-padded where ``attention_mask`` is False) -> logits ``[B, T0, V]``
        (``[B, 1, V]`` with ``last_only``: what generation needs, without the LM head over the whole
        prompt). ``chunk``: feed the prompt ``chunk`` slots at a time (bounded activation memory).
        Models take ``forward(tokens, cache=, input_pos=, last_only=)``."""
        if attention_mask is not None:
            cache.set_padding(attention_mask)
        t0 = tokens.shape[1]
        if t0 > cache.max_len:
            raise ValueError(f"prompt of {t0} tokens does not fit a cache of {cache.max_len}")
        step = chunk or t0
        outs = []
        for start in range(0, t0, step):
            input_pos = torch.arange(start, min(t0, start + step), device=tokens.device)
            outs.append(self(tokens[:, start : start + step], cache=cache, input_pos=input_pos, last_only=last_only,
                             **kwargs))
        return outs[-1] if last_only else (outs[0] if len(outs) == 1 else torch.cat(outs, dim=1))

    def decode_step(self, tokens: Tensor, cache: DecoderCache, input_pos: Tensor, **kwargs) -> Tensor:
        """``tokens [B, 1]`` written at slot ``input_pos [1]`` -> next-token logits ``[B, V]``."""
        return self(tokens, cache=cache, input_pos=input_pos, last_only=True, **kwargs)[:, -1]
