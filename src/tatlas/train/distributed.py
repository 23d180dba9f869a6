"""The same trainer on one process or many: DistributedDataParallel or FSDP2 under ``torchrun``.

- DDP: Li et al. 2020, "PyTorch Distributed: Experiences on Accelerating Data Parallel Training".
  The *whole* ``loss_fn(model, batch)`` runs inside the DDP wrapper's ``forward`` (through
  :class:`LossModule`), so a loss that calls ``model.encode_image(...)`` or any other method still
  has its gradients all-reduced; ``loss_fn`` always receives the unwrapped model.
- FSDP2: ``torch.distributed.fsdp.fully_shard`` (per-parameter sharding on DTensor; Zhao et al.
  2023, "PyTorch FSDP"), one unit per shared block of :mod:`tatlas.nn` (``TransformerBlock`` …;
  a model may name its own with an ``fsdp_units`` attribute) plus the root. Rank 0's
  initial weights are broadcast first, as DDP does. Checkpoints are sharded through
  ``torch.distributed.checkpoint`` with ``get_state_dict`` / ``set_state_dict``.
- Backends: NCCL on CUDA, gloo on CPU. The process group is created from the ``torchrun``
  environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) unless one exists; one
  created here is destroyed at the end of ``fit``.
- Data: each optimizer step consumes one global batch of ``batch_size`` samples; rank ``r`` takes
  the ``r``-th contiguous shard of ``batch_size // world_size`` (see :mod:`.sampler`). Gradients
  are averaged over ranks, so the loss curve equals the one-process curve up to float rounding.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..nn import TransformerBlock
from .config import TrainConfig


@dataclass(frozen=True, kw_only=True)
class DistEnv:
    """Where this process stands: strategy, rank, world size, device."""

    strategy: str  # "single" | "ddp" | "fsdp"
    device: torch.device
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    owns_group: bool = False  # this module created the process group (and destroys it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.strategy != "single"

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce(self, t: Tensor, op: str = "sum") -> Tensor:
        """In-place all-reduce (``"sum"`` or ``"max"``); a no-op on one process."""
        if self.distributed:
            dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
        return t


def resolve_strategy(config: TrainConfig) -> str:
    """``config.strategy``, with ``"auto"`` = ``"ddp"`` when ``WORLD_SIZE`` > 1, else ``"single"``."""
    if config.strategy != "auto":
        return config.strategy
    return "ddp" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else "single"


def planned_world_size(strategy: str) -> int:
    """The world size a run will have, read before any process group exists."""
    if strategy == "single":
        return 1
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def resolve_device(config: TrainConfig, local_rank: int) -> torch.device:
    if config.device is not None:
        return torch.device(config.device)
    return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")


def setup(config: TrainConfig) -> DistEnv:
    """Resolve the strategy and device; join (or create) the process group for DDP / FSDP."""
    strategy = resolve_strategy(config)
    if strategy == "single":
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError(
                f"TrainConfig.strategy: expected 'ddp' or 'fsdp' under torchrun (WORLD_SIZE="
                f"{os.environ['WORLD_SIZE']}), got 'single' (every rank would train alone into one out_dir)"
            )
        return DistEnv(strategy="single", device=resolve_device(config, 0))
    owns = False
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(config, local_rank)
    if not dist.is_initialized():
        missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise RuntimeError(
                f"strategy={strategy!r} needs a process group: launch with `torchrun --nproc_per_node N ...` "
                f"or call torch.distributed.init_process_group first (missing environment: {', '.join(missing)})"
            )
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                device_id=device if device.type == "cuda" else None)
        owns = True
    return DistEnv(strategy=strategy, device=device, rank=dist.get_rank(), local_rank=local_rank,
                   world_size=dist.get_world_size(), owns_group=owns)


def teardown(env: DistEnv, *, clean: bool) -> None:
    """Destroy a process group created by :func:`setup`. After a clean finish the ranks first meet
    at a barrier, so that none tears the group down (rank 0 also hosts the rendezvous store) while
    another is still in a collective; after an error nobody waits (the others may never arrive).
    The caller drops its DDP wrapper first: a reducer outliving the group aborts at exit."""
    if env.owns_group and dist.is_initialized():
        if clean:
            dist.barrier()
        dist.destroy_process_group()


class LossModule(nn.Module):
    """``forward(batch) = loss_fn(model, batch)``: the unit that DDP wraps (see module docstring)."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, Any], Any]) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> Any:
        return self.loss_fn(self.model, batch)


def block_types() -> tuple[type[nn.Module], ...]:
    """The shared transformer blocks of :mod:`tatlas.nn` (its ``nn.Module`` classes named ``*Block``)."""
    from .. import nn as blocks

    found = tuple(v for k, v in vars(blocks).items() if k.endswith("Block") and isinstance(v, type)
                  and issubclass(v, nn.Module))
    return found or (TransformerBlock,)


def shard_fsdp(model: nn.Module, *, units: tuple[type[nn.Module], ...] | None = None) -> nn.Module:
    """FSDP2 in place: ``fully_shard`` every module of the ``units`` types, then the root.
    ``units`` defaults to the model's ``fsdp_units`` attribute, else :func:`block_types`."""
    from torch.distributed.fsdp import fully_shard

    units = units or getattr(model, "fsdp_units", None) or block_types()
    for module in list(model.modules()):
        if module is not model and isinstance(module, units):
            fully_shard(module)
    fully_shard(model)
    return model


def broadcast_from_rank0(model: nn.Module) -> None:
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            dist.broadcast(t.data, src=0)


def wrap(model: nn.Module, loss_fn: Callable[[nn.Module, Any], Any], env: DistEnv) -> nn.Module:
    """The module whose ``forward(batch)`` runs the loss: plain, DDP-wrapped, or over an FSDP2 model."""
    if env.strategy == "fsdp":
        broadcast_from_rank0(model)
        shard_fsdp(model)
    unit = LossModule(model, loss_fn)
    if env.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(unit, device_ids=[env.device.index] if env.device.type == "cuda" else None)
    return unit


@contextlib.contextmanager
def gradient_sync(unit: nn.Module, model: nn.Module, env: DistEnv, enabled: bool) -> Iterator[None]:
    """Skip the gradient all-reduce / reduce-scatter on all but the last accumulation micro-batch."""
    if env.strategy == "ddp" and not enabled:
        with unit.no_sync():
            yield
        return
    if env.strategy == "fsdp":
        model.set_requires_gradient_sync(enabled)
    yield


def clip_grad_norm(params: list[nn.Parameter], max_norm: float | None) -> Tensor:
    """Global L2 gradient norm (over all ranks for FSDP), clipped to ``max_norm`` when given."""
    norm = torch.nn.utils.clip_grad_norm_(params, float("inf") if max_norm is None else max_norm)
    full_tensor = getattr(norm, "full_tensor", None)  # a DTensor under FSDP2
    return full_tensor() if full_tensor is not None else norm


# --------------------------------------------------------------------------- sharded state


def save_sharded(model: nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Model and optimizer shards of every rank into ``folder`` (collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(model, optimizer)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(folder))


def load_sharded(model: nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Load :func:`save_sharded`'s folder into a sharded model and its optimizer (collective);
    DCP reshards, so the world size may differ from the one that saved."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    msd, osd = get_state_dict(model, optimizer)  # templates; initialises the optimizer state
    state = {"model": msd, "optim": osd}
    dcp.load(state, checkpoint_id=str(folder))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


def full_state_dict(model: nn.Module, env: DistEnv) -> dict[str, Tensor] | None:
    """The whole model's state on rank 0 (on CPU), ``None`` elsewhere (collective under FSDP)."""
    if env.strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return state if env.is_main else None
    return model.state_dict() if env.is_main else None
