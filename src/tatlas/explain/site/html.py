"""The site's HTML: one page shell (navigation, local stylesheet), escaping, and a small Markdown
reader for the library's own documents (``docs/architecture.md``) and docstrings: headings with
anchors, paragraphs, lists, tables, fenced code, inline code, bold, emphasis and links. Nothing is
fetched from elsewhere: every page uses ``style.css`` beside it."""

from __future__ import annotations

import html
import re

STYLE = """\
:root { --fg: #1d2330; --muted: #5b6474; --line: #d8dde6; --accent: #1a4f8a; --hi: #f6b26b; --code: #f4f6f9; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.55 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); }
header.top { background: #18263a; color: #fff; padding: 0.6rem 1.5rem; display: flex; gap: 1.2rem;
             align-items: baseline; flex-wrap: wrap; }
header.top a { color: #cfe0f5; text-decoration: none; }
header.top a.home { color: #fff; font-weight: 700; font-size: 1.05rem; }
main { max-width: 1100px; margin: 0 auto; padding: 1rem 1.5rem 3rem; }
h1 { font-size: 1.9rem; margin: 0.8rem 0 0.3rem; }
h2 { font-size: 1.35rem; margin-top: 2rem; border-bottom: 1px solid var(--line); padding-bottom: 0.2rem; }
h3 { font-size: 1.08rem; margin-top: 1.4rem; }
a { color: var(--accent); }
p.lead { color: var(--muted); font-size: 1.05rem; margin-top: 0; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.9rem; width: 100%; }
th, td { border: 1px solid var(--line); padding: 0.3rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #eef2f7; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.child td:first-child { padding-left: 1.6rem; }
code { background: var(--code); padding: 0.05rem 0.25rem; border-radius: 3px; font-size: 0.88em; }
pre { background: var(--code); padding: 0.7rem 0.9rem; overflow-x: auto; border-radius: 5px;
      border: 1px solid var(--line); font-size: 0.83rem; line-height: 1.4; }
pre code { background: none; padding: 0; }
pre.output { background: #fbfbf4; border-color: #e6e3c8; }
.label { font-size: 0.78rem; color: var(--muted); text-transform: uppercase; letter-spacing: 0.04em; margin: 0.6rem 0 0.1rem; }
figure { margin: 1rem 0 1.6rem; }
figure img { max-width: 100%; border: 1px solid var(--line); border-radius: 4px; background: #fff; }
figcaption { color: var(--muted); font-size: 0.9rem; margin-top: 0.3rem; }
.card { border-left: 4px solid var(--hi); background: #fff8ef; padding: 0.5rem 0.9rem; margin: 0.8rem 0; }
.card.question { border-color: var(--accent); background: #f0f5fb; }
.api dt { font-family: ui-monospace, monospace; font-size: 0.88rem; margin-top: 1.2rem; font-weight: 600; }
.api dd { margin: 0.3rem 0 0 1.2rem; }
.api dd.method { margin-left: 2.2rem; }
.muted { color: var(--muted); }
footer { color: var(--muted); font-size: 0.82rem; border-top: 1px solid var(--line); margin-top: 3rem; padding-top: 0.6rem; }
"""


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def slug(text: str) -> str:
    """An anchor id: lower case, words joined by hyphens."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def page(title: str, body: str, *, depth: int, nav: list[tuple[str, str]], footer: str = "") -> str:
    """A whole page; ``depth`` is how many folders below the site root it sits (for relative links),
    ``nav`` the (label, path from the root) of the top bar."""
    up = "../" * depth
    links = "".join(f'<a href="{up}{esc(href)}">{esc(label)}</a>' for label, href in nav)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)} · Transformer Atlas</title>"
            f'<link rel="icon" href="data:,"><link rel="stylesheet" href="{up}style.css"></head>\n<body>'
            f'<header class="top"><a class="home" href="{up}index.html">Transformer Atlas</a>{links}</header>\n'
            f"<main>\n{body}\n<footer>{footer}</footer></main></body></html>\n")


_INLINE = re.compile(r"``(.+?)``|`([^`]+)`|\*\*(.+?)\*\*|(?<![\w*])\*([^*\s][^*]*?)\*(?!\w)"
                     r"|\[([^\]]+)\]\(([^)\s]+)\)|:(?:func|class|mod|meth|data|attr):`~?\.*([^`]+)`")


def inline(text: str) -> str:
    """Inline Markdown (and reST's double backticks and Sphinx roles) to HTML, escaped."""
    out, last = [], 0
    for m in _INLINE.finditer(text):
        out.append(esc(text[last:m.start()]))
        code, code1, bold, em, label, href, role = m.groups()
        if code is not None or code1 is not None or role is not None:
            out.append(f"<code>{esc(code or code1 or role)}</code>")
        elif bold is not None:
            out.append(f"<strong>{inline(bold)}</strong>")
        elif em is not None:
            out.append(f"<em>{inline(em)}</em>")
        elif href.startswith(("http://", "https://", "#")) or href.endswith(".html"):
            out.append(f'<a href="{esc(href)}">{inline(label)}</a>')
        else:  # a path in the repository: not a page of the site
            out.append(inline(label))
        last = m.end()
    out.append(esc(text[last:]))
    return "".join(out)


def _table(rows: list[str]) -> str:
    cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows]
    head, body = cells[0], [r for r in cells[2:]]
    th = "".join(f"<th>{inline(c)}</th>" for c in head)
    trs = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def markdown(text: str, *, shift: int = 0) -> str:
    """Block-level Markdown to HTML; headings move down ``shift`` levels and get ``id`` anchors."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.strip().startswith("<!--"):
            i += 1
        elif line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            out.append(f"<pre><code>{esc(chr(10).join(lines[i + 1:j]))}</code></pre>")
            i = j + 1
        elif m := re.match(r"(#{1,6})\s+(.*)", line):
            level = min(len(m.group(1)) + shift, 6)
            out.append(f'<h{level} id="{slug(m.group(2))}">{inline(m.group(2))}</h{level}>')
            i += 1
        elif line.lstrip().startswith("|"):
            j = i
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                j += 1
            out.append(_table(lines[i:j]))
            i = j
        elif re.match(r"\s*(?:[-*]|\d+\.)\s", line):
            tag = "ol" if re.match(r"\s*\d+\.", line) else "ul"
            items: list[str] = []
            while i < len(lines) and lines[i].strip():
                if re.match(r"\s*(?:[-*]|\d+\.)\s", lines[i]):
                    items.append(re.sub(r"\s*(?:[-*]|\d+\.)\s+", "", lines[i], count=1))
                else:
                    items[-1] += " " + lines[i].strip()
                i += 1
            out.append(f"<{tag}>" + "".join(f"<li>{inline(it)}</li>" for it in items) + f"</{tag}>")
        else:
            j = i
            while j < len(lines) and lines[j].strip() and not re.match(r"(#{1,6}\s|```|\s*\||\s*[-*]\s)", lines[j]):
                j += 1
            out.append(f"<p>{inline(' '.join(s.strip() for s in lines[i:max(j, i + 1)]))}</p>")
            i = max(j, i + 1)
    return "\n".join(out)


def table(head: list[str], rows: list[list[str]], *, numeric: tuple[int, ...] = (),
          row_class: list[str] | None = None) -> str:
    """A table of already-escaped cells; ``numeric`` columns align right."""
    th = "".join(f"<th>{h}</th>" for h in head)
    trs = []
    for k, r in enumerate(rows):
        cls = f' class="{row_class[k]}"' if row_class and row_class[k] else ""
        tds = "".join(f'<td class="num">{c}</td>' if j in numeric else f"<td>{c}</td>" for j, c in enumerate(r))
        trs.append(f"<tr{cls}>{tds}</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(trs)}</tbody></table>"
