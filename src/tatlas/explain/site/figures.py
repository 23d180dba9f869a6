"""The figures the site's index shows, each read from where it is recorded, none typed here:

- demo headline and benchmark ratio: the block ``<!-- figures: systems -->`` of
  ``benchmarks/RESULTS.md``; every figure in it must appear, as written, in the section of that file
  the row names, or the build stops (the summary cannot drift from the record);
- parity: the tests themselves, ``tests/test_parity_<system>*.py`` read with :mod:`ast` (how many
  tests, the loosest ``atol`` they assert, the reference their docstring names);
- real weights: the code: the named checkpoints of :mod:`tatlas.jobs.named` and each system's
  converters (``hf_model_types``, ``formats``, ``ct2_specs``)."""

from __future__ import annotations

import ast
import inspect
import re
from dataclasses import dataclass
from pathlib import Path

from ...models.spec import System

BLOCK = re.compile(r"<!-- figures: systems -->\n(.*?)<!-- end figures -->", re.DOTALL)
COLUMNS = ("system", "demo", "figure", "baseline", "baseline figure", "demo section", "benchmark", "ratio",
           "benchmark section")
NONE = "—"


@dataclass(frozen=True)
class Recorded:
    """One system's row of the RESULTS.md block (``NONE`` where nothing is recorded)."""

    system: str
    demo: str
    figure: str
    baseline: str
    baseline_figure: str
    demo_section: str
    benchmark: str
    ratio: str
    benchmark_section: str


def sections(text: str) -> dict[str, str]:
    """``## heading`` -> its text up to the next ``## `` heading (its ``###`` parts included)."""
    out: dict[str, str] = {}
    parts = re.split(r"^## (.+)$", text, flags=re.MULTILINE)
    for head, body in zip(parts[1::2], parts[2::2], strict=True):
        out[head.strip()] = body
    return out


def recorded(results_md: Path) -> dict[str, Recorded]:
    """The block of ``results_md``, checked against the sections it cites."""
    text = results_md.read_text()
    m = BLOCK.search(text)
    if m is None:
        raise ValueError(f"{results_md}: no '<!-- figures: systems -->' block")
    rows = [line for line in m.group(1).splitlines() if line.startswith("|")]
    head = tuple(c.strip() for c in rows[0].strip("|").split("|"))
    if head != COLUMNS:
        raise ValueError(f"{results_md}: the figures block's columns: expected {' | '.join(COLUMNS)}, got {' | '.join(head)}")
    parts = sections(BLOCK.sub("", text))
    out: dict[str, Recorded] = {}
    for line in rows[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != len(COLUMNS):
            raise ValueError(f"{results_md}: figures row {line.strip()!r} has {len(cells)} cells, expected {len(COLUMNS)}")
        rec = Recorded(*cells)
        for figure, section in ((rec.figure, rec.demo_section), (rec.baseline_figure, rec.demo_section),
                                (rec.ratio, rec.benchmark_section)):
            if figure == NONE:
                continue
            if section not in parts:
                raise ValueError(f"{results_md}: {rec.system}: no section '## {section}'")
            if figure not in parts[section]:
                raise ValueError(f"{results_md}: {rec.system}: the figure {figure!r} is not in section '{section}'")
        out[rec.system] = rec
    return out


@dataclass(frozen=True)
class Parity:
    tests: int  # test functions
    atol: float | None  # the loosest tolerance asserted (None: no tolerance found)
    reference: str  # the first sentence of the files' docstrings: what is compared with what
    files: tuple[str, ...]


def _constants(tree: ast.Module) -> dict[str, float]:
    out: dict[str, float] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                names = target.elts if isinstance(target, ast.Tuple) else [target]
                values = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
                for n, v in zip(names, values, strict=False):
                    if isinstance(n, ast.Name) and isinstance(v, ast.Constant) and isinstance(v.value, (int, float)):
                        out[n.id] = float(v.value)
    return out


def _first_sentence(doc: str) -> str:
    text = " ".join(doc.split())
    return re.split(r"(?<=\S)(?: \(|: |\. )", text, maxsplit=1)[0].rstrip(".")


def parity(tests_dir: Path, system: str) -> Parity | None:
    """What ``tests/test_parity_<system>*.py`` assert; ``None`` if there is no such file."""
    files = sorted(p for p in tests_dir.glob(f"test_parity_{system}*.py")
                   if p.stem == f"test_parity_{system}" or p.stem.startswith(f"test_parity_{system}_"))
    if not files:
        return None
    count, atols, refs = 0, [], []
    for path in files:
        tree = ast.parse(path.read_text())
        consts = _constants(tree)
        count += sum(isinstance(n, ast.FunctionDef) and n.name.startswith("test_") for n in ast.walk(tree))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                for kw in node.keywords:
                    if kw.arg == "atol" and isinstance(kw.value, ast.Constant):
                        atols.append(float(kw.value.value))
                    elif kw.arg == "atol" and isinstance(kw.value, ast.Name) and kw.value.id in consts:
                        atols.append(consts[kw.value.id])
        refs.append(_first_sentence(ast.get_docstring(tree) or path.stem))
    return Parity(count, max(atols) if atols else None, "; ".join(refs), tuple(p.name for p in files))


@dataclass(frozen=True)
class Weights:
    named: tuple[tuple[str, str, str], ...]  # (name, what it is, install command) of each named checkpoint
    formats: tuple[tuple[str, str], ...]  # (format, the converter's first docstring line)


def _doc_line(fn) -> str:
    doc = inspect.getdoc(fn) or ""
    return " ".join(doc.split("\n\n")[0].split())


def weights(system: System) -> Weights:
    from ...jobs.named import NAMED

    named = tuple((m.name, m.about, m.install) for m in NAMED.values() if m.system == system.name)
    formats = [(f"Hugging Face folder, config.json model_type {t!r}", _doc_line(fn))
               for t, fn in system.hf_model_types.items()]
    formats += [(f"format={f!r}", _doc_line(fn)) for f, fn in system.formats.items()]
    formats += [(f"CTranslate2 folder, model.bin spec {s!r}", _doc_line(fn)) for s, fn in system.ct2_specs.items()]
    return Weights(named, tuple(formats))


def human(n: float) -> str:
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}"
