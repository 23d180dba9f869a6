"""The diagram: a :class:`~.flow.Flow` drawn with matplotlib, top to bottom in the order the forward
pass first called each module. Boxes are modules (name, class, parameters, share of the FLOPs);
frames are the modules they sit in, a folded stack's frame says ``× L``; arrows carry the shape of
the tensor that flows. An arrow to the next box runs straight down; the others (a second input, a
skip over several boxes) run on tracks at the right. Skips implied by a longer path that would
cross a frame (the residual stream around a stack) are left out, those inside a frame are dashed.
The system's distinctive modules (``System.highlight``) are filled orange."""

from __future__ import annotations

import io
from pathlib import Path

from .flow import Flow, Node
from .trace import Explanation, explain

BOX_W, BOX_H, ROW, HEAD, TRACK = 3.9, 0.46, 0.66, 0.34, 0.2
HIGHLIGHT, PLAIN, ENDPOINT = "#f6b26b", "#ffffff", "#e3e3e3"
FRAME_COLOURS = ("#dbe9f6", "#c6dbef", "#aecde6", "#9ecae1")


def _human(n: float) -> str:
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}"


def _chain(flow: Flow, cluster: str | None) -> list[str]:
    by_id = {c.id: c for c in flow.clusters}
    out = []
    while cluster is not None:
        out.append(cluster)
        cluster = by_id[cluster].parent
    return out[::-1]


def _short(id: str, parent: str | None) -> str:
    if id.startswith(("input:", "output:")):
        return id.split(":", 1)[1]
    return id[len(parent) + 1:] if parent and id.startswith(parent + ".") else id


def _reach(flow: Flow) -> dict[str, set[str]]:
    """Node -> the nodes reachable from it through forward arrows."""
    out: dict[str, set[str]] = {n.id: set() for n in flow.nodes}
    succ: dict[str, list[str]] = {n.id: [] for n in flow.nodes}
    for e in flow.edges:
        succ[e.src].append(e.dst)
    for n in reversed(flow.nodes):
        for d in succ[n.id]:
            out[n.id] |= {d} | out[d]
    return out


def _kept_edges(flow: Flow):
    """(edge, dashed) for each arrow drawn."""
    reach, succ = _reach(flow), {}
    for e in flow.edges:
        succ.setdefault(e.src, []).append(e.dst)
    node = {n.id: n for n in flow.nodes}
    for e in flow.edges:
        implied = any(e.dst in reach[m] for m in succ[e.src] if m != e.dst)
        if implied and node[e.src].cluster != node[e.dst].cluster:
            continue
        yield e, implied


def figure(ex: Explanation):
    """The diagram of an :class:`~.trace.Explanation` as a matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    flow = ex.flow
    frames = {c.id: c for c in flow.clusters}
    inner: dict[str, int] = {}
    for c in sorted(flow.clusters, key=lambda c: -len(_chain(flow, c.id))):
        inner.setdefault(c.id, 0)
        if c.parent:
            inner[c.parent] = max(inner.get(c.parent, 0), inner[c.id] + 1)
    y, prev, rows, spans = 0.0, [], {}, {}
    for n in flow.nodes:
        chain = _chain(flow, n.cluster)
        common = 0
        while common < min(len(chain), len(prev)) and chain[common] == prev[common]:
            common += 1
        y += 0.14 * (len(prev) - common)  # frames closing
        for f in chain[common:]:
            spans.setdefault(f, [y, y])
            y += HEAD
        rows[n.id] = y + ROW / 2
        for f in chain:
            spans[f][1] = y + ROW
        y += ROW
        prev = chain
    height = y + 0.14 * len(prev)
    edges = list(_kept_edges(flow))
    order = {n.id: i for i, n in enumerate(flow.nodes)}
    consecutive = lambda e: order[e.dst] == order[e.src] + 1
    tracks: list[list[tuple[float, float]]] = []
    placed = []
    right = BOX_W / 2 + 0.2 * (max(inner.values(), default=-1) + 1) + 0.15
    for e, dashed in sorted(edges, key=lambda ed: rows[ed[0].dst] - rows[ed[0].src]):
        if consecutive(e) and not dashed:
            placed.append((e, dashed, None))
            continue
        lo, hi = rows[e.src], rows[e.dst]
        t = next((i for i, used in enumerate(tracks) if all(hi < a - 0.05 or lo > b + 0.05 for a, b in used)), None)
        if t is None:
            tracks.append([])
            t = len(tracks) - 1
        tracks[t].append((lo, hi))
        placed.append((e, dashed, right + TRACK * (t + 1)))
    width = right + TRACK * (len(tracks) + 1) + 1.0 + BOX_W / 2
    top = 1.1
    fig = plt.figure(figsize=(max(width, 7.0), height + top + 0.3))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(-BOX_W / 2 - 1.0, max(width, 7.0) - BOX_W / 2 - 1.0)
    ax.set_ylim(height + 0.3, -top)
    ax.axis("off")
    total = max(ex.flops, 1)
    highlights = ", ".join(ex.system.highlight) or "none"
    ax.text(-BOX_W / 2 - 0.9, -top + 0.3, f"{ex.system.name} ({ex.preset}): data flow of one traced forward pass",
            fontsize=12, weight="bold", va="center")
    ax.text(-BOX_W / 2 - 0.9, -top + 0.62,
            f"{_human(ex.params)} parameters, {_human(ex.flops)} FLOPs on the sample input ({ex.device}); "
            "arrows carry tensor shapes\norange: the distinctive parts (" + highlights + ")", fontsize=7.5,
            va="center", color="#333333")
    share = {s.id: s.flops / total for s in ex.stages}
    params = {s.id: s.params for s in ex.stages}
    for f, (a, b) in spans.items():
        level, c = len(_chain(flow, f)) - 1, frames[f]
        pad = 0.2 * (inner[f] + 1)
        colour = HIGHLIGHT if c.highlight else FRAME_COLOURS[min(level, len(FRAME_COLOURS) - 1)]
        ax.add_patch(FancyBboxPatch((-BOX_W / 2 - pad, a), BOX_W + 2 * pad, b - a + 0.06,
                                    boxstyle="round,pad=0,rounding_size=0.08", fc=colour, ec="#4a6f96", lw=0.8,
                                    alpha=0.55 if c.highlight else 1.0))
        label = f"{_short(f, c.parent)}: {c.kind}" + (f"  × {c.repeat}" if c.repeat > 1 else "")
        label += f"   ({_human(params.get(f, 0))} params, {share.get(f, 0.0):.0%} of FLOPs)"
        ax.text(-BOX_W / 2 - pad + 0.08, a + HEAD / 2, label, fontsize=8, weight="bold", va="center",
                color="#1f3b5a")
    share = {s.id: s.flops / total for s in ex.stages}
    for n in flow.nodes:
        _box(ax, n, rows[n.id], share.get(n.id, 0.0), frames, FancyBboxPatch)
    for e, dashed, x in placed:
        _arrow(ax, rows[e.src], rows[e.dst], x, e.shape, dashed)
    return fig


def _box(ax, n: Node, yc: float, share: float, frames, patch) -> None:
    endpoint = n.kind in ("input", "output")
    fc = ENDPOINT if endpoint else HIGHLIGHT if n.highlight else PLAIN
    ax.add_patch(patch((-BOX_W / 2, yc - BOX_H / 2), BOX_W, BOX_H, boxstyle="round,pad=0,rounding_size=0.06",
                       fc=fc, ec="#333333", lw=1.0))
    parent = n.cluster
    name = _short(n.id, parent)
    repeat = frames[parent].repeat if parent in frames else 1
    calls = f"  (× {n.calls} calls)" if n.calls > repeat and n.calls > 1 else ""
    if endpoint:
        ax.text(0, yc, f"{n.kind}: {name}  [{', '.join(map(str, n.shape))}]", ha="center", va="center", fontsize=8.5)
        return
    ax.text(0, yc - 0.09, f"{name} · {n.kind}{calls}", ha="center", va="center", fontsize=8.5,
            weight="bold" if n.highlight else "normal")
    each = " each" if repeat > 1 else ""
    shape = ", ".join(map(str, n.shape))
    ax.text(0, yc + 0.12, f"{_human(n.params)} params{each} · {share:.1%} of FLOPs · out [{shape}]",
            ha="center", va="center", fontsize=6.5, color="#444444")


def _arrow(ax, y0: float, y1: float, x: float | None, shape: tuple[int, ...], dashed: bool) -> None:
    label = "[" + ", ".join(map(str, shape)) + "]"
    style = {"arrowstyle": "-|>", "color": "#555555" if dashed else "#1a1a1a", "lw": 0.7 if dashed else 1.0,
             "linestyle": "--" if dashed else "-", "shrinkA": 0, "shrinkB": 0, "mutation_scale": 8}
    if x is None:
        ax.annotate("", xy=(0, y1 - BOX_H / 2), xytext=(0, y0 + BOX_H / 2), arrowprops=style)
        ax.text(0.06, y1 - BOX_H / 2 - 0.09, label, fontsize=6.5, va="center", color="#1a4f8a")
        return
    ax.plot([BOX_W / 2, x, x], [y0, y0, y1], color=style["color"], lw=style["lw"], ls=style["linestyle"])
    ax.annotate("", xy=(BOX_W / 2, y1), xytext=(x, y1), arrowprops=style)
    if not dashed:
        ax.text(x + 0.03, y0 + 0.1, label, fontsize=6, va="top", color="#1a4f8a", rotation=-90,
                rotation_mode="anchor")


def diagram(name: str, preset: str = "tiny", *, fmt: str = "svg", depth: int = 3) -> str | bytes:
    """The diagram of ``name`` at ``preset``: SVG text (``fmt="svg"``) or PNG bytes (``fmt="png"``)."""
    if fmt not in ("svg", "png"):
        raise ValueError(f"diagram format: expected 'svg' or 'png', got {fmt!r}")
    return render(explain(name, preset, depth=depth), fmt)


def render(ex: Explanation, fmt: str = "svg") -> str | bytes:
    import matplotlib
    import matplotlib.pyplot as plt

    fig = figure(ex)
    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "tatlas"}):
        fig.savefig(buf, format=fmt, dpi=110)
    plt.close(fig)
    return buf.getvalue().decode() if fmt == "svg" else buf.getvalue()


def write_diagram(ex: Explanation, out_dir: Path) -> list[Path]:
    """``<system>-<preset>-diagram.svg`` and ``.png`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{ex.system.name}-{ex.preset}".replace("/", "_").replace("@", "_")
    paths = []
    for fmt in ("svg", "png"):
        path = out_dir / f"{stem}-diagram.{fmt}"
        data = render(ex, fmt)
        path.write_text(data) if fmt == "svg" else path.write_bytes(data)
        paths.append(path)
    return paths
