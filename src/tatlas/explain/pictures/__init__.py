"""Pictures of what a system's model does, from a real forward pass on embedded data (or real
speech), with real weights where they ship (Whisper tiny.en) and otherwise a small model trained
for a few seconds on the system's own task; a caption says which.

``available(system) -> list[str]``, ``render(system, what, out_dir) -> list[Path]``: ``what`` is a
picture's name or ``"all"``. Each picture is a PNG and, beside it, a JSON of the numbers drawn."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

# system -> (module under this package, its picture names)
PICTURES: dict[str, tuple[str, tuple[str, ...]]] = {
    "clip": ("contrastive", ("similarity", "attention")),
    "imagebind": ("contrastive", ("similarity",)),
    "whisper": ("speech", ("alignment",)),
    "imagegpt": ("sequences", ("completions",)),
    "decision_transformer": ("sequences", ("attention",)),
    "llm": ("sequences", ("expert-load",)),
    "evoformer": ("proteins", ("contacts",)),
    "llava": ("vision_language", ("tiling", "answer-attention")),
    "internvl": ("vision_language", ("tiling", "answer-attention")),
    "flamingo": ("vision_language", ("gates",)),
}


def available(system: str) -> list[str]:
    """The picture names of ``system``."""
    from ...models.registry import get_system

    get_system(system)  # an unknown system is a one-line error naming the registered ones
    if system not in PICTURES:
        raise ValueError(f"system {system!r} has no pictures; systems with pictures: {', '.join(sorted(PICTURES))}")
    return list(PICTURES[system][1])


def resolve(system: str, names: list[str] | tuple[str, ...] | str) -> list[str]:
    """``names`` (``"all"`` among them stands for every picture) checked against ``available``."""
    names = [names] if isinstance(names, str) else list(names)
    known = available(system)
    out: list[str] = []
    for name in names:
        if name not in (*known, "all"):
            raise ValueError(f"picture of {system!r}: expected one of {', '.join(known)} or all, got {name!r}")
        out += known if name == "all" else [name]
    return list(dict.fromkeys(out))


def _function(system: str, name: str) -> Callable[[Path], list[Path]]:
    module = importlib.import_module(f"{__name__}.{PICTURES[system][0]}")
    return getattr(module, f"{system}_{name.replace('-', '_')}")


def render(system: str, what: str | list[str], out_dir: str | Path) -> list[Path]:
    """Write the pictures ``what`` of ``system`` into ``out_dir``; their paths (PNG, then JSON)."""
    out_dir = Path(out_dir)
    paths: list[Path] = []
    for name in resolve(system, what):
        out_dir.mkdir(parents=True, exist_ok=True)
        paths += _function(system, name)(out_dir)
    return paths
