"""Package-level promises: tatlas imports without torchvision or the reference stack, and the
layering (imports only point down cli > demo > train > generate > models > data > nn > io) holds."""

import ast
import pathlib
import subprocess
import sys

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "tatlas"
LAYERS = ["cli", "demo", "train", "generate", "models", "data", "nn", "io"]


def test_import_needs_no_torchvision_or_references():
    code = (
        "import sys, tatlas, tatlas.cli.main, tatlas.generate, tatlas.explain\n"
        "tatlas.systems()\n"
        "bad = [m for m in ('torchvision', 'transformers', 'open_clip', 'timm', 'whisper') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"tatlas imported {out.stdout.strip()}"


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
