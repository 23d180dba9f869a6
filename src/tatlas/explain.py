"""What ``tatlas explain`` shows, computed from the live code: the module tree with parameter
counts, and a shape trace of a real forward pass on the system's sample input."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .models.registry import System, get_system


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # shared (tied) parameters count once


@dataclass
class ModuleNode:
    name: str
    kind: str
    params: int
    extra: str
    children: list[ModuleNode] = field(default_factory=list)


@dataclass
class TraceRow:
    name: str
    kind: str
    inputs: list[tuple[int, ...]]
    output: list[tuple[int, ...]]


@dataclass
class Explanation:
    system: System
    preset: str
    params: int
    tree: ModuleNode
    trace: list[TraceRow]
    device: str


def _tree(name: str, module: nn.Module, depth: int) -> ModuleNode:
    node = ModuleNode(name, type(module).__name__, count_parameters(module), module.extra_repr())
    if depth > 0:
        children = list(module.named_children())
        # collapse runs of identical layers (a ModuleList of blocks) to the first one
        if isinstance(module, nn.ModuleList) and len(children) > 1:
            first = _tree("0", children[0][1], depth - 1)
            first.name = f"0..{len(children) - 1} (x{len(children)}, each)"
            node.children = [first]
        else:
            node.children = [_tree(n, m, depth - 1) for n, m in children]
    return node


def _shapes(x: Any) -> list[tuple[int, ...]]:
    if isinstance(x, Tensor):
        return [tuple(x.shape)]
    if isinstance(x, (tuple, list)):
        return [s for item in x for s in _shapes(item)]
    if isinstance(x, dict):
        return [s for item in x.values() for s in _shapes(item)]
    return []


def _inside_repeat(name: str) -> bool:
    """The second or later element of a stack (``layers.3``, ``layers.3.attn``): traced once via ``layers.0``."""
    parts = name.split(".")
    return any(p.isdigit() and p != "0" for p in parts)


def explain(name: str, preset: str = "tiny", *, depth: int = 3, trace_depth: int = 3) -> Explanation:
    """Build ``name``/``preset`` (on the meta device unless it is small), then trace one forward."""
    system = get_system(name)
    config = system.preset(preset)
    with torch.device("meta"):
        probe = system.model_cls(config)
    params = count_parameters(probe)
    device = "cpu" if params <= 50_000_000 else "meta"
    if device == "cpu":
        model = system.model_cls(config)
    else:
        model = probe
    model.eval()
    trace: list[TraceRow] = []
    hooks = []
    for mod_name, module in model.named_modules():
        level = 0 if not mod_name else mod_name.count(".") + 1
        if level > trace_depth or not mod_name or _inside_repeat(mod_name):
            continue

        def hook(m, args, out, _n=mod_name):
            trace.append(TraceRow(_n, type(m).__name__, _shapes(args), _shapes(out)))

        hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            gen = torch.Generator().manual_seed(0)
            sample = system.sample_input(model, gen)
            if device == "meta":
                sample = {k: v.to("meta") if isinstance(v, Tensor) else v for k, v in sample.items()}
            out = model(**sample)
    finally:
        for h in hooks:
            h.remove()
    trace.append(TraceRow("(model)", type(model).__name__, _shapes(list(sample.values())), _shapes(out)))
    return Explanation(system, preset, params, _tree(name, model, depth), trace, device)
