"""GGUF files (llama.cpp's format): metadata, the tensor index, memory-mapped data, and ggml's
own dequantisers from its Python package ``gguf`` (Q4_0/Q4_1/Q8_0/K-quants ... -> float32). Nothing
here re-implements a quantisation format. The header, metadata and tensor index are read by
:func:`_parse` in one pass (ggml's ``GGUFReader`` builds a numpy view per metadata element: 3.3 s
for SmolLM2's 49k-token vocabulary and merges, 14 s for Gemma 3's 262k, against 0.5 and 0.9 s here;
the tests hold the two readings equal); big-endian files go to ggml's reader.

A file split into parts (``model.gguf.part00``, ``.part01`` ..., as some wheels ship them to stay
under a size limit) is joined once into a cache file by :func:`resolve_gguf` (checked against a
``SHA256SUMS`` beside the parts when there is one); a user only ever names the first part or the
folder.
"""

from __future__ import annotations

import functools
import re
import struct
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


def _read_with_ggml(path: Path) -> tuple[dict[str, Any], list[tuple[str, str, tuple[int, ...], Any, Any]]]:
    """:func:`_parse`'s result by ggml's own ``GGUFReader`` (the files it leaves to it)."""
    reader = _reader(path)
    metadata: dict[str, Any] = {}
    for key, field in reader.fields.items():
        try:
            metadata[key] = field.contents()
        except Exception:  # pragma: no cover - fields of unknown layout are skipped
            continue
    return metadata, [(t.name, t.tensor_type.name, tuple(int(n) for n in t.shape.tolist()), t.data, t.tensor_type)
                      for t in reader.tensors]


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


class _Unsupported(Exception):
    """A GGUF layout :func:`_parse` leaves to ggml's own reader (a big-endian file)."""


# GGUF metadata value types (gguf.GGUFValueType): fixed-size ones by numpy dtype; 8 string, 9 array
_VALUE_DTYPES = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8",
                 12: "<f8"}
_PLAIN_TENSORS = {"F16": np.float16, "F32": np.float32, "F64": np.float64, "I8": np.int8, "I16": np.int16,
                  "I32": np.int32, "I64": np.int64}


def _parse(path: Path) -> tuple[dict[str, Any], list[tuple[str, str, tuple[int, ...], np.ndarray, Any]]]:
    """A little-endian GGUF file's metadata (key -> Python value, as ggml's reader's ``contents()``
    gives them, its ``GGUF.*`` header entries included) and tensors ``(name, type name, ggml dims,
    data, type)`` with the data a memory-mapped view shaped and typed as ggml's reader shapes it.

    ggml's ``GGUFReader`` builds a numpy view per element of every metadata array (seconds for a
    50k-token vocabulary and its merges); this reads each array in one pass. Truncated or
    inconsistent files raise ``ValueError``; a big-endian one raises :class:`_Unsupported`."""
    gguf = _gguf()
    data = np.asarray(np.memmap(path, mode="r"))  # a plain view of the mapping (see _PlainArrays)
    raw = memoryview(data)
    end = len(raw)
    pos = 0

    def take(n: int) -> int:
        nonlocal pos
        if n < 0 or pos + n > end:
            raise ValueError(f"truncated at byte {pos} (needs {n} more of {end})")
        at, pos = pos, pos + n
        return at

    def scalar(kind: int) -> Any:
        dtype = np.dtype(_VALUE_DTYPES[kind])
        return data[take(dtype.itemsize):pos].view(dtype)[0].item()

    length = struct.Struct("<Q").unpack_from

    def string() -> str:
        (n,) = length(raw, take(8))
        return str(raw[take(n):pos], "utf-8")  # (struct and str on the view: a 50k vocabulary 2.5x faster)

    def value(kind: int) -> Any:
        if kind == 8:
            return string()
        if kind in _VALUE_DTYPES:
            return scalar(kind)
        if kind != 9:
            raise ValueError(f"unknown metadata value type {kind}")
        sub, count = scalar(4), scalar(10)
        if count > end - pos:  # every element takes a byte at least
            raise ValueError(f"an array of {count:,} values in {end - pos:,} bytes")
        if sub == 8:
            return [string() for _ in range(count)]
        if sub in _VALUE_DTYPES:
            dtype = np.dtype(_VALUE_DTYPES[sub])
            return data[take(dtype.itemsize * count):pos].view(dtype).tolist()
        raise ValueError(f"arrays of value type {sub} are not read")  # nested arrays: none in practice

    if bytes(raw[take(4):pos]) != b"GGUF":
        raise ValueError("GGUF magic invalid")
    version = scalar(4)
    if version & 0xFFFF == 0:
        raise _Unsupported("a big-endian GGUF file")
    if version not in (2, 3):
        raise ValueError(f"GGUF version {version} (2 and 3 are read)")
    tensor_count, kv_count = scalar(10), scalar(10)
    metadata: dict[str, Any] = {"GGUF.version": version, "GGUF.tensor_count": tensor_count, "GGUF.kv_count": kv_count}
    for _ in range(kv_count):
        key = string()
        metadata[key] = value(scalar(4))
    infos = []
    for _ in range(tensor_count):
        name = string()
        n_dims = scalar(4)
        if n_dims > 8:
            raise ValueError(f"tensor {name}: {n_dims} dimensions")
        dims = tuple(scalar(10) for _ in range(n_dims))
        infos.append((name, dims, scalar(4), scalar(10)))
    alignment = metadata.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise ValueError(f"invalid general.alignment {alignment!r}")
    start = -(-pos // alignment) * alignment
    tensors, names = [], set()
    for name, dims, kind, offset in infos:
        if name in names:
            raise ValueError(f"duplicated tensor {name}")
        names.add(name)
        qtype = gguf.GGMLQuantizationType(kind)
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        n = int(np.prod(dims, dtype=np.int64)) if dims else 1
        shape = tuple(reversed(dims))
        plain = _PLAIN_TENSORS.get(qtype.name)
        nbytes = n * np.dtype(plain).itemsize if plain is not None else n * size // block
        at = start + offset
        if at + nbytes > end:
            raise ValueError(f"tensor {name}: data past the end of the file")
        view = data[at:at + nbytes]
        view = view.view(plain).reshape(shape) if plain is not None else \
            view.reshape(gguf.quant_shape_to_byte_shape(shape, qtype))
        tensors.append((name, qtype.name, dims, view, qtype))
    return metadata, tensors


_DEQUANTIZE_BLOCKS = 1 << 16  # blocks per call of ggml's per-block dequantiser (~2 M values)


def _dequantize(raw: np.ndarray, qtype: Any) -> np.ndarray:
    """ggml's dequantisation of a tensor's raw data (``gguf.quants.dequantize``), float32. For a
    block type without lookup grids, ggml's own per-block function is called over 65k blocks at a
    time: ``gguf.quants`` calls it 16 rows at a time, whose per-call overhead was ~2 s of loading
    SmolLM2. The arithmetic is ggml's, element by element, so the values are the same."""
    gguf = _gguf()
    kind = getattr(gguf.quants, qtype.name, None)
    blocks_fn = getattr(kind, "dequantize_blocks", None)
    if blocks_fn is None or getattr(kind, "grid_shape", (0, 0)) != (0, 0) or qtype.name in _PLAIN_TENSORS:
        return np.asarray(gguf.quants.dequantize(raw, qtype), dtype=np.float32)
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = np.asarray(raw, dtype=np.uint8).reshape(-1, size)
    out = np.empty((blocks.shape[0], block), dtype=np.float32)
    for start in range(0, blocks.shape[0], _DEQUANTIZE_BLOCKS):
        out[start:start + _DEQUANTIZE_BLOCKS] = blocks_fn(blocks[start:start + _DEQUANTIZE_BLOCKS])
    shape = (*raw.shape[:-1], raw.shape[-1] // size * block)
    return out.reshape(shape)


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
        values = _dequantize(self.raw, self._type)
        if not values.flags.writeable:  # F32/F16 come straight from the read-only memory map
            values = values.copy()
        return torch.from_numpy(np.ascontiguousarray(values).reshape(self.shape))


class GGUFFile:
    """A GGUF file's ``metadata`` (key -> Python value; the tokenizer's long arrays included) and
    ``tensors`` (name -> :class:`GGUFTensor`), memory-mapped."""

    def __init__(self, path: str | Path) -> None:
        self.path = resolve_gguf(path)
        try:
            try:
                self.metadata, tensors = _parse(self.path)
            except _Unsupported:
                self.metadata, tensors = _read_with_ggml(self.path)
        except Exception as e:  # ValueError/struct errors on bad files
            raise CheckpointError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from None
        self.tensors: dict[str, GGUFTensor] = {}
        for name, kind, dims, data, qtype in tensors:
            shape = tuple(int(n) for n in reversed(dims))  # ggml's ne is innermost-first
            self.tensors[name] = GGUFTensor(name, kind, shape, data, qtype)

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
    files opened are kept (the model and its tokenizer read the same file, and every metadata array
    is parsed up front: ~1 s for a 262k-token vocabulary)."""
    file = resolve_gguf(path)
    stat = file.stat()
    return _open(str(file), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _open(path: str, size: int, mtime_ns: int) -> GGUFFile:
    return GGUFFile(path)
