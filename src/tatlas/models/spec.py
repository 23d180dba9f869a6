"""The records that describe a system, as plain data: :class:`System` (config and model classes,
exact-name presets, a sample input, converters from foreign formats, its training task, its fast
variants and its batch-invariance views) and :class:`TrainTask`. Each system's ``system.py`` defines
one ``SYSTEM = System(...)``; :mod:`.registry` lists them. This module imports nothing of tatlas."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

# A converter reads a foreign checkpoint (file or folder) -> (our config, our state dict).
Converter = Callable[[Path], tuple[Any, dict[str, torch.Tensor]]]
# the floating-point outputs of a batched forward -> the parts a smaller forward must reproduce
BatchSelect = Callable[[list[torch.Tensor]], list[torch.Tensor]]


@dataclass(frozen=True, kw_only=True)
class TrainTask:
    """What training a system means: its data, its loss (computed outside the model), an optional
    evaluation, and how samples are batched."""

    train_data: Dataset
    loss_fn: Callable[[nn.Module, Any], torch.Tensor | dict[str, torch.Tensor]]
    eval_fn: Callable[[nn.Module], dict[str, float]] | None = None
    collate_fn: Callable[[list], Any] | None = None


@dataclass(frozen=True, kw_only=True)
class System:
    name: str
    summary: str
    config_cls: type
    model_cls: type[nn.Module]
    presets: Mapping[str, Any]
    # (model, generator) -> keyword arguments of one forward call on a small sample
    sample_input: Callable[[nn.Module, torch.Generator], dict[str, Any]]
    hf_model_types: Mapping[str, Converter] = field(default_factory=dict)  # config.json model_type -> converter
    formats: Mapping[str, Converter] = field(default_factory=dict)  # named foreign formats
    ct2_specs: Mapping[str, Converter] = field(default_factory=dict)  # CTranslate2 model.bin spec name -> converter
    diagram: str = ""  # shown by `tatlas explain`
    # what `tatlas explain` (and the documentation site) says beside the drawn diagram
    idea: str = ""  # the idea that makes it work, one short paragraph
    paper: str = ""  # the reference: authors, year, title, venue or arXiv id
    question: str = ""  # what a reader should be able to answer afterwards
    highlight: tuple[str, ...] = ()  # module classes drawn highlighted: the system's distinctive parts
    # (config, seed) -> the system's training task on embedded data
    train_task: Callable[[Any, int], TrainTask] | None = None
    train_preset: str = "tiny"  # what `tatlas train SYSTEM` builds unless told otherwise
    # model class -> its inference twin, swapped in by tatlas.optimize (beside tatlas.nn.fastpath's own)
    fast_variants: Mapping[type, type] = field(default_factory=dict)
    # sample -> [(part of the sample, the outputs' parts that the part's outputs must equal)]: the
    # batch-invariance contract; None: each row of every tensor input gives that row of every output
    batch_views: Callable[[dict[str, Any]], list[tuple[dict[str, Any], BatchSelect]]] | None = None

    def preset(self, name: str) -> Any:
        try:
            return self.presets[name]
        except KeyError:
            raise ValueError(
                f"unknown preset {name!r} for system {self.name!r}; valid presets: {', '.join(self.presets)}"
            ) from None
