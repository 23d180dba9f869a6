"""AdamW with decoupled weight decay only where it belongs, and a warm-up + cosine schedule.

- AdamW: Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization".
- Which tensors decay: as in GPT-2/nanoGPT and most LLM recipes, matrices of linear and
  convolution layers decay; norms (scale and shift), biases, embeddings and positions do not.
  Decided by module type (``nn.Embedding``, tatlas's ``LearnedPositions``, ``LayerNorm``/``RMSNorm``
  from :mod:`tatlas.nn` or ``torch.nn``) and, for everything else, by dimension (any 1-D tensor).
  A tensor tied to an embedding (a tied LM head) counts as an embedding.
- Schedule: linear warm-up, then half a cosine down to ``min_lr_ratio`` (Loshchilov & Hutter 2017,
  "SGDR: Stochastic Gradient Descent with Warm Restarts", one cycle without restarts).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..nn import LayerNorm, LearnedPositions, RMSNorm
from .config import TrainConfig

#: Modules whose parameters never decay.
NO_DECAY_MODULES: tuple[type[nn.Module], ...] = (
    nn.Embedding, nn.EmbeddingBag, LearnedPositions,
    LayerNorm, RMSNorm, nn.LayerNorm, nn.RMSNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase,
)


def param_groups(
    model: nn.Module, weight_decay: float, *, no_decay_modules: tuple[type[nn.Module], ...] = NO_DECAY_MODULES
) -> list[dict[str, Any]]:
    """Two AdamW groups: ``{"params", "weight_decay", "names"}`` with decay, and without.

    Trainable parameters only; each tensor appears once even when tied (shared) between modules.
    """
    no_decay_ids: set[int] = set()
    for module in model.modules():
        if isinstance(module, no_decay_modules):
            no_decay_ids.update(id(p) for p in module.parameters(recurse=False))
    decay: list[tuple[str, nn.Parameter]] = []
    other: list[tuple[str, nn.Parameter]] = []
    for name, p in model.named_parameters():  # remove_duplicate=True: a tied tensor once
        if not p.requires_grad:
            continue
        (other if id(p) in no_decay_ids or p.ndim < 2 else decay).append((name, p))
    return [
        {"params": [p for _, p in decay], "weight_decay": weight_decay, "names": [n for n, _ in decay]},
        {"params": [p for _, p in other], "weight_decay": 0.0, "names": [n for n, _ in other]},
    ]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`: torch's fused kernel where :func:`can_fuse` allows (the
    CPU included), else ``foreach``."""
    groups = [{"params": g["params"], "weight_decay": g["weight_decay"]}
              for g in param_groups(model, config.weight_decay) if g["params"]]
    if not groups:
        raise ValueError("the model has no trainable parameters")
    fused = can_fuse([p for g in groups for p in g["params"]])
    return torch.optim.AdamW(
        groups, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay,
        fused=True if fused else None,
    )


def can_fuse(params: list[Tensor]) -> bool:
    """Whether torch's fused AdamW kernel takes ``params``: plain floating-point tensors (not the
    DTensors of FSDP2, which keep ``foreach``), all on the CPU or all on CUDA.

    On the CPU the fused kernel updates each tensor in one pass; ``foreach`` allocates a fresh
    result per operation (``sqrt`` of the second moment, the denominators ...). For CLIP's real
    49,408-token embedding that is ~12.6 MB of new pages per operation per step: the demo's step on
    one Zen 1 core takes 235 ms with ``foreach`` and 192 ms fused (``benchmarks/bench_train_step.py``,
    ``benchmarks/RESULTS.md``). The two agree to float32 rounding (``tests/test_train.py``)."""
    devices = {p.device.type for p in params}
    return (len(devices) == 1 and devices <= {"cpu", "cuda"}
            and all(type(p) in (Tensor, nn.Parameter) and p.is_floating_point() for p in params))


def warmup_cosine(step: int, *, warmup: int, total: int, min_ratio: float) -> float:
    """Learning-rate multiplier for optimizer step ``step`` (0-based): ``(step + 1) / warmup``
    during warm-up, then ``min_ratio + (1 - min_ratio) * (1 + cos(pi * progress)) / 2`` with
    ``progress = (step - warmup) / (total - warmup)``, held at ``min_ratio`` beyond ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """Sets each group's ``lr = base_lr * warmup_cosine(step)``. Its state is the step count only;
    the shape of the schedule comes from the config, so a resumed run may extend ``steps``."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, warmup: int, total: int, min_ratio: float) -> None:
        self.optimizer = optimizer
        self.warmup, self.total, self.min_ratio = warmup, total, min_ratio
        self.base_lrs = [float(g.get("initial_lr", g["lr"])) for g in optimizer.param_groups]
        self.last_step = 0  # optimizer steps taken so far
        self._apply()

    @classmethod
    def from_config(cls, optimizer: torch.optim.Optimizer, config: TrainConfig) -> WarmupCosine:
        return cls(optimizer, warmup=config.warmup, total=config.steps, min_ratio=config.min_lr_ratio)

    def multiplier(self, step: int | None = None) -> float:
        step = self.last_step if step is None else step
        return warmup_cosine(step, warmup=self.warmup, total=self.total, min_ratio=self.min_ratio)

    def _apply(self) -> None:
        m = self.multiplier()
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * m

    def step(self) -> None:
        """Call after each ``optimizer.step()``: moves to the next step's learning rate."""
        self.last_step += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, int]:
        return {"last_step": self.last_step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.last_step = int(state["last_step"])
        self._apply()
