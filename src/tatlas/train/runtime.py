"""What a training process needs around the optimizer step: seeding, autocast, moving batches to
the device, reading a loss function's result, and stopping cleanly on a signal (used by
:mod:`.trainer`)."""

from __future__ import annotations

import contextlib
import random
import signal
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """``"auto"``: bfloat16 autocast on CUDA, none (float32) elsewhere."""
    if precision == "float32" or (precision == "auto" and device.type != "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def split_loss(out: Any, step: int) -> tuple[Tensor, dict[str, Tensor]]:
    if isinstance(out, Tensor):
        loss, extras = out, {}
    elif isinstance(out, Mapping):
        if "loss" not in out:
            raise ValueError(f"loss_fn returned a dict without 'loss' at step {step} (keys: {sorted(out)})")
        loss = out["loss"]
        extras = {k: v if isinstance(v, Tensor) else torch.tensor(float(v)) for k, v in out.items() if k != "loss"}
        extras = {k: v.to(loss.device) for k, v in extras.items()}
    else:
        raise TypeError(f"loss_fn: expected a Tensor or a dict with 'loss', got {type(out).__name__}")
    if not isinstance(loss, Tensor) or loss.ndim != 0:
        raise ValueError(f"loss_fn: expected a scalar loss tensor, got {getattr(loss, 'shape', type(loss))}")
    bad = [k for k, v in extras.items() if v.numel() != 1]
    if bad:
        raise ValueError(f"loss_fn: extra entries must be scalars, got shapes "
                         f"{ {k: list(extras[k].shape) for k in bad} }")
    return loss, {k: v.reshape(()) for k, v in extras.items()}


class StopSignal:
    """SIGINT / SIGTERM set ``signum``; the loop stops at the end of the step. A second SIGINT
    raises ``KeyboardInterrupt``. Handlers are installed only from the main thread and restored on exit."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        if signum == signal.SIGINT:  # the next Ctrl-C behaves as usual
            signal.signal(signal.SIGINT, self._old.get(signal.SIGINT, signal.default_int_handler))

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)
