"""GGUF files (llama.cpp's format) on ggml's own Python reader, the ``gguf`` package: metadata,
the tensor index, memory-mapped data, and ggml's dequantisers (Q4_0/Q4_1/Q8_0/K-quants ... ->
float32). Nothing here re-implements a quantisation format.

A file split into parts (``model.gguf.part00``, ``.part01`` ..., as some wheels ship them to stay
under a size limit) is joined once into a cache file by :func:`resolve_gguf` (checked against a
``SHA256SUMS`` beside the parts when there is one); a user only ever names the first part or the
folder.
"""

from __future__ import annotations

import functools
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .checkpoint import CheckpointError
from .parts import cache_dir, join_parts, sums_file

_PART = re.compile(r"^(?P<stem>.+\.gguf)\.part(?P<n>\d+)$")


def _gguf():
    try:
        import gguf
    except ImportError:  # pragma: no cover - a dependency of the package
        raise CheckpointError("reading GGUF files needs the 'gguf' package: pip install gguf") from None
    return gguf


def is_gguf(path: str | Path) -> bool:
    """Whether ``path`` names a GGUF file, a part of one, or a folder holding one (or its parts)."""
    path = Path(path)
    if path.is_dir():
        return any(path.glob("*.gguf")) or any(_PART.match(p.name) for p in path.iterdir())
    return path.suffix == ".gguf" or _PART.match(path.name) is not None


def resolve_gguf(path: str | Path) -> Path:
    """``path`` as one readable ``.gguf`` file: itself, or — for a part ``x.gguf.partNN`` or a folder
    holding one ``.gguf`` or its parts — the parts joined, in order, into ``cache_dir()`` (once;
    reused while sizes match)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.gguf"))
        parts = sorted(p for p in path.iterdir() if _PART.match(p.name))
        if len(files) == 1 and not parts:
            return files[0]
        if not parts:
            raise CheckpointError(f"{path}: expected one .gguf file or its .partNN pieces, found "
                                  f"{[p.name for p in files] or 'none'}")
        path = parts[0]
    m = _PART.match(path.name)
    if m is None:
        if not path.is_file():
            raise CheckpointError(f"{path}: no such file")
        return path
    parts = sorted(path.parent.glob(f"{m['stem']}.part*"), key=lambda p: int(_PART.match(p.name)["n"]))
    numbers = [int(_PART.match(p.name)["n"]) for p in parts]
    if numbers != list(range(numbers[0], numbers[0] + len(numbers))):
        raise CheckpointError(f"{path}: parts {numbers} of {m['stem']} are not consecutive (one is missing)")
    listed = sums_file(parts[0].parent / "SHA256SUMS")  # each part checked before the first join
    return join_parts(parts, cache_dir() / m["stem"], digests={p: listed[p.name] for p in parts if p.name in listed})


_READER_LOCK = threading.Lock()


class _PlainArrays:
    """``numpy`` as ggml's reader sees it while it parses, except that ``memmap`` returns a plain
    ndarray view of the mapping (still memory-mapped, nothing copied): the reader slices the file
    once per metadata item, and numpy's ``memmap`` subclass costs ~10 µs a slice in bookkeeping —
    seconds for a 262k-token vocabulary. Parsing through the view is 2-3x faster."""

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)

    @staticmethod
    def memmap(*args: Any, **kwargs: Any) -> np.ndarray:
        return np.asarray(np.memmap(*args, **kwargs))


def _reader(path: Path) -> Any:
    """``gguf.GGUFReader(path, "r")`` parsing over a plain view of the mapping (see :class:`_PlainArrays`)."""
    gguf = _gguf()
    module = sys.modules[gguf.GGUFReader.__module__]
    with _READER_LOCK:
        saved = module.np
        module.np = _PlainArrays()
        try:
            return gguf.GGUFReader(str(path), "r")
        finally:
            module.np = saved


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor of the index: its name, ggml type name (``F32``, ``Q4_1`` ...), logical shape in
    torch order (``[out, in]`` for a matrix) and the raw (memory-mapped) block data."""

    name: str
    type: str
    shape: tuple[int, ...]
    raw: Any
    _type: Any

    def dequantize(self) -> Tensor:
        """float32 values through ggml's own dequantiser, ``shape``."""
        values = np.asarray(_gguf().quants.dequantize(self.raw, self._type), dtype=np.float32)
        if not values.flags.writeable:  # F32/F16 come straight from the read-only memory map
            values = values.copy()
        return torch.from_numpy(np.ascontiguousarray(values).reshape(self.shape))


class GGUFFile:
    """A GGUF file's ``metadata`` (key -> Python value; the tokenizer's long arrays included) and
    ``tensors`` (name -> :class:`GGUFTensor`), memory-mapped."""

    def __init__(self, path: str | Path) -> None:
        self.path = resolve_gguf(path)
        try:
            reader = _reader(self.path)
        except Exception as e:  # the reader raises ValueError/struct errors on bad files
            raise CheckpointError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from None
        self.metadata: dict[str, Any] = {}
        for key, field in reader.fields.items():
            try:
                self.metadata[key] = field.contents()
            except Exception:  # pragma: no cover - fields of unknown layout are skipped
                continue
        self.tensors: dict[str, GGUFTensor] = {}
        for t in reader.tensors:
            shape = tuple(int(n) for n in reversed(t.shape.tolist()))  # ggml's ne is innermost-first
            self.tensors[t.name] = GGUFTensor(t.name, t.tensor_type.name, shape, t.data, t.tensor_type)

    @property
    def architecture(self) -> str:
        arch = self.metadata.get("general.architecture")
        if not isinstance(arch, str):
            raise CheckpointError(f"{self.path}: GGUF without general.architecture")
        return arch

    def arch_value(self, key: str, default: Any = None) -> Any:
        """``<architecture>.<key>`` from the metadata (e.g. ``block_count``)."""
        return self.metadata.get(f"{self.architecture}.{key}", default)

    def state(self) -> dict[str, Tensor]:
        """Every tensor dequantised to float32, by its GGUF name."""
        return {name: t.dequantize() for name, t in self.tensors.items()}


def read_gguf(path: str | Path) -> GGUFFile:
    """Open a GGUF file (or its parts, or a folder holding it): see :class:`GGUFFile`. The last two
    files opened are kept (the model and its tokenizer read the same file, and ggml's reader parses
    every metadata array up front: seconds for a 262k-token vocabulary)."""
    file = resolve_gguf(path)
    stat = file.stat()
    return _open(str(file), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _open(path: str, size: int, mtime_ns: int) -> GGUFFile:
    return GGUFFile(path)
