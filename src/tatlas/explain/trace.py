"""What ``tatlas explain`` computes from the live code: the module tree with parameter counts, a
shape trace and the data-flow graph (:mod:`.flow`) of one forward pass on the system's sample
input, and each stage's parameters and forward FLOPs (``torch.utils.flop_counter``).

Presets up to :data:`CPU_LIMIT` parameters run on the CPU; bigger ones are built and run on the
meta device (shapes, no values: :mod:`.meta`), so ``tatlas explain llm --preset Mixtral-8x7B``
needs no memory for its weights."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..models.registry import System, get_system
from .flow import BoxFlops, Flow, Provenance, Recorder, canonical_names, tensors
from .meta import MetaValues, balanced_experts, with_shadow

CPU_LIMIT = 50_000_000  # parameters: above this a preset is traced on the meta device


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
class Stage:
    """One box or frame of the diagram: its parameters (all copies of a folded stack) and the FLOPs
    of all its calls in the traced forward."""

    id: str
    kind: str
    params: int
    flops: int
    repeat: int = 1  # blocks of a folded stack
    parent: str | None = None  # the frame around it


@dataclass
class Explanation:
    system: System
    preset: str
    params: int
    tree: ModuleNode
    trace: list[TraceRow]
    device: str
    flow: Flow | None = None
    stages: list[Stage] = field(default_factory=list)
    flops: int = 0  # the whole forward
    inputs: dict[str, tuple[int, ...]] = field(default_factory=dict)  # the sample input's shapes

    @property
    def top_stages(self) -> list[Stage]:
        return [s for s in self.stages if s.parent is None]


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
    return [tuple(t.shape) for t in tensors(x)]


def _inside_repeat(name: str) -> bool:
    """The second or later element of a stack (``layers.3``, ``layers.3.attn``): traced once via ``layers.0``."""
    parts = name.split(".")
    return any(p.isdigit() and p != "0" for p in parts)


def _to_meta(x: Any) -> Any:
    """The sample on the meta device, each tensor keeping its values as a shadow (:mod:`.meta`)."""
    if isinstance(x, Tensor):
        return with_shadow(x.to("meta"), x)
    if isinstance(x, dict):
        return {k: _to_meta(v) for k, v in x.items()}
    if hasattr(x, "__dataclass_fields__"):
        return type(x)(**{k: _to_meta(getattr(x, k)) for k in x.__dataclass_fields__})
    return x


def build(name: str, preset: str) -> tuple[System, nn.Module, str]:
    """The system, its model at ``preset`` in eval mode (random weights), and the device it is on."""
    system = get_system(name)
    config = system.preset(preset)
    with torch.device("meta"):
        probe = system.model_cls(config)
    device = "cpu" if count_parameters(probe) <= CPU_LIMIT else "meta"
    model = system.model_cls(config) if device == "cpu" else probe
    return system, model.eval().requires_grad_(False), device  # no gradients: none are needed


def _stages(model: nn.Module, flow: Flow, box_flops: dict[str, int]) -> list[Stage]:
    canon = canonical_names(model)
    params: dict[str, int] = {}
    for real, module in model.named_modules():
        c = canon.get(real)
        if real and c is not None:
            params[c] = params.get(c, 0) + sum(p.numel() for p in module.parameters(recurse=True))
    flops = dict(box_flops)
    for n in flow.nodes:  # a frame's FLOPs: its boxes'
        cluster = n.cluster
        while cluster is not None:
            flops[cluster] = flops.get(cluster, 0) + box_flops.get(n.id, 0)
            cluster = next(c.parent for c in flow.clusters if c.id == cluster)
    out = [Stage(c.id, c.kind, params.get(c.id, 0), flops.get(c.id, 0), c.repeat, c.parent) for c in flow.clusters]
    out += [Stage(n.id, n.kind, params.get(n.id, 0), flops.get(n.id, 0), 1, n.cluster)
            for n in flow.nodes if n.kind not in ("input", "output")]
    order = {n.id: n.order for n in flow.nodes}
    def first(s: Stage) -> int:
        return min((o for i, o in order.items() if i == s.id or i.startswith(s.id + ".")), default=0)

    return sorted(out, key=lambda s: (first(s), s.id.count(".")))


def explain(name: str, preset: str = "tiny", *, depth: int = 3, trace_depth: int = 3,
            diagram_depth: int = 2) -> Explanation:
    """Build ``name``/``preset`` (on the meta device unless it is small), then trace one forward:
    the module tree to ``depth`` levels, the shapes to ``trace_depth``, the data flow to
    ``diagram_depth`` (deeper where a highlighted part sits), and the FLOPs of every module."""
    for what, value in (("depth", depth), ("trace_depth", trace_depth), ("diagram_depth", diagram_depth)):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{what}: expected an integer >= 0, got {value!r}")
    system, model, device = build(name, preset)
    trace: list[TraceRow] = []
    hooks = []
    for mod_name, module in model.named_modules():
        level = 0 if not mod_name else mod_name.count(".") + 1
        if level > trace_depth or not mod_name or _inside_repeat(mod_name):
            continue

        def hook(m, args, out, _n=mod_name):
            trace.append(TraceRow(_n, type(m).__name__, _shapes(args), _shapes(out)))

        hooks.append(module.register_forward_hook(hook))
    recorder = Recorder(model, max(diagram_depth, 1), system.highlight)
    recorder.install()
    counter = BoxFlops(recorder)
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.no_grad())
            gen = torch.Generator().manual_seed(0)
            sample = system.sample_input(model, gen) if device == "cpu" else None
            if device == "meta":
                stack.enter_context(MetaValues())
                stack.enter_context(balanced_experts(model))
                with torch.device("cpu"):
                    sample = _cpu_sample(system, model, gen)
                sample = {k: _to_meta(v) for k, v in sample.items()}
            recorder.inputs(sample)
            stack.enter_context(counter)
            stack.enter_context(Provenance())
            out = model(**sample)
            flow = recorder.finish(out)
    finally:
        recorder.remove()
        for h in hooks:
            h.remove()
    trace.append(TraceRow("(model)", type(model).__name__, _shapes(list(sample.values())), _shapes(out)))
    return Explanation(system, preset, count_parameters(model), _tree(name, model, depth), trace, device, flow,
                       _stages(model, flow, recorder.flops), sum(recorder.flops.values()),
                       {k: tuple(v.shape) for k, v in sample.items() if isinstance(v, Tensor)})


def _cpu_sample(system: System, model: nn.Module, gen: torch.Generator) -> dict[str, Any]:
    """The sample input of a meta model, made on the CPU: ``sample_input`` moves what it makes to the
    model's device, so it is called with a meta model and its tensors are brought back."""
    sample = system.sample_input(model, gen)  # runs under MetaValues: every tensor keeps its CPU shadow
    from .meta import shadow

    def back(x):
        if isinstance(x, Tensor):
            s = shadow(x) if x.is_meta else x
            if s is None:
                raise ValueError(f"the sample input of {system.name!r} could not be made on the CPU")
            return s
        if isinstance(x, dict):
            return {k: back(v) for k, v in x.items()}
        if hasattr(x, "__dataclass_fields__"):
            return type(x)(**{k: back(getattr(x, k)) for k in x.__dataclass_fields__})
        return x

    return {k: back(v) for k, v in sample.items()}
