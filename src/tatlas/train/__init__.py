"""One trainer for every system: AdamW with warm-up + cosine, accumulation, clipping, autocast,
atomic checkpoints with exact resume, JSONL/PNG metrics and a progress bar, on one process or
under ``torchrun`` with DDP or FSDP2.

    >>> cfg = TrainConfig(steps=100, batch_size=8, out_dir="runs/llm", checkpoint_every=20)
    >>> result = Trainer(model, loss_fn, dataset, cfg).fit(resume=True)
"""

from .checkpoint import CheckpointStore, resolve_checkpoint, verify
from .config import TrainConfig
from .distributed import DistEnv
from .metrics import MetricsLogger, read_metrics
from .optim import WarmupCosine, build_optimizer, param_groups, warmup_cosine
from .sampler import InfiniteBatchSampler
from .trainer import Trainer, TrainingDiverged, TrainResult

__all__ = [
    "CheckpointStore", "DistEnv", "InfiniteBatchSampler", "MetricsLogger", "TrainConfig", "TrainResult",
    "Trainer", "TrainingDiverged", "WarmupCosine", "build_optimizer", "param_groups", "read_metrics",
    "resolve_checkpoint", "verify", "warmup_cosine",
]
