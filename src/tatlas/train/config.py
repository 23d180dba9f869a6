"""The run options of one training run: a frozen, keyword-only dataclass validated on creation.

Architecture lives in each system's config; everything about *how* to train (batch, schedule,
precision, checkpoints, parallelism) lives here. ``__post_init__`` validates and never rewrites;
derived values (the warm-up length, the per-rank batch) are properties or computed by the trainer.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PRECISIONS = ("auto", "float32", "bfloat16")
STRATEGIES = ("auto", "single", "ddp", "fsdp")


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How to train.

    - ``steps``: optimizer steps in the whole run (a resumed run continues to this number).
    - ``batch_size``: samples per optimizer step, summed over ranks and accumulation micro-batches;
      each rank takes ``batch_size // world_size`` of them in ``grad_accum`` micro-batches, so a run's
      loss curve does not depend on the world size or on ``grad_accum`` (up to float rounding).
    - ``lr``, ``weight_decay``, ``betas``: AdamW (Loshchilov & Hutter 2019); no decay on norms,
      biases and embeddings (:func:`tatlas.train.optim.param_groups`).
    - ``warmup_steps``: linear warm-up; ``None`` = 5% of ``steps`` (:attr:`warmup`). Then a cosine
      decay to ``lr * min_lr_ratio`` at ``steps`` (Loshchilov & Hutter 2017, SGDR, one cycle).
    - ``grad_clip``: clip the global gradient norm to this (``None``: measure it, do not clip).
    - ``seed``: seeds Python, NumPy and torch (``seed + rank``) and the data order (``seed``).
    - ``deterministic``: ``torch.use_deterministic_algorithms(True)`` for the duration of ``fit``.
    - ``eval_every`` / ``checkpoint_every`` / ``log_every``: in optimizer steps. ``eval_every=None``:
      evaluate only after the last step; ``checkpoint_every=None``: checkpoint only on Ctrl-C. A run
      with ``checkpoint_every`` also checkpoints its last step (so it can be extended).
    - ``keep_checkpoints``: the newest K complete checkpoints are kept, older ones removed.
    - ``out_dir``: where checkpoints, ``metrics.jsonl``, ``metrics.png`` and the final
      ``model.safetensors`` go; ``None`` writes nothing (metrics stay in memory).
    - ``precision``: ``"auto"`` = bfloat16 autocast on CUDA, float32 on CPU.
    - ``strategy``: ``"single"``, ``"ddp"`` (DistributedDataParallel), ``"fsdp"`` (FSDP2
      ``fully_shard``), or ``"auto"``: ``"ddp"`` when the ``WORLD_SIZE`` environment variable
      (set by ``torchrun``) is above 1, else ``"single"``.
    - ``device``: ``None`` = ``cuda:<local rank>`` when CUDA is available, else ``cpu``.
    """

    steps: int
    batch_size: int
    lr: float = 3e-4
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.1
    grad_clip: float | None = 1.0
    grad_accum: int = 1
    seed: int = 0
    deterministic: bool = False
    eval_every: int | None = None
    checkpoint_every: int | None = None
    keep_checkpoints: int = 3
    log_every: int = 10
    out_dir: str | os.PathLike[str] | None = None
    precision: str = "auto"
    strategy: str = "auto"
    device: str | None = None
    num_workers: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        def need(ok: bool, field: str, expected: str) -> None:
            if not ok:
                raise ValueError(f"TrainConfig.{field}: expected {expected}, got {getattr(self, field)!r}")

        def positive_int(field: str, optional: bool = False) -> None:
            v = getattr(self, field)
            if optional and v is None:
                return
            need(isinstance(v, int) and not isinstance(v, bool) and v > 0, field,
                 "a positive int" + (" or None" if optional else ""))

        for name in ("steps", "batch_size", "grad_accum", "log_every", "keep_checkpoints"):
            positive_int(name)
        for name in ("eval_every", "checkpoint_every"):
            positive_int(name, optional=True)
        need(_finite(self.lr) and self.lr > 0, "lr", "a positive learning rate (finite)")
        need(_finite(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "a finite non-negative weight decay")
        need(len(self.betas) == 2 and all(0.0 <= b < 1.0 for b in self.betas), "betas",
             "two numbers in [0, 1)")
        if self.warmup_steps is not None:
            need(isinstance(self.warmup_steps, int) and 0 <= self.warmup_steps <= self.steps, "warmup_steps",
                 f"None or an int in [0, steps={self.steps}]")
        need(0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio", "a number in [0, 1]")
        need(self.grad_clip is None or self.grad_clip > 0, "grad_clip", "a positive number or None")
        need(self.batch_size % self.grad_accum == 0, "batch_size",
             f"a multiple of grad_accum={self.grad_accum}")
        need(isinstance(self.num_workers, int) and self.num_workers >= 0, "num_workers", "an int >= 0")
        need(self.precision in PRECISIONS, "precision", f"one of {PRECISIONS}")
        need(self.strategy in STRATEGIES, "strategy", f"one of {STRATEGIES}")
        if self.checkpoint_every is not None and self.out_dir is None:
            raise ValueError(f"TrainConfig.out_dir: expected a folder when checkpoint_every="
                             f"{self.checkpoint_every} is set, got None")

    @property
    def warmup(self) -> int:
        """Warm-up steps: ``warmup_steps``, or 5% of ``steps`` when it is ``None``."""
        return self.warmup_steps if self.warmup_steps is not None else self.steps // 20

    @property
    def out_path(self) -> Path | None:
        return None if self.out_dir is None else Path(self.out_dir)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (a path becomes a string), as stored in checkpoints."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        d["out_dir"] = None if self.out_dir is None else os.fspath(self.out_dir)
        return d
