"""Demos: one experiment per system, the paper's headline result in miniature on embedded data.

A demo module defines ``DEMO = Demo(system=..., run=...)``, where ``run`` is a function
``(DemoOptions) -> DemoResult`` (:mod:`.spec`); :data:`._builtin.BUILTIN` lists them."""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

from .spec import Demo, DemoFailure, DemoOptions, DemoResult

__all__ = ["Demo", "DemoFailure", "DemoOptions", "DemoResult", "demos", "register_demo", "run_demos", "write_report"]


_ADDED: dict[str, Demo] = {}


def register_demo(demo: Demo) -> Demo:
    """Add a demo of your own (a third-party system's ``DEMO`` record); one per system."""
    if demo.system in demos():
        raise ValueError(f"a demo for {demo.system!r} is registered twice")
    _ADDED[demo.system] = demo
    return demo


def demos() -> dict[str, Callable[[DemoOptions], DemoResult]]:
    """System name -> its demo's ``run``: the built-in ones (:data:`._builtin.BUILTIN`) and the added."""
    from ._builtin import BUILTIN  # imported on first use: each demo imports its system

    return {d.system: d.run for d in (*BUILTIN, *_ADDED.values())}


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
