"""Training the ``llm`` system: next-token cross-entropy on the embedded text corpus (CPython's
pydoc topics, byte-level tokens), evaluated as validation loss and perplexity."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...data import ByteTokenizer, TextDataset
from ...nn.moe import Routing, pooled_balance_loss
from ..spec import TrainTask
from .config import LLMConfig


def lm_loss(model: nn.Module, batch: dict[str, Tensor], *, routings: list[Routing] | None = None
            ) -> Tensor | dict[str, Tensor]:
    """Mean next-token cross-entropy (nats) of ``batch["tokens"] [B, T + 1]``; for a mixture-of-
    experts model with ``aux_loss_weight > 0`` also the pooled load-balancing loss (Switch §2.2) of
    the routings its forward reports, as ``{"loss": ce + w * balance, "ce": ce, "balance": balance}``.
    ``routings``: a list that also receives those routings (expert loads), one per MoE layer."""
    tokens = batch["tokens"]
    found: list[Routing] = []
    logits = model(tokens[:, :-1], routings=found)  # [B, T, V]
    if routings is not None:
        routings.extend(found)
    ce = F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())
    moe = getattr(model, "config", None) is not None and getattr(model.config, "moe", None)
    if not moe or moe.aux_loss_weight == 0:
        return ce
    balance = pooled_balance_loss(found)
    return {"loss": ce + moe.aux_loss_weight * balance, "ce": ce, "balance": balance}


@torch.no_grad()
def evaluate_lm(model: nn.Module, data: TextDataset, *, batch_size: int = 16, max_batches: int = 8) -> dict[str, float]:
    """Validation loss (nats/token) and perplexity over the first ``max_batches`` batches."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    n = min(len(data), batch_size * max_batches)
    for start in range(0, n, batch_size):
        tokens = torch.stack([data[i]["tokens"] for i in range(start, min(n, start + batch_size))]).to(device)
        out = lm_loss(model, {"tokens": tokens})
        total += (out["ce"] if isinstance(out, dict) else out).item() * tokens.shape[0]
        count += tokens.shape[0]
    model.train(was_training)
    loss = total / max(1, count)
    return {"val_loss": loss, "val_ppl": math.exp(min(loss, 50.0))}


def block_size(config: LLMConfig) -> int:
    return min(128, config.max_positions - 1)


def train_task(config: LLMConfig, seed: int = 0) -> TrainTask:
    vocab = ByteTokenizer().vocab_size
    if config.vocab_size < vocab:
        raise ValueError(f"the text corpus uses {vocab} byte-level tokens; the model's vocab_size is {config.vocab_size}")
    train = TextDataset("train", block_size=block_size(config), seed=seed)
    val = TextDataset("val", block_size=block_size(config), seed=seed)
    return TrainTask(train_data=train, loss_fn=lm_loss, eval_fn=lambda model: evaluate_lm(model, val))
