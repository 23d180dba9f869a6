"""Train a registered system on its embedded-data task: the one call behind ``tatlas train``."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..models.registry import get_system
from .config import TrainConfig
from .trainer import Trainer, TrainResult


def train_system(
    name: str, train_config: TrainConfig, *, preset: str | None = None, overrides: dict[str, Any] | None = None,
    resume: bool = False,
) -> TrainResult:
    """Build ``name``/``preset`` (with config ``overrides``), train it on the system's task, and
    return the result (final weights under ``out_dir/model.safetensors``). ``preset``: default the
    system's ``train_preset``."""
    import tatlas

    system = get_system(name)
    if system.train_task is None:
        raise ValueError(f"system {name!r} has no training task yet")
    import torch

    torch.manual_seed(train_config.seed)  # the same initial weights on every rank and in every run
    model = tatlas.create(name, preset or system.train_preset, **(overrides or {}))
    task = system.train_task(model.config, train_config.seed)
    trainer = Trainer(model, task.loss_fn, task.train_data, train_config, eval_fn=task.eval_fn,
                      collate_fn=task.collate_fn)
    return trainer.fit(resume=resume)


def parse_overrides(pairs: list[str], config_cls: type | None = None) -> dict[str, Any]:
    """``["dim=128", "tie_embeddings=true"]`` -> ``{"dim": 128, "tie_embeddings": True}`` (JSON values,
    else strings); with ``config_cls``, unknown field names are an error listing the valid ones."""
    import json

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"config override: expected KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    if config_cls is not None:
        fields = {f.name for f in dataclasses.fields(config_cls)}
        unknown = sorted(set(out) - fields)
        if unknown:
            raise ValueError(f"unknown config fields {unknown}; valid fields: {sorted(fields)}")
    return out
