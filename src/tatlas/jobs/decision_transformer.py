"""The Decision Transformer's jobs, behind ``tatlas dt collect|train|evaluate``: collect offline
episodes of a gymnasium environment with policies of mixed quality, train on them, and roll a
model out asked for target returns (Chen et al. 2021, §4-5)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data.offline_rl import OfflineDataset, collect, dataset_layout, load_dataset, save_dataset
from ..io import check_fields
from ..models.decision_transformer.act import ActOptions
from ..models.decision_transformer.rollout import RolloutResult, evaluate_targets
from ..models.decision_transformer.task import config_for, dataset_task
from ..train import TrainConfig, Trainer, TrainResult



def collect_dataset(env_id: str, out: str | Path, *, episodes: int = 200,
                    mix: str = "random=1,scripted=1,expert=1,noisy=3", seed: int = 0,
                    dataset_id: str | None = None) -> tuple[Path, OfflineDataset]:
    """Roll mixed-quality episodes of ``env_id`` and save them: a Minari dataset folder (named
    ``NAME-v<VERSION>``) or an ``.npz`` of Minari's per-episode fields (see :func:`dataset_layout`)."""
    out = Path(out)
    dataset_layout(out, dataset_id)  # a bad name fails before any episode is rolled out
    data = collect(env_id, episodes=episodes, mix=mix, seed=seed)
    return save_dataset(data, out, dataset_id=dataset_id), data


@dataclass(frozen=True, kw_only=True)
class DTTrainOptions:
    """How ``tatlas dt train`` trains: the base ``preset`` (its state/action sizes come from the
    data), config ``overrides`` (e.g. ``context``), and the run options of :class:`TrainConfig`
    (the paper's Table 8: AdamW, lr 1e-4, weight decay 1e-4, clip 0.25, batch 64, for its larger runs)."""

    preset: str = "tiny"
    overrides: dict[str, Any] = field(default_factory=dict)
    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int | None = None
    grad_clip: float = 0.25
    seed: int = 0
    eval_episodes: int = 5
    checkpoint_every: int | None = None
    progress: bool = True


def train_on_dataset(dataset: str | Path | OfflineDataset, out_dir: str | Path,
                     options: DTTrainOptions | None = None, *, resume: bool = False) -> TrainResult:
    """Train a Decision Transformer on an offline dataset (a file :func:`load_dataset` reads, or one
    in memory); the final weights go to ``out_dir/model.safetensors``."""
    import tatlas
    from ..models import get_system

    o = options or DTTrainOptions()
    data = dataset if isinstance(dataset, OfflineDataset) else load_dataset(dataset)
    base = get_system("decision_transformer").preset(o.preset)
    check_fields(type(base), o.overrides)
    try:
        base = dataclasses.replace(base, **o.overrides)
    except TypeError as e:
        raise ValueError(f"bad config override: {e}") from None
    config = config_for(data, base)
    torch.manual_seed(o.seed)
    model = tatlas.create("decision_transformer", o.preset,
                          **{f.name: getattr(config, f.name) for f in dataclasses.fields(config)})
    task = dataset_task(data, config, eval_episodes=o.eval_episodes, seed=o.seed)
    warmup = o.warmup_steps if o.warmup_steps is not None else o.steps // 10
    cfg = TrainConfig(steps=o.steps, batch_size=o.batch_size, lr=o.lr, weight_decay=o.weight_decay,
                      warmup_steps=min(warmup, o.steps), grad_clip=o.grad_clip, seed=o.seed, out_dir=out_dir,
                      checkpoint_every=o.checkpoint_every, log_every=max(1, min(50, o.steps // 10)),
                      progress=o.progress)
    return Trainer(model, task.loss_fn, task.train_data, cfg, eval_fn=task.eval_fn).fit(resume=resume)


def evaluate_checkpoint(checkpoint: str | Path | torch.nn.Module, env_id: str, targets: list[float], *,
                        episodes: int = 10, seed: int = 0, cached: bool = True, sample: bool = True,
                        context: int | None = None) -> list[RolloutResult]:
    """Roll a Decision Transformer (a tatlas checkpoint, a Hugging Face folder, or a model) out in
    ``env_id`` asked for each of ``targets``. ``context``: act from this many timesteps instead
    of the model's own K (Hugging Face configs do not record the K they were trained with)."""
    import tatlas

    if not targets:
        raise ValueError("targets: expected at least one target return")
    bad = [t for t in targets if not math.isfinite(t)]
    if bad:
        raise ValueError(f"targets: expected finite target returns, got {', '.join(map(str, bad))}")
    options = ActOptions(cached=cached, context=context, sample=sample, seed=seed)
    model = checkpoint if isinstance(checkpoint, torch.nn.Module) else tatlas.load(checkpoint, system="decision_transformer", fast=True)
    return evaluate_targets(model.eval(), env_id, list(targets), episodes=episodes, seed=seed, options=options)


def plot_returns(results: list[RolloutResult], path: str | Path, *, data_mean: float | None = None,
                 data_best: float | None = None, title: str = "") -> Path:
    """Achieved vs target return (mean ± std over episodes), with the data's average and best (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    targets = [r.target for r in results]
    ax.errorbar(targets, [r.mean for r in results], yerr=[r.std for r in results], marker="o", capsize=3,
                label="Decision Transformer")
    lo, hi = min(targets), max(targets)
    ax.plot([lo, hi], [lo, hi], ls=":", color="grey", label="achieved = target")
    if data_mean is not None:
        ax.axhline(data_mean, color="tab:orange", ls="--", label=f"data average ({data_mean:.0f})")
    if data_best is not None:
        ax.axhline(data_best, color="tab:green", ls="--", label=f"data best ({data_best:.0f})")
    ax.set_xlabel("target return")
    ax.set_ylabel("achieved return")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path
