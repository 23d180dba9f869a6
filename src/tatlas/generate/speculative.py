"""Speculative decoding (Leviathan et al. 2023; Chen et al. 2023), greedy form: a small draft
model proposes ``lookahead`` tokens one by one; the target scores them all in one forward pass;
the longest prefix agreeing with the target's own greedy choices is kept, plus the target's token
after it. The output is the target's greedy output, produced with fewer target passes.

Static caches need no rollback: a rejected slot is rewritten before any query can see it (queries
see only slots at or before their own)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .config import GenerationConfig
from .loop import GenerationOutput, as_batch, model_device


@dataclass(frozen=True)
class SpeculativeStats:
    target_passes: int
    proposed: int
    accepted: int

    @property
    def acceptance(self) -> float:
        return self.accepted / max(1, self.proposed)


@torch.inference_mode()
def speculative_generate(
    target: nn.Module, draft: nn.Module, prompt, config: GenerationConfig = GenerationConfig(), *,
    lookahead: int = 4,
) -> tuple[GenerationOutput, SpeculativeStats]:
    """Greedy generation from ``target`` accelerated by ``draft`` (same vocabulary); one prompt."""
    if not config.greedy or config.num_beams != 1 or config.repetition_penalty != 1.0:
        raise ValueError("speculative decoding here is greedy: temperature 0, one beam, no repetition penalty")
    if lookahead < 1:
        raise ValueError(f"lookahead must be >= 1, got {lookahead}")
    device = model_device(target)
    tokens, mask = as_batch(prompt, None, config.pad_token, device)
    if tokens.shape[0] != 1 or mask is not None:
        raise ValueError(f"speculative decoding takes one prompt, got {tokens.shape[0]}")
    t0 = tokens.shape[1]
    max_len = t0 + config.max_new_tokens + lookahead + 1
    t_cache, d_cache = target.new_cache(1, max_len), draft.new_cache(1, max_len)
    last = target.prefill(tokens, t_cache)[:, -1].argmax(-1)  # [1]
    draft.prefill(tokens, d_cache)
    out: list[int] = [int(last)]
    n = t0 + 1  # sequence length including `last`, which no cache holds yet
    d_pending: list[int] = [int(last)]  # tokens the draft must still read, ending at slot n - 1
    passes, proposed, accepted = 1, 0, 0
    stops = set(config.stop_tokens)

    def pos(a: int, b: int) -> Tensor:
        return torch.arange(a, b, device=device)

    while len(out) < config.max_new_tokens and not (stops and out[-1] in stops):
        k = min(lookahead, config.max_new_tokens - len(out))
        # draft: read pending tokens, then propose k tokens
        logits = draft(torch.tensor([d_pending], device=device), cache=d_cache,
                       input_pos=pos(n - len(d_pending), n))[:, -1]
        guesses: list[int] = []
        for i in range(k):
            guesses.append(int(logits.argmax(-1)))
            if i < k - 1:
                logits = draft.decode_step(torch.tensor([[guesses[-1]]], device=device), d_cache, pos(n + i, n + i + 1))
        # target: score last + guesses in one pass
        seq = torch.tensor([[out[-1], *guesses]], device=device)
        choice = target(seq, cache=t_cache, input_pos=pos(n - 1, n + k))[0].argmax(-1).tolist()  # k + 1
        passes += 1
        j = 0
        while j < k and guesses[j] == choice[j]:
            j += 1
        proposed, accepted = proposed + k, accepted + j
        new = guesses[:j] + [choice[j]]
        # the draft has read guesses[:k-1]; if all k were accepted it still owes guesses[k-1]
        d_pending = ([guesses[k - 1]] if j == k else []) + [choice[j]]
        n += len(new)
        out.extend(new)
    out = out[: config.max_new_tokens]
    if stops:
        for i, t in enumerate(out):
            if t in stops:
                out = out[: i + 1]
                break
    result = GenerationOutput(torch.tensor([out], device=device), torch.tensor([len(out)], device=device))
    return result, SpeculativeStats(passes, proposed, accepted)
