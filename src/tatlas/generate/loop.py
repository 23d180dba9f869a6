"""The decoding loop, one for every decoder and every search: prefill, then per step filter the
logits, let the strategy choose (:mod:`.search`), reorder the cache to the rows it kept, and run the
decoder on the new tokens (gpt-fast's prefill / decode_one_token split; openai-whisper's
``DecodingTask`` loop with its ``TokenDecoder`` and ``LogitFilter`` strategy objects).

:func:`search` is the loop itself, over any step function and cache; :func:`generate` runs it for a
decoder offering ``new_cache``, ``prefill`` and ``decode_step`` (:class:`tatlas.nn.CachedDecoderMixin`):
greedy and sampled decoding with stop tokens, left-padded batches, a streaming callback, and beam
search. With ``static_cache=True`` every decode step has the same shapes, so ``compile=True``
compiles the step once (``torch.compile``) and reuses it for every token.
"""

from __future__ import annotations

import math

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..nn.threads import thread_tuner
from .config import GenerationConfig
from .sampling import RepetitionPenalty
from .search import BeamSearch, Sampler, power_penalty, rank, score

Streamer = Callable[[Tensor], None]  # called with the new tokens [B] after every step
Step = Callable[[Tensor, object, Tensor], Tensor]  # (tokens [N, 1], cache, input_pos [1]) -> logits [N, V]
LogitFilter = Callable[[Tensor, Tensor], Tensor]  # (logits [N, V], tokens so far [N, cur]) -> logits


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


def search(step: Step, cache, logits: Tensor, tokens: Tensor, *, begin: int, steps: int, strategy,
           filters: Sequence[LogitFilter] = (), streamer: Streamer | None = None, tune_threads: bool = True
           ) -> tuple[int, Tensor]:
    """The decoding loop. ``tokens [N, >= begin + steps]`` holds the prompts in ``[:, :begin]``;
    ``logits [N, V]`` are the prefill's for column ``begin``. Each step filters the logits, lets
    ``strategy`` write column ``cur`` (and say which rows it kept), reorders ``cache`` to them, and
    runs ``step`` on the new column (written to cache slot ``cur``). At most ``steps`` columns; stops
    early when the strategy says so. Returns the filled width and the rows' summed log-probabilities.
    ``tune_threads``: a CPU loop times its steps to run on 1 or all threads, whichever is faster now
    (:class:`~tatlas.nn.threads.ThreadTuner`; off for a compiled step, whose threads are fixed)."""
    sum_logprobs = torch.zeros(tokens.shape[0], device=tokens.device)
    cur = begin
    # the loops of one model's step over the same number of rows share a tuner (nn/threads.py)
    key = (getattr(step, "__func__", step), id(getattr(step, "__self__", None)), tokens.shape[0])
    tuner = thread_tuner(tokens.device, enabled=tune_threads, key=key)
    try:
        cur = _search(step, cache, logits, tokens, begin, steps, strategy, filters, streamer, sum_logprobs, tuner)
    finally:
        tuner.close()
    return cur, sum_logprobs


def _search(step, cache, logits, tokens, begin, steps, strategy, filters, streamer, sum_logprobs, tuner) -> int:
    cur = begin
    for i in range(steps):
        tuner.tick()
        if i > 0:
            logits = step(tokens[:, cur - 1 : cur], cache, torch.tensor([cur - 1], device=tokens.device))
        for f in filters:
            logits = f(logits, tokens[:, :cur])
        source, done = strategy.step(tokens, cur, logits, sum_logprobs)
        if streamer is not None:
            streamer(tokens[:, cur])
        cur += 1
        if done or i == steps - 1:
            break
        if source is not None:
            cache.reorder(source, slots=cur - 1)
    return cur


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


def as_batch(prompts, attention_mask, pad_token, device) -> tuple[Tensor, Tensor | None]:
    """A ``[B, T]`` tensor, one token list or several -> ``(tokens [B, T0], mask or None)``."""
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


def model_device(model: nn.Module) -> torch.device:
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
    whose cross-attention keys the cache then holds); decode steps see tokens alone. With
    ``num_beams > 1`` each prompt is searched with ``num_beams`` rows (:class:`BeamSearch`) and the
    best hypothesis is returned with its score; the streamer sees sampled tokens only."""
    device = model_device(model)
    tokens, mask = as_batch(prompts, attention_mask, config.pad_token, device)
    b, t0 = tokens.shape
    k = config.num_beams
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if k > 1 and isinstance(vocab, int) and math.log(k) > config.max_new_tokens * math.log(vocab) + 1e-9:
        raise ValueError(f"num_beams: expected at most {vocab ** config.max_new_tokens:,} (the distinct continuations "
                         f"of {config.max_new_tokens} tokens over {vocab}), got {k:,}")
    if k > 1:  # every prompt once per beam
        rows = torch.arange(b, device=device).repeat_interleave(k)
        tokens, mask = tokens[rows], None if mask is None else mask[rows]
        model_kwargs = {n: (v[rows] if isinstance(v, Tensor) else v) for n, v in model_kwargs.items()}
        strategy = BeamSearch(beam_size=k, stop_tokens=config.stop_tokens, pad_token=config.pad_token,
                              length_penalty=config.length_penalty)
        strategy.reset(b, begin=t0)
    else:
        generator = None if config.seed is None else torch.Generator(device=device).manual_seed(config.seed)
        strategy = Sampler(stop_tokens=config.stop_tokens, pad_token=config.pad_token, temperature=config.temperature,
                           top_k=config.top_k, top_p=config.top_p, min_p=config.min_p, generator=generator)
        strategy.reset(b)
    n = tokens.shape[0]
    cache = model.new_cache(n, t0 + config.max_new_tokens, static=config.static_cache)
    logits = model.prefill(tokens, cache, attention_mask=mask, chunk=config.prefill_chunk, last_only=True,
                           **model_kwargs)[:, -1]
    step = torch.compile(model.decode_step, dynamic=False) if config.compile else model.decode_step
    buffer = torch.full((n, t0 + config.max_new_tokens), config.pad_token, dtype=torch.long, device=device)
    buffer[:, :t0] = tokens
    filters = [RepetitionPenalty(config.repetition_penalty, mask)] if config.repetition_penalty != 1.0 else []
    cur, sum_logprobs = search(step, cache, logits, buffer, begin=t0, steps=config.max_new_tokens, strategy=strategy,
                               filters=filters, streamer=streamer if k == 1 else None, tune_threads=not config.compile)
    if k == 1:
        lengths = strategy.lengths
        return GenerationOutput(buffer[:, t0 : t0 + int(lengths.max())], lengths)
    candidates = strategy.finalize(buffer, cur, sum_logprobs, begin=t0, groups=b)
    penalty = power_penalty(config.length_penalty)
    best = [group[i] for group, i in zip(candidates, rank(candidates, penalty), strict=True)]
    width = max(len(t) for t, _ in best)
    out = torch.full((b, width), config.pad_token, dtype=torch.long, device=device)
    for i, (t, _) in enumerate(best):
        out[i, : len(t)] = torch.tensor(t, dtype=torch.long)
    return GenerationOutput(out, torch.tensor([len(t) for t, _ in best], device=device),
                            torch.tensor([score(t, lp, penalty) for t, lp in best]))
