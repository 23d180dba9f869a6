"""Decoding loops over any decoder offering ``new_cache``, ``prefill`` and ``decode_step``
(see :class:`tatlas.nn.CachedDecoderMixin`): greedy and sampled decoding with stop tokens,
batched prompts with left padding and a streaming callback; beam search in :mod:`.beam`.

With ``static_cache=True`` every decode step has the same shapes, so ``compile=True`` compiles
the step once (``torch.compile``) and reuses it for every token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .config import GenerationConfig
from .sampling import process_logits, select

Streamer = Callable[[Tensor], None]  # called with the new tokens [B] after every step


@dataclass(frozen=True)
class GenerationOutput:
    """``tokens [B, N]``: new tokens, ``pad_token`` after a row stopped; ``lengths [B]``: how many
    tokens each row generated (a stop token counts); ``scores``: beam scores, if beam search."""

    tokens: Tensor
    lengths: Tensor
    scores: Tensor | None = None

    def as_lists(self, *, include_stop: bool = False, stop_tokens: Sequence[int] = ()) -> list[list[int]]:
        rows = [row[: int(n)].tolist() for row, n in zip(self.tokens, self.lengths, strict=True)]
        if not include_stop:
            rows = [r[:-1] if r and r[-1] in stop_tokens else r for r in rows]
        return rows


def left_pad(prompts: Sequence[Sequence[int]], pad_token: int, device=None) -> tuple[Tensor, Tensor]:
    """Token lists -> ``(tokens [B, T0], attention_mask [B, T0])``, padded on the left."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    t0 = max(len(p) for p in prompts)
    tokens = torch.full((len(prompts), t0), pad_token, dtype=torch.long, device=device)
    mask = torch.zeros((len(prompts), t0), dtype=torch.bool, device=device)
    for i, p in enumerate(prompts):
        tokens[i, t0 - len(p) :] = torch.as_tensor(list(p), dtype=torch.long)
        mask[i, t0 - len(p) :] = True
    return tokens, mask


def _as_batch(prompts, attention_mask, pad_token, device) -> tuple[Tensor, Tensor | None]:
    if isinstance(prompts, Tensor):
        if prompts.dim() == 1:
            prompts = prompts[None]
        if prompts.dim() != 2:
            raise ValueError(f"prompt tokens: expected [B, T], got {list(prompts.shape)}")
        return prompts.to(device), None if attention_mask is None else attention_mask.to(device)
    if prompts and isinstance(prompts[0], int):
        prompts = [prompts]
    tokens, mask = left_pad(prompts, pad_token, device)
    return tokens, (None if bool(mask.all()) else mask)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def generate(
    model: nn.Module,
    prompts: Tensor | Sequence[int] | Sequence[Sequence[int]],
    config: GenerationConfig = GenerationConfig(),
    *,
    attention_mask: Tensor | None = None,
    streamer: Streamer | None = None,
    **model_kwargs,
) -> GenerationOutput:
    """Continue ``prompts`` (a ``[B, T]`` tensor, one token list, or several of different lengths,
    which are left-padded). ``model_kwargs`` go to ``prefill`` only (e.g. images, or audio features
    whose cross-attention keys the cache then holds); decode steps see tokens alone."""
    device = _device(model)
    tokens, mask = _as_batch(prompts, attention_mask, config.pad_token, device)
    if config.num_beams > 1:
        from .beam import beam_search

        return beam_search(model, tokens, config, attention_mask=mask, **model_kwargs)
    b, t0 = tokens.shape
    cache = model.new_cache(b, t0 + config.max_new_tokens, static=config.static_cache)
    generator = None
    if config.seed is not None:
        generator = torch.Generator(device=device).manual_seed(config.seed)

    logits = model.prefill(tokens, cache, attention_mask=mask, chunk=config.prefill_chunk, last_only=True,
                           **model_kwargs)[:, -1]
    step = model.decode_step
    if config.compile:
        step = torch.compile(model.decode_step, dynamic=False)

    seen = tokens.masked_fill(~mask, -1) if mask is not None else tokens
    out = torch.full((b, config.max_new_tokens), config.pad_token, dtype=torch.long, device=device)
    lengths = torch.zeros(b, dtype=torch.long, device=device)
    done = torch.zeros(b, dtype=torch.bool, device=device)
    stops = torch.tensor(config.stop_tokens, dtype=torch.long, device=device)
    for i in range(config.max_new_tokens):
        scores = process_logits(logits, seen if config.repetition_penalty != 1.0 else None, config)
        nxt = select(scores, config, generator)
        nxt = torch.where(done, torch.full_like(nxt, config.pad_token), nxt)
        out[:, i] = nxt
        lengths += (~done).long()
        if streamer is not None:
            streamer(nxt)
        if stops.numel():
            done = done | torch.isin(nxt, stops)
        if bool(done.all()) or i == config.max_new_tokens - 1:
            break
        if config.repetition_penalty != 1.0:
            seen = torch.cat([seen, torch.where(done, -1, nxt)[:, None]], dim=1)
        input_pos = torch.tensor([t0 + i], device=device)
        logits = step(nxt[:, None], cache, input_pos)
    n = int(lengths.max())
    return GenerationOutput(out[:, :n], lengths)
