"""Train the tiny LLM on random bytes; run by the subprocess tests in tests/test_train*.py.

Works as a plain script (strategy single) and under torchrun (ddp / fsdp). Rank 0 writes a JSON
result (losses, start step, interrupted, checkpoint) to --result. --interrupt-at K sends SIGINT to
rank 0 itself during step K, as a user's Ctrl-C would.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys

import torch
import torch.nn.functional as F
from torch.distributed.fsdp import FSDPModule

import tatlas
from tatlas.train import TrainConfig, Trainer


class RandomBytes(torch.utils.data.Dataset):
    """``n`` fixed random byte sequences of ``length`` tokens."""

    def __init__(self, n: int = 32, length: int = 33, seed: int = 1234) -> None:
        self.data = torch.randint(0, 256, (n, length), generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.data[i]


def next_token_loss(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    logits = model(tokens[:, :-1])  # [B, T, V]
    return F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return tatlas.create("llm", "tiny", dim=32, layers=2, heads=2, kv_heads=1, mlp_hidden=64)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--strategy", default="single")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--out", default=None)
    p.add_argument("--checkpoint-every", type=int, default=None)
    p.add_argument("--keep", type=int, default=3)
    p.add_argument("--interrupt-at", type=int, default=None)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--model-seed", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--result", default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def eval_fn(model: torch.nn.Module) -> dict[str, float]:
        # called after each step (eval_every=1): the schedule has counted the steps done
        if trainer.scheduler.last_step == a.interrupt_at and int(os.environ.get("RANK", "0")) == 0:
            os.kill(os.getpid(), signal.SIGINT)
        return {}

    config = TrainConfig(
        steps=a.steps, batch_size=a.batch_size, grad_accum=a.grad_accum, lr=a.lr, warmup_steps=2,
        strategy=a.strategy, out_dir=a.out, checkpoint_every=a.checkpoint_every, keep_checkpoints=a.keep,
        eval_every=1 if a.interrupt_at is not None else None, log_every=1, progress=False,
        precision="float32", deterministic=True, num_workers=a.num_workers,
    )
    trainer = Trainer(tiny_model(a.model_seed), next_token_loss, RandomBytes(), config,
                      eval_fn=eval_fn if a.interrupt_at is not None else None)
    result = trainer.fit(resume=a.resume)
    if a.result is not None and int(os.environ.get("RANK", "0")) == 0:
        with open(a.result, "w") as f:
            json.dump({"losses": list(result.losses), "start_step": result.start_step, "steps": result.steps,
                       "interrupted": result.interrupted, "resumed_from": str(result.resumed_from),
                       "checkpoint": str(result.checkpoint), "model_path": str(result.model_path),
                       "fsdp_units": sum(isinstance(m, FSDPModule) for m in trainer.model.modules())}, f)
    sys.exit(0)


if __name__ == "__main__":
    main()
