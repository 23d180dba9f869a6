"""Foreign checkpoints kept converted: a model read from a CTranslate2 folder, a Hugging Face
folder or an openai-whisper file is written once in our own format (one safetensors file) to
``$TATLAS_CACHE/converted`` (default ``~/.cache/tatlas/converted``), and later loads read that file.

Reading our file costs no conversion (a CTranslate2 float16 model is cast to float32, q/k/v fused,
the tied head dropped) and its tensors stay memory-mapped: the weights are the file's pages in the
page cache, shared by every process that loads them, never a private copy, and no transient copy
of the source lies beside the converted one while loading. Whisper tiny.en: a load 0.10 -> 0.03 s,
and the resident memory after it (from 225 MB after ``import tatlas.cli.main``) 394 MB with a peak
of 524 -> 245 MB, the weights' pages coming in as they are read (``benchmarks/RESULTS.md``).

An entry is named by the source's name, a hash of its absolute path, and a hash of what the
conversion depends on (:func:`source_key`): the size and modification time of the source file or of
every file in the source folder, the format and system asked for, and tatlas' converter sources
(the ``io`` package and every system's ``convert.py`` / ``config.py``). A change to any of them
names a new entry, written on the next load; the entries of the same source path that it replaces
are removed then. A damaged entry is converted and written again; an unwritable cache costs only
the speed (the converted model is used as it is).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from .parts import cache_dir

__all__ = ["converted_dir", "entry", "source_key", "stale_entries"]

_PACKAGE = Path(__file__).resolve().parent.parent  # src/tatlas


def converted_dir() -> Path:
    return cache_dir() / "converted"


def _stats(files: list[Path], base: Path | None = None) -> list[tuple[str, int, int]]:
    """``(name, size, mtime_ns)`` of each file (the name relative to ``base``, if given)."""
    out = []
    for f in files:
        st = f.stat()
        out.append((str(f.relative_to(base)) if base else f.name, st.st_size, st.st_mtime_ns))
    return out


def _source(path: Path) -> list[Path]:
    """``path`` (a file) or every file directly in it (a folder)."""
    return [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())


def _converters() -> list[Path]:
    models = _PACKAGE / "models"
    return [*sorted((_PACKAGE / "io").glob("*.py")), *sorted(models.glob("*/convert.py")),
            *sorted(models.glob("*/config.py"))]


def source_key(path: Path, format: str | None, system: str | None) -> str:
    """A hash of everything a conversion of ``path`` depends on (the module docstring)."""
    h = hashlib.sha256(repr((format, system, _stats(_source(path)), _stats(_converters(), _PACKAGE))).encode())
    return h.hexdigest()[:16]


def _path_tag(path: Path) -> str:
    return hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]


def entry(path: Path, format: str | None, system: str | None) -> Path:
    """Where the conversion of ``path`` (with ``format`` / ``system``) is kept."""
    return converted_dir() / f"{path.resolve().name}-{_path_tag(path)}-{source_key(path, format, system)}.safetensors"


def stale_entries(path: Path, current: Path, *, abandoned_after: float = 600.0) -> list[Path]:
    """The entries of the same source path as ``current`` other than it (older conversions), and
    temporary files of that source's writers older than ``abandoned_after`` seconds (a process
    killed while writing)."""
    prefix = f"{path.resolve().name}-{_path_tag(path)}-"
    folder = converted_dir()
    old = [p for p in folder.glob(f"{prefix}*.safetensors") if p != current and len(p.name) == len(current.name)]
    now = time.time()
    abandoned = []
    for p in folder.glob(f"{prefix}*.tmp"):
        try:
            if now - p.stat().st_mtime > abandoned_after:
                abandoned.append(p)
        except FileNotFoundError:  # another writer renamed it meanwhile
            pass
    return old + abandoned
