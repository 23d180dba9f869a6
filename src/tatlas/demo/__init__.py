"""Demos: one experiment per system, the paper's headline result in miniature on embedded data.

A demo is a function ``(DemoOptions) -> DemoResult`` registered under its system's name."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class DemoOptions:
    out_dir: Path
    seed: int = 0
    quick: bool = False  # a shorter run (tests, smoke checks)
    progress: bool = True


@dataclass(frozen=True, kw_only=True)
class DemoResult:
    system: str
    claim: str  # the phenomenon, in one line
    metric: str
    value: float
    baseline: str
    baseline_value: float
    higher_is_better: bool = True
    seconds: float = 0.0
    artifacts: dict[str, str] = field(default_factory=dict)  # name -> path inside the report folder
    details: dict[str, float] = field(default_factory=dict)

    @property
    def beats_baseline(self) -> bool:
        return self.value > self.baseline_value if self.higher_is_better else self.value < self.baseline_value


Demo = Callable[[DemoOptions], DemoResult]
_DEMOS: dict[str, Demo] = {}


def register_demo(system: str) -> Callable[[Demo], Demo]:
    def wrap(fn: Demo) -> Demo:
        _DEMOS[system] = fn
        return fn

    return wrap


def demos() -> dict[str, Demo]:
    from . import _builtin  # noqa: F401  (registers the built-in demos once)

    return dict(_DEMOS)


def run_demos(names: list[str], out_dir: Path, *, seed: int = 0, quick: bool = False,
              progress: bool = True) -> list[DemoResult]:
    """Run the named demos (all registered ones if ``names`` is empty) and write a report folder:
    ``results.json`` and ``README.md`` (a results table) plus each demo's artifacts."""
    registered = demos()
    if not registered:
        raise LookupError("no demos are registered yet")
    unknown = [n for n in names if n not in registered]
    if unknown:
        raise ValueError(f"no demo for {unknown}; registered demos: {', '.join(sorted(registered))}")
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for name in names or sorted(registered):
        start = time.perf_counter()
        sub = out_dir / name
        sub.mkdir(exist_ok=True)
        result = registered[name](DemoOptions(out_dir=sub, seed=seed, quick=quick, progress=progress))
        results.append(DemoResult(**{**asdict(result), "seconds": time.perf_counter() - start}))
    (out_dir / "results.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    lines = ["| system | result | baseline | time |", "|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.system} | {r.metric} = {r.value:.4g} | {r.baseline} = {r.baseline_value:.4g} | {r.seconds:.0f} s |")
    (out_dir / "README.md").write_text("# tatlas demo results\n\n" + "\n".join(lines) + "\n")
    return results
