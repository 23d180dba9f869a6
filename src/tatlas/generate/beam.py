"""Beam search with a length penalty (the hypothesis bookkeeping of Wu et al. 2016, GNMT §7, as
in Hugging Face's ``BeamSearchScorer``): each of ``num_beams`` beams keeps its summed log-probability;
a hypothesis ending in a stop token is scored ``sum_logprobs / generated_len ** length_penalty``.
A batch row is finished once it holds ``num_beams`` hypotheses and no running beam can beat them."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import GenerationConfig
from .sampling import process_logits


class _Hypotheses:
    def __init__(self, k: int, length_penalty: float) -> None:
        self.k, self.lp = k, length_penalty
        self.items: list[tuple[float, list[int]]] = []

    def add(self, tokens: list[int], sum_logprobs: float) -> None:
        score = sum_logprobs / (len(tokens) ** self.lp)
        self.items.append((score, tokens))
        self.items.sort(key=lambda x: -x[0])
        del self.items[self.k :]

    def done(self, best_running: float, cur_len: int) -> bool:
        if len(self.items) < self.k:
            return False
        return self.items[-1][0] >= best_running / (cur_len ** self.lp)


@torch.inference_mode()
def beam_search(
    model: nn.Module, tokens: Tensor, config: GenerationConfig, *, attention_mask: Tensor | None = None,
    **model_kwargs,
) -> "GenerationOutput":  # noqa: F821
    from .loop import GenerationOutput

    k, device = config.num_beams, tokens.device
    b, t0 = tokens.shape
    rows = torch.arange(b, device=device).repeat_interleave(k)  # each prompt once per beam
    cache = model.new_cache(b * k, t0 + config.max_new_tokens, static=config.static_cache)
    mask = None if attention_mask is None else attention_mask[rows]
    model_kwargs = {n: (v[rows] if isinstance(v, Tensor) else v) for n, v in model_kwargs.items()}
    logits = model.prefill(tokens[rows], cache, attention_mask=mask, chunk=config.prefill_chunk, last_only=True,
                           **model_kwargs)[:, -1]

    beam_scores = torch.zeros(b, k, device=device)
    beam_scores[:, 1:] = float("-inf")  # all beams start identical: expand only the first
    seqs = torch.zeros(b * k, 0, dtype=torch.long, device=device)
    hyps = [_Hypotheses(k, config.length_penalty) for _ in range(b)]
    finished = [False] * b
    stops = set(config.stop_tokens)
    seen = tokens[rows] if mask is None else tokens[rows].masked_fill(~mask, -1)

    for step in range(config.max_new_tokens):
        logprobs = process_logits(logits, seen if config.repetition_penalty != 1.0 else None, config)
        logprobs = logprobs.log_softmax(dim=-1)  # [B*K, V]
        v = logprobs.shape[-1]
        cand = (beam_scores.reshape(-1, 1) + logprobs).reshape(b, k * v)
        top_scores, top_ids = cand.topk(2 * k, dim=-1)  # [B, 2K]
        next_beam = torch.zeros(b, k, dtype=torch.long, device=device)
        next_token = torch.full((b, k), config.pad_token, dtype=torch.long, device=device)
        next_scores = torch.full((b, k), float("-inf"), device=device)
        for i in range(b):
            if finished[i]:
                next_beam[i] = torch.arange(k, device=device)
                continue
            n = 0
            for rank, (score, idx) in enumerate(zip(top_scores[i].tolist(), top_ids[i].tolist(), strict=True)):
                beam, token = divmod(idx, v)
                if token in stops:
                    if rank < k:
                        hyps[i].add(seqs[i * k + beam].tolist() + [token], score)
                    continue
                next_beam[i, n], next_token[i, n], next_scores[i, n] = beam, token, score
                n += 1
                if n == k:
                    break
            finished[i] = hyps[i].done(next_scores[i].max().item(), step + 1)
        src = (torch.arange(b, device=device)[:, None] * k + next_beam).reshape(-1)
        seqs = torch.cat([seqs[src], next_token.reshape(-1, 1)], dim=1)
        seen = torch.cat([seen[src], next_token.reshape(-1, 1)], dim=1)
        beam_scores = next_scores
        if all(finished) or step == config.max_new_tokens - 1:
            break
        cache.reorder(src)
        logits = model.decode_step(next_token.reshape(-1, 1), cache, torch.tensor([t0 + step], device=device))

    for i in range(b):
        if not finished[i]:
            for j in range(k):
                if beam_scores[i, j] > float("-inf"):
                    hyps[i].add(seqs[i * k + j].tolist(), beam_scores[i, j].item())
    best = [h.items[0] for h in hyps]
    n = max(len(t) for _, t in best)
    out = torch.full((b, n), config.pad_token, dtype=torch.long, device=device)
    for i, (_, t) in enumerate(best):
        out[i, : len(t)] = torch.tensor(t, dtype=torch.long)
    lengths = torch.tensor([len(t) for _, t in best], device=device)
    return GenerationOutput(out, lengths, torch.tensor([s for s, _ in best]))
