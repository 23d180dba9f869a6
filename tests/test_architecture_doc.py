"""docs/architecture.md carries generated facts (the layers and what each holds, the systems) that
must match the code; ``python tests/test_architecture_doc.py`` rewrites them."""

from __future__ import annotations

import ast
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
SRC = ROOT / "src" / "tatlas"
BLOCK = re.compile(r"(<!-- generated: (\w+) -->\n)(.*?)(<!-- end generated -->)", re.S)


def _first_paragraph(package: str) -> str:
    doc = ast.get_docstring(ast.parse((SRC / package / "__init__.py").read_text())) or ""
    return " ".join(doc.split("\n\n")[0].split())


def layers_table() -> str:
    from test_package import LAYERS

    rows = [f"| `{layer}/` | {_first_paragraph(layer)} |" for layer in LAYERS]
    return "\n".join(["| layer | what it holds |", "|---|---|", *rows]) + "\n"


def systems_table() -> str:
    from tatlas.models import systems

    rows = []
    for name, s in sorted(systems().items()):
        loads = sorted({*(f"HF `{t}`" for t in s.hf_model_types), *(f"`{f}`" for f in s.formats),
                        *(f"CTranslate2 `{c}`" for c in s.ct2_specs)})
        rows.append(f"| `{name}` | {s.summary} | {', '.join(f'`{p}`' for p in s.presets)} | "
                    f"{', '.join(loads) or '—'} |")
    return "\n".join(["| system | what it is | presets | loads |", "|---|---|---|---|", *rows]) + "\n"


GENERATORS = {"layers": layers_table, "systems": systems_table}


def render(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + GENERATORS[m.group(2)]() + m.group(4), text)


def test_generated_facts_match_the_code():
    text = DOC.read_text()
    assert {m.group(2) for m in BLOCK.finditer(text)} == set(GENERATORS)
    assert render(text) == text, "docs/architecture.md is out of date: run `python tests/test_architecture_doc.py`"


def test_every_layer_says_what_it_holds():
    from test_package import LAYERS

    assert all(_first_paragraph(layer) for layer in LAYERS)


if __name__ == "__main__":
    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    DOC.write_text(render(DOC.read_text()))
    print(f"wrote {DOC}")
