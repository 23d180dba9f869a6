"""The API reference, generated from the public objects themselves: each module's ``__all__`` (the
entry points of :mod:`tatlas`, and :mod:`tatlas.nn`, :mod:`tatlas.generate`, :mod:`tatlas.train`,
:mod:`tatlas.io`), each object's signature from :mod:`inspect` and its docstring; a class lists the
public methods it defines itself with their own docstrings."""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field

from .html import esc, markdown, slug

MODULES = ("tatlas", "tatlas.nn", "tatlas.generate", "tatlas.train", "tatlas.io")


@dataclass
class Entry:
    name: str  # qualified: tatlas.nn.Attention
    kind: str  # "function", "class", "value"
    signature: str
    doc: str
    methods: list[Entry] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return slug(self.name)


class _Annotation(str):
    """A string annotation (``from __future__ import annotations``) shown as written, unquoted."""

    def __repr__(self) -> str:
        return str(self)


def _signature(obj) -> str:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return ""
    plain = lambda a: _Annotation(a) if isinstance(a, str) else a
    params = [p.replace(annotation=plain(p.annotation)) for p in sig.parameters.values()]
    return str(sig.replace(parameters=params, return_annotation=plain(sig.return_annotation)))


def _methods(cls: type) -> list[Entry]:
    out = []
    for name, member in cls.__dict__.items():
        if name.startswith("_") and name != "__call__":
            continue
        fn = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
        if isinstance(member, property):
            fn = member.fget
        if not callable(fn) or not inspect.getdoc(fn):
            continue
        kind = "property" if isinstance(member, property) else "method"
        out.append(Entry(f"{cls.__name__}.{name}", kind, "" if kind == "property" else _signature(fn),
                         inspect.getdoc(fn) or ""))
    return out


def entries(module_name: str) -> list[Entry]:
    """The public objects of ``module_name`` (its ``__all__``), in that order."""
    module = importlib.import_module(module_name)
    out = []
    for name in getattr(module, "__all__", ()):
        if name.startswith("__"):
            continue
        obj = getattr(module, name)
        qual = f"{module_name}.{name}"
        if inspect.isclass(obj):
            out.append(Entry(qual, "class", _signature(obj), inspect.getdoc(obj) or "", _methods(obj)))
        elif callable(obj):
            out.append(Entry(qual, "function", _signature(obj), inspect.getdoc(obj) or ""))
        else:
            out.append(Entry(qual, "value", f" = {type(obj).__name__}", ""))
    return out


def _doc(text: str) -> str:
    return markdown(text) if text.strip() else '<p class="muted">(no docstring)</p>'


def render() -> tuple[str, list[Entry]]:
    """The API page's body and every entry on it (the tests check the anchors)."""
    parts, everything = [], []
    toc = []
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        items = entries(module_name)
        everything += items
        toc.append(f'<li><a href="#{slug(module_name)}"><code>{esc(module_name)}</code></a> ({len(items)})</li>')
        summary = " ".join((inspect.getdoc(module) or "").split("\n\n")[0].split())
        parts.append(f'<h2 id="{slug(module_name)}"><code>{esc(module_name)}</code></h2>\n{markdown(summary)}')
        parts.append('<dl class="api">')
        for e in items:
            parts.append(f'<dt id="{e.anchor}">{esc(e.kind)} {esc(e.name)}{esc(e.signature)}</dt>'
                         f"<dd>{_doc(e.doc)}</dd>")
            for m in e.methods:
                parts.append(f'<dd class="method"><code>{esc(m.name)}{esc(m.signature)}</code>'
                             f'{" <span class=muted>(property)</span>" if m.kind == "property" else ""}'
                             f"{_doc(m.doc)}</dd>")
        parts.append("</dl>")
    head = (f"<h1>API reference</h1><p class=\"lead\">Generated from the docstrings of the public objects "
            f"({len(everything)} of them): what each module lists in <code>__all__</code>.</p>"
            f"<ul>{''.join(toc)}</ul>")
    return head + "\n".join(parts), everything
