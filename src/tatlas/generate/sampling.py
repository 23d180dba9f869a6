"""Logit processors and token selection. Each processor maps ``logits [B, V]`` to ``[B, V]``;
removed tokens get ``-inf``."""

from __future__ import annotations

import torch
from torch import Tensor

from .config import GenerationConfig


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
    remove_sorted = before >= p  # the first token always stays (before == 0 < p)
    remove = remove_sorted.scatter(1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def min_p_filter(logits: Tensor, min_p: float) -> Tensor:
    probs = logits.softmax(dim=-1)
    threshold = min_p * probs.max(dim=-1, keepdim=True).values
    return logits.masked_fill(probs < threshold, float("-inf"))


def process_logits(logits: Tensor, seen: Tensor | None, config: GenerationConfig) -> Tensor:
    """Repetition penalty, temperature, then the sampling filters, as configured."""
    logits = logits.float()
    if seen is not None:
        logits = repetition_penalty(logits, seen, config.repetition_penalty)
    if config.greedy:
        return logits
    logits = logits / config.temperature
    if config.top_k is not None:
        logits = top_k_filter(logits, config.top_k)
    if config.top_p is not None:
        logits = top_p_filter(logits, config.top_p)
    if config.min_p is not None:
        logits = min_p_filter(logits, config.min_p)
    return logits


def select(logits: Tensor, config: GenerationConfig, generator: torch.Generator | None = None) -> Tensor:
    """Processed ``logits [B, V]`` -> next tokens ``[B]``: argmax when greedy, else a sample."""
    if config.greedy:
        return logits.argmax(dim=-1)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
