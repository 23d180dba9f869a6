"""What the pictures share: a small model trained for a few seconds on its system's own task
(cached for the process), and the figure helpers (titles, captions, colour bars, a JSON beside)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn


@functools.cache
def trained(system: str, preset: str, steps: int, batch: int, lr: float = 2e-3, seed: int = 0) -> nn.Module:
    """``system`` at ``preset`` after ``steps`` AdamW steps of its own training task (the one
    ``tatlas train`` runs), in eval mode. Cached: several pictures share one run."""
    from ...models.registry import get_system
    from ...train import TrainConfig, Trainer

    s = get_system(system)
    config = s.preset(preset)
    torch.manual_seed(seed)
    model = s.model_cls(config)
    task = s.train_task(config, seed)
    cfg = TrainConfig(steps=steps, batch_size=batch, lr=lr, warmup_steps=max(1, steps // 10), seed=seed,
                      log_every=steps, progress=False)
    with torch.enable_grad():  # the pictures call this under no_grad
        Trainer(model, task.loss_fn, task.train_data, cfg, collate_fn=task.collate_fn).fit()
    return model.eval()


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, out_dir: Path, name: str, caption: str, numbers: dict[str, Any]) -> list[Path]:
    """``name.png`` with ``caption`` under it, and ``name.json``: the caption and the numbers drawn."""
    plt = pyplot()
    fig.text(0.01, 0.005, caption, fontsize=7.5, va="bottom", ha="left", wrap=True, color="#333333")
    png, js = out_dir / f"{name}.png", out_dir / f"{name}.json"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    js.write_text(json.dumps({"caption": caption, **numbers}, indent=1, default=_plain))
    return [png, js]


def _plain(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if hasattr(x, "tolist"):
        return x.tolist()
    raise TypeError(f"not JSON: {type(x).__name__}")


def heatmap(ax, matrix, *, title: str, xlabel: str, ylabel: str, cmap: str = "viridis", colorbar: str = "",
            xticks: list[str] | None = None, yticks: list[str] | None = None, annotate: bool = False, **kw):
    """``matrix [R, C]`` as an image with a labelled colour bar."""
    import numpy as np

    m = np.asarray(matrix, dtype=float)
    im = ax.imshow(m, cmap=cmap, aspect="auto", interpolation="nearest", **kw)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if xticks is not None:
        ax.set_xticks(range(len(xticks)), xticks, rotation=60, ha="right", fontsize=7)
    if yticks is not None:
        ax.set_yticks(range(len(yticks)), yticks, fontsize=7)
    if annotate:
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if m[i, j] < m.mean() else "black")
    bar = ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    bar.set_label(colorbar, fontsize=8)
    return im
