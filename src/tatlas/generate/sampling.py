"""Logit processors: each maps ``logits [B, V]`` to ``[B, V]``; removed tokens get ``-inf``
(:class:`~tatlas.generate.search.Sampler` applies the sampling filters; the decoding loop applies
:class:`RepetitionPenalty`)."""

from __future__ import annotations

import torch
from torch import Tensor


def repetition_penalty(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """CTRL's penalty on tokens already in ``seen [B, L]``: divide positive logits by ``penalty``,
    multiply negative ones. Padding can be passed as ``-1`` entries (ignored)."""
    if penalty == 1.0 or seen.numel() == 0:
        return logits
    counts = torch.zeros(logits.shape, dtype=torch.long, device=logits.device)
    counts.scatter_add_(1, seen.clamp(min=0), (seen >= 0).long())
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(counts > 0, penalised, logits)


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    k = min(k, logits.shape[-1])
    threshold = logits.topk(k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < threshold, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Keep the smallest set of most likely tokens whose total probability is at least ``p``."""
    if p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs  # probability mass strictly before each token
    remove_sorted = before >= p
    remove_sorted[..., 0] = False  # the first token always stays (a p below float32's range compares as 0)
    remove = remove_sorted.scatter(1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def min_p_filter(logits: Tensor, min_p: float) -> Tensor:
    probs = logits.softmax(dim=-1)
    threshold = min_p * probs.max(dim=-1, keepdim=True).values
    return logits.masked_fill(probs < threshold, float("-inf"))


class RepetitionPenalty:
    """The decoding loop's filter for :func:`repetition_penalty`: the prompt (its padding masked by
    ``prompt_mask [N, T0]``) and every token generated so far count as seen."""

    def __init__(self, penalty: float, prompt_mask: Tensor | None = None) -> None:
        self.penalty, self.prompt_mask = penalty, prompt_mask

    def __call__(self, logits: Tensor, tokens: Tensor) -> Tensor:
        """``logits [N, V]``, ``tokens [N, cur]`` (the buffer so far) -> penalised float32 logits."""
        seen = tokens
        if self.prompt_mask is not None:
            t0 = self.prompt_mask.shape[1]
            seen = torch.cat([tokens[:, :t0].masked_fill(~self.prompt_mask, -1), tokens[:, t0:]], dim=1)
        return repetition_penalty(logits.float(), seen, self.penalty)
