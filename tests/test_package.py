"""Package-level promises: tatlas imports without torchvision or the reference stack, the
layering (imports only point down cli > explain > demo > jobs > train > generate > models > data > nn > io)
holds, and no module imports itself through others (no import cycles, lazy imports included)."""

import ast
import pathlib
import subprocess
import sys

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "tatlas"
LAYERS = ["cli", "explain", "demo", "jobs", "train", "generate", "models", "data", "nn", "io"]


def test_import_needs_no_torchvision_or_references():
    code = (
        "import sys, tatlas, tatlas.cli.main, tatlas.generate, tatlas.explain\n"
        "tatlas.systems()\n"
        "bad = [m for m in ('torchvision', 'transformers', 'open_clip', 'timm', 'whisper') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"tatlas imported {out.stdout.strip()}"


def test_import_leaves_no_collection_of_torch_objects_pending():
    """``import tatlas`` pauses the collector while torch loads; re-enabled with those ~170,000
    objects still in the youngest generation, its next collection walked them all (~100 ms of every
    command's start). They must go to the oldest generation unwalked, the collector on again, and
    garbage made before and after still collectable."""
    code = (
        "import gc, sys, weakref\n"
        "walked = []\n"
        "def seen(phase, info):\n"
        "    if phase == 'start':\n"
        "        walked.append(sum(len(gc.get_objects(g)) for g in range(info['generation'] + 1)))\n"
        "gc.callbacks.append(seen)\n"
        "class Node: pass\n"
        "a = Node(); a.me = a; ref = weakref.ref(a); del a\n"
        "import tatlas\n"
        "most = max(walked, default=0)\n"
        "gc.collect()\n"
        "print(gc.isenabled(), most, len(gc.get_objects(2)), ref() is None, gc.get_freeze_count())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    enabled, most, oldest, freed, frozen = out.stdout.split()
    assert (enabled, freed, frozen) == ("True", "True", "0"), out.stdout
    assert int(oldest) > 100_000, f"only {oldest} objects after import: the check would not see a pending walk"
    assert int(most) < 20_000, f"a collection during `import tatlas` walked {most} objects (torch's, still young)"


def _layer(path: pathlib.Path) -> str | None:
    rel = path.relative_to(SRC).parts
    return rel[0] if rel[0] in LAYERS else None


def test_imports_only_point_down():
    problems = []
    for path in SRC.rglob("*.py"):
        layer = _layer(path)
        if layer is None:
            continue
        rank = LAYERS.index(layer)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = list(path.relative_to(SRC).parts[:-1])
                target = base[: len(base) - node.level + 1] + (node.module.split(".") if node.module else [])
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tatlas."):
                target = node.module.split(".")[1:]
            elif isinstance(node, ast.Import):
                target = next((a.name.split(".")[1:] for a in node.names if a.name.startswith("tatlas.")), [])
            else:
                continue
            if target and target[0] in LAYERS and LAYERS.index(target[0]) < rank:
                problems.append(f"{path.relative_to(SRC)} imports {'.'.join(target)}")
    assert not problems, "imports pointing up: " + "; ".join(problems)


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the tatlas modules it imports anywhere in its file (function-level imports too).
    ``from pkg import name`` counts as importing ``pkg.name`` when that is a module, else ``pkg``."""
    paths = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in paths}
    for module, path in paths.items():
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                names = [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                target, names = "", [a.name for a in node.names]
            else:
                continue
            for name in [n for n in names if n in paths] or ([target] if target in paths else []):
                if name != module:
                    graph[module].add(name)
    return graph


def test_no_import_cycles():
    graph = import_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_check_sees_a_cycle(tmp_path, monkeypatch):
    """The check itself: two modules importing each other (one lazily) are reported."""
    pkg = tmp_path / "tatlas"
    (pkg / "nn").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "nn" / "__init__.py").write_text("")
    (pkg / "nn" / "a.py").write_text("from .b import f\n")
    (pkg / "nn" / "b.py").write_text("def f():\n    from . import a\n")
    monkeypatch.setattr(__import__(__name__), "SRC", pkg)
    graph = import_graph()
    assert graph["tatlas.nn.a"] == {"tatlas.nn.b"} and graph["tatlas.nn.b"] == {"tatlas.nn.a"}
