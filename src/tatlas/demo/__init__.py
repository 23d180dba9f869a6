"""Demos: one experiment per system, the paper's headline result in miniature on embedded data.

A demo module defines ``DEMO = Demo(system=..., run=...)``, where ``run`` is a function
``(DemoOptions) -> DemoResult`` (:mod:`.spec`); :data:`._builtin.BUILTIN` lists them."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

from ..nn.threads import environment_threads
from .processes import failure, picklable, plan, run_parallel
from .spec import Demo, DemoFailure, DemoOptions, DemoResult

__all__ = ["Demo", "DemoFailure", "DemoOptions", "DemoResult", "demos", "register_demo", "run_demos", "write_report"]


_ADDED: dict[str, Demo] = {}


def register_demo(demo: Demo) -> Demo:
    """Add a demo of your own (a third-party system's ``DEMO`` record); one per system."""
    if demo.system in demos():
        raise ValueError(f"a demo for {demo.system!r} is registered twice")
    _ADDED[demo.system] = demo
    return demo


def _records() -> dict[str, Demo]:
    from ._builtin import BUILTIN  # imported on first use: each demo imports its system

    return {d.system: d for d in (*BUILTIN, *_ADDED.values())}


def demos() -> dict[str, Callable[[DemoOptions], DemoResult]]:
    """System name -> its demo's ``run``: the built-in ones (:data:`._builtin.BUILTIN`) and the added."""
    return {name: d.run for name, d in _records().items()}


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
              on_result: Callable[[DemoResult | DemoFailure], None] | None = None, jobs: int | None = None,
              on_plan: Callable[[int, int], None] | None = None) -> list[DemoResult | DemoFailure]:
    """Run the named demos (all registered ones if ``names`` is empty), each in its own subfolder of
    ``out_dir``. A demo that raises becomes a :class:`DemoFailure` and the others still run; the
    report (:func:`write_report`, rows in the order asked) is rewritten after each demo, so an
    interrupted run keeps what finished. ``on_result`` sees each result as it comes.

    Several demos run side by side in ``jobs`` processes (default: one per core, see
    :func:`.processes.plan`), longest first, each with its share of the threads and its output in
    ``<system>/log.txt``; ``on_plan(processes, threads)`` is told the split first. One process (or
    one demo) runs in this process, as does a demo whose ``run`` cannot be pickled."""
    registered = demos()
    if not registered:
        raise LookupError("no demos are registered yet")
    unknown = [n for n in names if n not in registered]
    if unknown:
        raise ValueError(f"no demo for {unknown}; registered demos: {', '.join(sorted(registered))}")
    if jobs is not None and jobs < 1:
        raise ValueError(f"jobs: expected at least 1 process, got {jobs}")
    out_dir.mkdir(parents=True, exist_ok=True)
    order = list(dict.fromkeys(names)) or sorted(registered)
    options = {}
    for name in order:
        (out_dir / name).mkdir(exist_ok=True)
        options[name] = DemoOptions(out_dir=out_dir / name, seed=seed, quick=quick, progress=progress)
    finished: dict[str, DemoResult | DemoFailure] = {}

    def done(name: str, result: DemoResult | DemoFailure) -> None:
        finished[name] = result
        write_report(out_dir, [finished[n] for n in order if n in finished])
        if on_result is not None:
            on_result(result)

    apart = [n for n in order if picklable(registered[n])]
    count, threads = plan(len(apart), jobs=jobs, threads=environment_threads())
    apart = apart if count > 1 else []
    if on_plan is not None:
        on_plan(count if apart else 1, threads if apart else _torch_threads())
    records = _records()
    apart.sort(key=lambda n: -getattr(records.get(n), "expected_seconds", 60.0))  # longest first: short ones last
    if apart:
        run_parallel([(n, registered[n], options[n]) for n in apart], count, threads, done)
    for name in order:
        if name in apart:
            continue
        start = time.perf_counter()
        try:
            result = registered[name](options[name])
            result = replace(result, seconds=time.perf_counter() - start)
        except Exception as e:  # noqa: BLE001  (one failing demo never loses the others)
            result = failure(name, e, time.perf_counter() - start, options[name].out_dir)
        done(name, result)
    return [finished[n] for n in order]


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()
