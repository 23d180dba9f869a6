"""The documentation site, a static folder of HTML built from the live code (``tatlas docs --out site/``).

:func:`build_site` ``(SiteOptions) -> SiteReport`` writes ``index.html`` (the systems table),
``systems/<name>.html`` (diagram, stages, idea and paper, question, pictures, parity, real
checkpoints, executed examples), ``architecture.html`` (``docs/architecture.md``), ``results.html``
(``benchmarks/RESULTS.md``), ``api.html`` (from the docstrings) and ``style.css``. Nothing links
outside the folder. The figures come from where they are recorded (:mod:`.figures`); the examples
run during the build (:mod:`.examples`). It reads the source checkout the package sits in (or
``root``): its ``benchmarks/``, ``docs/`` and ``tests/``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..draw import render as render_diagram
from ..trace import explain
from . import apiref, pages
from .examples import CommandRunner, explain_command, python_example
from .figures import parity, recorded, weights
from .html import STYLE, page

__all__ = ["SiteOptions", "SiteReport", "build_site", "default_root", "page_preset"]

NAV = [("Systems", "index.html#systems"), ("Architecture", "architecture.html"), ("API", "api.html"),
       ("Benchmarks", "results.html")]


@dataclass(frozen=True, kw_only=True)
class SiteOptions:
    out: Path
    systems: tuple[str, ...] = ()  # () = every registered system
    pictures: tuple[str, ...] | None = None  # systems whose pictures are rendered; None = all, () = none
    root: Path | None = None  # the source checkout; None = the one this package sits in


@dataclass
class SiteReport:
    out: Path
    pages: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # step -> seconds


def default_root() -> Path:
    return Path(__file__).resolve().parents[4]


def _check_root(root: Path) -> None:
    for part in ("benchmarks/RESULTS.md", "docs/architecture.md", "tests", "README.md"):
        if not (root / part).exists():
            raise FileNotFoundError(f"{root / part} is missing: tatlas docs reads a source checkout (give --root)")


def page_preset(system) -> str:
    """The preset a system's page draws and runs: ``tiny`` when it is small (under 5M parameters,
    counted on the meta device), else the smallest ``tiny*`` preset, else the training preset."""
    import torch

    from ..trace import count_parameters

    def size(name: str) -> int:
        with torch.device("meta"):
            return count_parameters(system.model_cls(system.presets[name]))

    if "tiny" in system.presets and size("tiny") < 5_000_000:
        return "tiny"
    tiny = [p for p in system.presets if p.startswith("tiny")]
    return min(tiny, key=size) if tiny else system.train_preset


def _lead(readme: str) -> str:
    paras = [p for p in readme.split("\n\n") if p.strip() and not p.startswith("#")]
    return " ".join(paras[0].split())


def build_site(options: SiteOptions, progress: Callable[[str], None] = lambda _: None) -> SiteReport:
    """Build the site into ``options.out``; a failing example or a figure missing from its record
    raises with one line naming it."""
    from ...models.registry import get_system, systems
    from .. import pictures as pics

    start = time.perf_counter()
    root = (options.root or default_root()).resolve()
    _check_root(root)
    names = list(options.systems) or list(systems())
    chosen = [get_system(n) for n in names]  # unknown names fail before any work
    wanted = set(pics.PICTURES) if options.pictures is None else set(options.pictures)
    for n in wanted:
        get_system(n)
    record = recorded(root / "benchmarks" / "RESULTS.md")
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    report = SiteReport(out)

    def write(rel: str, title: str, body: str, depth: int) -> None:
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        footer = (f"Built by <code>tatlas docs</code> from the live code in {time.perf_counter() - start:.0f} s; "
                  f"figures from the repository's records.")
        path.write_text(page(title, body, depth=depth, nav=NAV, footer=footer))
        report.pages.append(path)

    runner = CommandRunner(workers=2)  # the CLI examples run beside the in-process work
    try:
        for s in chosen:
            runner.submit(s.name, explain_command(s.name, page_preset(s)), head=24)
        facts = []
        for s in chosen:
            t0 = time.perf_counter()
            progress(f"{s.name}: diagram, stages and the Python example")
            ex = explain(s.name, page_preset(s))
            folder = out / "systems" / s.name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "diagram.svg").write_text(render_diagram(ex, "svg"))
            python = python_example(s.name, page_preset(s))
            drawn, note = [], ""
            if s.name in wanted and s.name in pics.PICTURES:
                progress(f"{s.name}: pictures ({', '.join(pics.available(s.name))})")
                made = pics.render(s.name, "all", folder)
                drawn = pages.picture_facts(folder, [p for p in made if p.suffix == ".png"], s.name)
            elif s.name in pics.PICTURES:
                note = (f"Pictures were not rendered in this build; `tatlas explain {s.name} --show all` draws "
                        f"them ({', '.join(pics.available(s.name))}).")
            else:
                note = "This system has no pictures yet."
            report.timings[s.name] = time.perf_counter() - t0
            facts.append(pages.SystemFacts(s, ex, parity(root / "tests", s.name), weights(s), record.get(s.name),
                                           python, None, drawn, note))
        progress("the command examples")
        facts = [replace(f, command=runner.result(f.system.name)) for f in facts]
    finally:
        runner.close()
    progress("index, architecture, results and API pages")
    (out / "style.css").write_text(STYLE)
    for f in facts:
        write(f"systems/{f.system.name}.html", f.system.name, pages.system_page(f, f"{f.system.name}/diagram.svg"), 1)
    write("index.html", "Systems", pages.index(facts, _lead((root / "README.md").read_text())), 0)
    write("architecture.html", "Architecture", pages.architecture((root / "docs" / "architecture.md").read_text()), 0)
    write("results.html", "Benchmark results", pages.results((root / "benchmarks" / "RESULTS.md").read_text()), 0)
    api_body, _ = apiref.render()
    write("api.html", "API reference", api_body, 0)
    report.seconds = time.perf_counter() - start
    return report
