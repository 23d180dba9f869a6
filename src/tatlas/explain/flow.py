"""The data-flow graph of one forward pass, recorded from the live modules.

Which modules become boxes: the model is opened level by level down to ``depth``; a module is
opened when one of its children has children of its own (a block is opened into its attention and
MLP; an attention, whose children are only linear maps, stays one box). A stack of identical
blocks (an ``nn.ModuleList``) is folded: its first block is drawn once, inside a frame marked
``× L``, and every later block's modules count as the first block's.

Which arrows: every tensor carries the set of boxes it was computed from (a
:class:`~torch.overrides.TorchFunctionMode` merges the sets of an operation's inputs into its
outputs; a box's outputs are reset to that box). An arrow runs from each box in the set of a
box's inputs to that box, labelled with the input's shape. Arrows from a later box to an earlier
one (block ``i`` feeding block ``i + 1``, recycling) are the recurrence the ``× L`` frame stands for.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

_FROM = "_tatlas_from"


@dataclass
class Node:
    id: str  # the module's name (block 0's, inside a folded stack); "input:<name>", "output:<name>"
    kind: str  # the module's class, or "input" / "output"
    params: int = 0  # of one copy
    cluster: str | None = None  # the id of the innermost frame around it
    order: int = 0  # first call during the forward
    calls: int = 0  # calls of this module (of all folded copies) in one forward
    shape: tuple[int, ...] = ()  # the first output's shape
    highlight: bool = False


@dataclass
class Cluster:
    id: str  # the module's name (a block: "layers.0"; a stack with ``repeat``: its first block)
    kind: str
    repeat: int = 1  # blocks in a folded stack
    parent: str | None = None
    highlight: bool = False


@dataclass
class Edge:
    src: str
    dst: str
    shape: tuple[int, ...]


@dataclass
class Flow:
    """Boxes (:class:`Node`), frames (:class:`Cluster`) and arrows (:class:`Edge`), forward arrows
    only; ``loops`` counts the arrows dropped because they run backwards (the recurrence)."""

    nodes: list[Node]
    clusters: list[Cluster]
    edges: list[Edge]
    loops: int = 0

    def node(self, id: str) -> Node:
        return next(n for n in self.nodes if n.id == id)


def tensors(x: Any) -> list[Tensor]:
    """The tensors inside ``x`` (nested tuples, lists, dicts and dataclasses)."""
    if isinstance(x, Tensor):
        return [x]
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return [t for f in dataclasses.fields(x) for t in tensors(getattr(x, f.name))]
    if isinstance(x, dict):
        return [t for v in x.values() for t in tensors(v)]
    if isinstance(x, (tuple, list)):
        return [t for v in x for t in tensors(v)]
    return []


def _sources(ts: list[Tensor]) -> frozenset[str]:
    out: frozenset[str] = frozenset()
    for t in ts:
        out |= getattr(t, _FROM, frozenset())
    return out


class Provenance(TorchFunctionMode):
    """Every operation's tensor outputs carry the union of its tensor inputs' sources."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        srcs = _sources([x for x in tree_flatten((args, kwargs or {}))[0] if isinstance(x, Tensor)])
        if srcs:
            for t in tree_flatten(out)[0]:
                if isinstance(t, Tensor):
                    setattr(t, _FROM, getattr(t, _FROM, frozenset()) | srcs)
        return out


class BoxFlops(TorchDispatchMode):
    """Forward FLOPs (``torch.utils.flop_counter``'s formulas) of each operation, credited to the
    innermost box running it (a cross-attention block called from inside the LM's forward counts
    for the block, not twice); ``""``: outside every box."""

    def __init__(self, recorder: Recorder) -> None:
        super().__init__()
        self.recorder = recorder

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        count = flop_registry.get(func._overloadpacket)
        if count is not None:
            box = self.recorder.active[-1] if self.recorder.active else ""
            self.recorder.flops[box] = self.recorder.flops.get(box, 0) + int(count(*args, **kwargs, out_val=out))
        return out


def _atomic(m: nn.Module) -> bool:
    return next(m.children(), None) is None


def _folded(m: nn.Module) -> bool:
    kids = list(m.children())
    return isinstance(m, nn.ModuleList) and len(kids) > 1 and len({type(k) for k in kids}) == 1


def highlighted(name: str, module: nn.Module, highlight: tuple[str, ...]) -> bool:
    """``module`` is one of the system's distinctive parts: its class or its own name is listed."""
    return type(module).__name__ in highlight or name.rsplit(".", 1)[-1] in highlight


def layout_modules(model: nn.Module, depth: int, highlight: tuple[str, ...] = ()
                   ) -> tuple[dict[str, str], dict[str, str], dict[str, Cluster]]:
    """(module name -> the box it counts for, its canonical name: folded copies map to block 0),
    (box -> innermost frame), and the frames. Below ``depth`` a module is still opened when one of
    its children is highlighted."""

    def opens(m: nn.Module, level: int) -> bool:
        kids = list(m.named_children())
        return (level < depth and any(not _atomic(c) for _, c in kids)) or any(
            highlighted(k, c, highlight) or (isinstance(c, (nn.ModuleList, nn.ModuleDict)) and opens(c, level))
            for k, c in kids)

    boxes: dict[str, str] = {}  # real name -> canonical box name
    frame_of: dict[str, str] = {}  # canonical box -> frame
    clusters: dict[str, Cluster] = {}

    def visit(name: str, m: nn.Module, level: int, canon: str, frame: str | None) -> None:
        join = lambda a, b: f"{a}.{b}" if a else b
        if isinstance(m, (nn.ModuleList, nn.ModuleDict)):
            kids = list(m.named_children())
            if _folded(m):
                first = join(canon, kids[0][0])
                opened = opens(kids[0][1], level)
                if opened:
                    clusters[first] = Cluster(first, type(kids[0][1]).__name__, len(kids), frame)
                for k, child in kids:
                    visit_as(join(name, k), child, level, first, first if opened else frame, opened, len(kids))
                return
            for k, child in kids:
                visit(join(name, k), child, level, join(canon, k), frame)
            return
        opened = name == "" or opens(m, level)
        if not opened:
            _mark(m, name, canon)
            boxes[name] = canon
            frame_of[canon] = frame
            return
        inner = frame
        if name:
            clusters.setdefault(canon, Cluster(canon, type(m).__name__, 1, frame))
            inner = canon
        for k, child in m.named_children():
            visit(join(name, k), child, level + 1, join(canon, k), inner)

    def visit_as(name, m, level, canon, frame, opened, repeat):
        if not opened:  # a stack of unopened blocks: one box for all
            boxes[name] = canon
            frame_of[canon] = frame
            _mark(m, name, canon)
            return
        for k, child in m.named_children():
            visit(f"{name}.{k}", child, level + 1, f"{canon}.{k}", canon)

    def _mark(m, name, canon):
        for sub, _ in m.named_modules():
            if sub:
                boxes.setdefault(f"{name}.{sub}", "")  # inside a box: no box of its own

    visit("", model, 0, "", None)
    return boxes, frame_of, clusters


@dataclass
class Recorder:
    """Hooks that record the flow of one forward pass (install, run the forward, ``finish``)."""

    model: nn.Module
    depth: int
    highlight: tuple[str, ...] = ()
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: dict[tuple[str, str], tuple[int, ...]] = field(default_factory=dict)
    back: set[tuple[str, str]] = field(default_factory=set)
    flops: dict[str, int] = field(default_factory=dict)  # box -> FLOPs credited to it (:class:`BoxFlops`)
    active: list[str] = field(default_factory=list)  # the boxes running now, innermost last
    _hooks: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.boxes, self.frame_of, self.clusters = layout_modules(self.model, self.depth, self.highlight)
        modules = dict(self.model.named_modules())
        for c in self.clusters.values():
            c.highlight = highlighted(c.id, modules[c.id], self.highlight)

    def install(self) -> None:
        for name, module in self.model.named_modules():
            box = self.boxes.get(name)
            if box:
                self._hooks.append(module.register_forward_pre_hook(self._pre(box, module), with_kwargs=True))
                self._hooks.append(module.register_forward_hook(self._post(box), with_kwargs=True))

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    def _node(self, box: str, kind: str, params: int = 0) -> Node:
        if box not in self.nodes:
            self.nodes[box] = Node(box, kind, params, self.frame_of.get(box), order=len(self.nodes),
                                   highlight=kind in self.highlight or box.rsplit(".", 1)[-1] in self.highlight)
        return self.nodes[box]

    def _connect(self, ts: list[Tensor], dst: str) -> None:
        for t in ts:
            for src in getattr(t, _FROM, ()):
                if src == dst:
                    continue
                if self.nodes[src].order > self.nodes[dst].order:
                    self.back.add((src, dst))
                else:
                    self.edges.setdefault((src, dst), tuple(t.shape))

    def _pre(self, box: str, module: nn.Module):
        params = sum(p.numel() for p in module.parameters())

        def hook(m, args, kwargs):
            node = self._node(box, type(m).__name__, params)
            node.calls += 1
            self.active.append(box)
            self._connect(tensors((args, kwargs)), box)
        return hook

    def _post(self, box: str):
        def hook(m, args, kwargs, out):
            self.active.pop()
            outs = tensors(out)
            if outs and not self.nodes[box].shape:
                self.nodes[box].shape = tuple(outs[0].shape)
            for t in outs:
                setattr(t, _FROM, frozenset({box}))
        return hook

    def inputs(self, sample: dict[str, Any]) -> None:
        for key, value in sample.items():
            ts = tensors(value)
            if ts:
                node = self._node(f"input:{key}", "input")
                node.shape = tuple(ts[0].shape)
                for t in ts:
                    setattr(t, _FROM, frozenset({node.id}))

    def finish(self, out: Any) -> Flow:
        named = ({f.name: getattr(out, f.name) for f in dataclasses.fields(out)} if dataclasses.is_dataclass(out)
                 else out if isinstance(out, dict) else dict(enumerate(out)) if isinstance(out, (tuple, list))
                 else {"out": out})
        for key, value in named.items():
            ts = [t for t in tensors(value) if getattr(t, _FROM, None)]
            if ts:
                node = self._node(f"output:{key}", "output")
                node.shape = tuple(ts[0].shape)
                self._connect(ts, node.id)
        used = {c for n in self.nodes.values() for c in self._frames(n.cluster)}
        clusters = [c for c in self.clusters.values() if c.id in used]
        edges = [Edge(s, d, shape) for (s, d), shape in self.edges.items()]
        return Flow(sorted(self.nodes.values(), key=lambda n: n.order), clusters, edges, len(self.back))

    def _frames(self, cluster: str | None) -> list[str]:
        out = []
        while cluster is not None:
            out.append(cluster)
            cluster = self.clusters[cluster].parent
        return out


def canonical_names(model: nn.Module) -> dict[str, str]:
    """Every module's name -> its name with each folded stack's index replaced by 0 (``layers.5.attn``
    -> ``layers.0.attn``): the modules a folded frame stands for."""
    out = {"": ""}
    for name, module in model.named_modules(remove_duplicate=False):
        if _folded(module):
            for k, _ in module.named_children():
                prefix = f"{name}.{k}" if name else k
                first = f"{out[name]}.0" if out[name] else "0"
                out[prefix] = first
        for k, _ in module.named_children():
            child = f"{name}.{k}" if name else k
            out.setdefault(child, f"{out[name]}.{k}" if out[name] else k)
    return out
