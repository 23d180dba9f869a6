"""Demos: one experiment per system, the paper's headline result in miniature on embedded data.

A demo is a function ``(DemoOptions) -> DemoResult`` registered under its system's name."""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
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


@dataclass(frozen=True, kw_only=True)
class DemoFailure:
    """A demo that raised: its one-line error; the full traceback is ``<system>/error.txt``."""

    system: str
    error: str
    seconds: float = 0.0
    artifacts: dict[str, str] = field(default_factory=dict)

    beats_baseline = False


def _failure(name: str, error: BaseException, seconds: float, folder: Path) -> DemoFailure:
    (folder / "error.txt").write_text("".join(traceback.format_exception(error)))
    message = " ".join(str(error).split())
    return DemoFailure(system=name, error=f"{type(error).__name__}: {message}" if message else type(error).__name__,
                       seconds=seconds, artifacts={"traceback": "error.txt"})


def write_report(out_dir: Path, results: list[DemoResult | DemoFailure]) -> None:
    """``results.json`` and ``README.md`` (the results table) in ``out_dir``, replaced atomically."""
    rows = [asdict(r) | ({"failed": True} if isinstance(r, DemoFailure) else {"beats_baseline": r.beats_baseline})
            for r in results]
    lines = ["| system | result | baseline | time |", "|---|---|---|---|"]
    for r in results:
        if isinstance(r, DemoFailure):
            lines.append(f"| {r.system} | failed: {r.error} | — | {r.seconds:.0f} s |")
        else:
            mark = "" if r.beats_baseline else " (misses its baseline)"
            lines.append(f"| {r.system} | {r.metric} = {r.value:.4g}{mark} | {r.baseline} = {r.baseline_value:.4g} "
                         f"| {r.seconds:.0f} s |")
    for name, text in (("results.json", json.dumps(rows, indent=2)),
                       ("README.md", "# tatlas demo results\n\n" + "\n".join(lines) + "\n")):
        tmp = out_dir / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out_dir / name)


def run_demos(names: list[str], out_dir: Path, *, seed: int = 0, quick: bool = False, progress: bool = True,
              on_result: Callable[[DemoResult | DemoFailure], None] | None = None) -> list[DemoResult | DemoFailure]:
    """Run the named demos (all registered ones if ``names`` is empty), each in its own subfolder of
    ``out_dir``. A demo that raises becomes a :class:`DemoFailure` and the others still run; the
    report (:func:`write_report`) is rewritten after each demo, so an interrupted run keeps what
    finished. ``on_result`` sees each result as it comes."""
    registered = demos()
    if not registered:
        raise LookupError("no demos are registered yet")
    unknown = [n for n in names if n not in registered]
    if unknown:
        raise ValueError(f"no demo for {unknown}; registered demos: {', '.join(sorted(registered))}")
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[DemoResult | DemoFailure] = []
    for name in names or sorted(registered):
        start = time.perf_counter()
        sub = out_dir / name
        sub.mkdir(exist_ok=True)
        try:
            result = registered[name](DemoOptions(out_dir=sub, seed=seed, quick=quick, progress=progress))
            result = replace(result, seconds=time.perf_counter() - start)
        except Exception as e:  # noqa: BLE001  (one failing demo never loses the others)
            result = _failure(name, e, time.perf_counter() - start, sub)
        results.append(result)
        write_report(out_dir, results)
        if on_result is not None:
            on_result(result)
    return results
