"""The world as a torch ``Dataset``: scene ``i`` of a split as a dict of the chosen modalities, and
the collate function that batches them."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .config import (
    SPLITS,
    WorldConfig,
    combinations,
)

from .scene import Scene, make_scene


class WorldDataset(Dataset):
    """Procedural scenes of the world, generated on the fly.

    ``split``: ``"train"`` (no held-out pair anywhere), ``"test"`` (main object always a
    held-out pair, the others training pairs) or ``"all"`` (any pair). ``length`` scenes.

    Sample (a dict; only the modalities in ``config.modalities`` are present)::

        image    float32 [3, H, W] in [0, 1]
        depth    float32 [1, H, W] in [0, 1]
        thermal  float32 [1, H, W] in [0, 1]
        caption  str
        qa       list[tuple[str, str]]
        audio    float32 [sample_rate * audio_seconds]
        imu      float32 [6, imu_steps]
        objects  list[dict]   shape, colour, size, texture, x, y, radius, depth, row, col,
                              horizontal, vertical, rgb  (main object first)
        label    int          index of (main colour, main shape) in :func:`combinations`

    Batch with :func:`collate_scenes` (objects and qa vary in length per scene).
    """

    def __init__(
        self, split: str = "train", config: WorldConfig | None = None, seed: int = 0, length: int = 10_000
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
        if length < 1:
            raise ValueError(f"length: expected >= 1 scenes, got {length}")
        self.split = split
        self.config = config or WorldConfig()
        self.seed = seed
        self.length = length

    def __len__(self) -> int:
        return self.length

    def scene(self, index: int) -> Scene:
        if not -self.length <= index < self.length:
            raise IndexError(f"scene index: expected in [{-self.length}, {self.length}), got {index}")
        return make_scene(self.config, seed=self.seed, split=self.split, index=index % self.length)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.scene(index).render()

    @property
    def classes(self) -> list[tuple[str, str]]:
        """The (colour, shape) pair of each label."""
        return combinations(self.config)

    @property
    def class_names(self) -> list[str]:
        """``"red circle"`` etc., one per label (for zero-shot prompts)."""
        return [f"{c} {s}" for c, s in self.classes]


def collate_scenes(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors to ``[B, ...]``, ``label`` to a LongTensor ``[B]``; keep the rest as lists."""
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [b[key] for b in batch]
        if isinstance(values[0], Tensor):
            out[key] = torch.stack(values)
        elif key == "label":
            out[key] = torch.tensor(values, dtype=torch.long)
        else:
            out[key] = values
    return out
