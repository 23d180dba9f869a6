"""Pure checkpoint conversion: a declarative key map plus named transforms.

A :class:`KeyMap` is a list of rules over key patterns with placeholders (``{i}``, ``{j}`` match
integers; ``{path}`` matches any rest of a key). :class:`Rename` maps one tensor to one (optionally through a named :class:`Transform`);
:class:`Fuse` concatenates several source tensors into one (fused q/k/v); its inverse splits.
Conversion is strict: a source key no rule covers (and no ``ignore`` pattern drops) is an error that
names it. ``KeyMap.inverted()`` gives the map back to the source format.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .checkpoint import CheckpointError


@dataclass(frozen=True)
class Transform:
    """A named tensor transform and its inverse."""

    name: str
    forward: Callable[[Tensor], Tensor]
    inverse: Callable[[Tensor], Tensor]

    def inverted(self) -> Transform:
        return Transform(f"inverse({self.name})", self.inverse, self.forward)


IDENTITY = Transform("identity", lambda t: t, lambda t: t)
TRANSPOSE = Transform("transpose", lambda t: t.t().contiguous(), lambda t: t.t().contiguous())


def interleaved_to_half(heads: int) -> Transform:
    """Rows of a q/k projection from the interleaved rotary layout (pairs ``2i, 2i+1``) to the
    half-split one (pairs ``i, i + D/2``), per head; the inverse goes back."""

    def fwd(t: Tensor) -> Tensor:
        d = t.shape[0] // heads
        return t.reshape(heads, d // 2, 2, *t.shape[1:]).transpose(1, 2).reshape(t.shape)

    def inv(t: Tensor) -> Tensor:
        d = t.shape[0] // heads
        return t.reshape(heads, 2, d // 2, *t.shape[1:]).transpose(1, 2).reshape(t.shape)

    return Transform(f"interleaved_to_half(heads={heads})", fwd, inv)


def _compile(pattern: str) -> re.Pattern:
    """``{i}``-style placeholders match integers; ``{path}`` matches any rest of a key."""
    parts = re.split(r"(\{\w+\})", pattern)
    rx = "".join(
        (f"(?P<{p[1:-1]}>.+)" if p == "{path}" else f"(?P<{p[1:-1]}>\\d+)")
        if p.startswith("{") and p.endswith("}") else re.escape(p)
        for p in parts
    )
    return re.compile(rx + r"\Z")


@dataclass(frozen=True)
class Rename:
    src: str
    dst: str
    transform: Transform = IDENTITY

    def inverted(self) -> Rename:
        return Rename(self.dst, self.src, self.transform.inverted())


@dataclass(frozen=True)
class Fuse:
    """Concatenate ``srcs`` along ``dim`` into ``dst`` (inverse: split by the sizes seen)."""

    srcs: tuple[str, ...]
    dst: str
    dim: int = 0
    sizes: tuple[int, ...] | None = None  # needed to split (inverse direction) when parts differ

    def inverted(self) -> Split:
        return Split(self.dst, self.srcs, self.dim, self.sizes)


@dataclass(frozen=True)
class Split:
    """Split ``src`` along ``dim`` into ``dsts`` (equal parts unless ``sizes`` given)."""

    src: str
    dsts: tuple[str, ...]
    dim: int = 0
    sizes: tuple[int, ...] | None = None

    def inverted(self) -> Fuse:
        return Fuse(self.dsts, self.src, self.dim, self.sizes)


@dataclass(frozen=True)
class Stack:
    """Per-expert tensors -> one stacked tensor: each pattern in ``srcs`` (with an ``{index}``
    placeholder, e.g. ``experts.{j}.w1.weight``) is stacked over ``index`` in increasing order into
    ``[E, ...]``; several sources are then concatenated along ``cat_dim`` (fused gate/up).
    Inverse: :class:`Unstack`."""

    srcs: tuple[str, ...]
    dst: str
    cat_dim: int = 1
    index: str = "j"

    def inverted(self) -> Unstack:
        return Unstack(self.dst, self.srcs, self.cat_dim, self.index)


@dataclass(frozen=True)
class Unstack:
    """A stacked ``[E, ...]`` tensor -> per-expert tensors (split along ``cat_dim`` first into ``dsts``)."""

    src: str
    dsts: tuple[str, ...]
    cat_dim: int = 1
    index: str = "j"

    def inverted(self) -> Stack:
        return Stack(self.dsts, self.src, self.cat_dim, self.index)


Rule = Rename | Fuse | Split | Stack | Unstack


@dataclass(frozen=True)
class KeyMap:
    rules: tuple[Rule, ...]
    ignore: tuple[str, ...] = field(default=())  # source key patterns to drop (e.g. non-persistent buffers)

    def inverted(self, *, ignore: tuple[str, ...] = ()) -> KeyMap:
        return KeyMap(tuple(r.inverted() for r in self.rules), ignore)

    def convert(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Source tensors -> target tensors; every source key must be covered by a rule or ``ignore``."""
        remaining = dict(state)
        out: dict[str, Tensor] = {}
        for pat in self.ignore:
            rx = _compile(pat)
            for k in [k for k in remaining if rx.match(k)]:
                del remaining[k]
        for rule in self.rules:
            if isinstance(rule, Rename):
                rx = _compile(rule.src)
                for k in [k for k in remaining if rx.match(k)]:
                    out[rule.dst.format(**rx.match(k).groupdict())] = rule.transform.forward(remaining.pop(k))
            elif isinstance(rule, Fuse):
                rx = _compile(rule.srcs[0])
                for k in [k for k in remaining if rx.match(k)]:
                    b = rx.match(k).groupdict()
                    names = [s.format(**b) for s in rule.srcs]
                    absent = [n for n in names if n not in remaining]
                    if absent:
                        raise CheckpointError(f"cannot fuse into {rule.dst.format(**b)}: missing {absent}")
                    out[rule.dst.format(**b)] = torch.cat([remaining.pop(n) for n in names], dim=rule.dim)
            elif isinstance(rule, Split):
                rx = _compile(rule.src)
                for k in [k for k in remaining if rx.match(k)]:
                    b = rx.match(k).groupdict()
                    t = remaining.pop(k)
                    sizes = list(rule.sizes) if rule.sizes else t.shape[rule.dim] // len(rule.dsts)
                    for name, part in zip(rule.dsts, torch.split(t, sizes, dim=rule.dim), strict=True):
                        out[name.format(**b)] = part.contiguous()
            elif isinstance(rule, Stack):
                rx = _compile(rule.srcs[0])
                groups: dict[tuple, list[int]] = {}
                for k in remaining:
                    m = rx.match(k)
                    if m:
                        b = m.groupdict()
                        j = int(b.pop(rule.index))
                        groups.setdefault(tuple(sorted(b.items())), []).append(j)
                for key, js in groups.items():
                    b = dict(key)
                    js = sorted(js)
                    if js != list(range(len(js))):
                        raise CheckpointError(f"cannot stack into {rule.dst.format(**b)}: expert indices {js}")
                    parts = []
                    for pattern in rule.srcs:
                        names = [pattern.format(**b, **{rule.index: j}) for j in js]
                        absent = [n for n in names if n not in remaining]
                        if absent:
                            raise CheckpointError(f"cannot stack into {rule.dst.format(**b)}: missing {absent[:3]}")
                        parts.append(torch.stack([remaining.pop(n) for n in names]))
                    out[rule.dst.format(**b)] = parts[0] if len(parts) == 1 else torch.cat(parts, dim=rule.cat_dim)
            else:
                rx = _compile(rule.src)
                for k in [k for k in remaining if rx.match(k)]:
                    b = rx.match(k).groupdict()
                    t = remaining.pop(k)
                    for name, part in zip(rule.dsts, t.chunk(len(rule.dsts), dim=rule.cat_dim), strict=True):
                        for j in range(part.shape[0]):
                            out[name.format(**b, **{rule.index: j})] = part[j].contiguous()
        if remaining:
            raise CheckpointError(f"no conversion rule for {len(remaining)} tensors: {', '.join(sorted(remaining))}")
        return out
