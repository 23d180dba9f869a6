"""CTranslate2 model folders: ``model.bin`` (binary version 6), ``config.json`` and vocabularies.

The layout follows CTranslate2's writer (``python/ctranslate2/specs/model_spec.py``,
``ModelSpec._serialize``) and reader (``src/models/model.cc``, ``Model::load``). All integers are
little-endian; a string is a ``u16`` length that counts a closing NUL, then UTF-8 bytes and the NUL::

    u32 binary version (6)      str spec name ("WhisperSpec")      u32 spec revision
    u32 n_vars, then per variable:
        str name, u8 rank, u32 dims[rank], u8 dtype id, u32 nbytes, nbytes of row-major data
    u32 n_aliases, then per alias: str alias, str target

Dtype ids follow ``DataType`` in ``include/ctranslate2/types.h``: 0 float32, 1 int8, 2 int16,
3 int32, 4 float16, 5 bfloat16. Scalars (rank 0) hold attributes such as ``encoder/num_heads``
(int16) or flags (int8). Binary versions 4 and 5 share this layout but carry older semantics
(no ``config.json``, casts without rounding); only version 6 is accepted here.

Quantised weights (converter ``quantization="int8*"``) are stored as int8 ``<name>`` with a float32
``<name>_scale`` of one scale per output row (``127 / max|row|``; rows of a 3-D convolution weight
are its output channels), so ``w ≈ q / scale``; ``int16`` uses one scalar scale for the tensor.
An alias of a quantised weight also aliases its scale, as CTranslate2 does on load.

Variables are read straight out of a private memory map of ``model.bin`` (copy-on-write: the tensors
are writable but the file never changes); only the payloads that sit at an offset not aligned to
their element size are copied.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .checkpoint import CheckpointError

BINARY_VERSION = 6

# dtype id -> (torch dtype, numpy dtype the bytes are read as); bfloat16 is read as int16 and viewed.
_DTYPES: dict[int, tuple[torch.dtype, np.dtype]] = {
    0: (torch.float32, np.dtype("<f4")),
    1: (torch.int8, np.dtype("i1")),
    2: (torch.int16, np.dtype("<i2")),
    3: (torch.int32, np.dtype("<i4")),
    4: (torch.float16, np.dtype("<f2")),
    5: (torch.bfloat16, np.dtype("<i2")),
}
_DTYPE_IDS = {t: i for i, (t, _) in _DTYPES.items()}
_DTYPE_NAMES = ", ".join(f"{i} {str(t).removeprefix('torch.')}" for i, (t, _) in _DTYPES.items())
# Stems CTranslate2 loads vocabularies from (LanguageModel, Whisper: "vocabulary"; seq2seq: the rest).
_VOCAB_STEM = re.compile(r"(?:shared_|source_|target_)?vocabulary(?:_\d+)?")
_ALIAS_SUFFIXES = ("", "_scale", "_zero")  # an alias of w also aliases w_scale and w_zero (model.cc)


@dataclass
class Ct2Model:
    """A CTranslate2 model folder as read by :func:`read_ct2`.

    ``tensors`` holds every stored variable in file order followed by the aliases, each alias the
    very tensor object of its target (and ``<alias>_scale`` that of ``<target>_scale`` where one is
    stored). ``vocabularies`` is keyed by file stem (``vocabulary``, ``shared_vocabulary`` …).
    """

    path: Path  # the model.bin file
    spec: str
    revision: int
    tensors: dict[str, Tensor]
    aliases: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] | None = None
    vocabularies: dict[str, list[str]] = field(default_factory=dict)

    @property
    def variables(self) -> dict[str, Tensor]:
        """The stored variables only (no aliases), in file order."""
        derived = {a + s for a in self.aliases for s in _ALIAS_SUFFIXES}
        return {k: v for k, v in self.tensors.items() if k not in derived}

    @property
    def vocabulary(self) -> list[str] | None:
        """The model's one vocabulary (``vocabulary.*``, else ``shared_vocabulary.*``), if present."""
        return self.vocabularies.get("vocabulary", self.vocabularies.get("shared_vocabulary"))


class _Reader:
    """Cursor over the mapped bytes; every read names what it wanted when the file ends first."""

    def __init__(self, path: Path, buf: mmap.mmap):
        self.path, self.buf, self.pos = path, buf, 0

    def fail(self, problem: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: {problem}")

    def take(self, n: int, what: str) -> int:
        start = self.pos
        if start + n > len(self.buf):
            raise self.fail(f"truncated: {what} needs {n} bytes at offset {start}, "
                            f"only {len(self.buf) - start} left")
        self.pos += n
        return start

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack_from(fmt, self.buf, self.take(struct.calcsize(fmt), what))

    def string(self, what: str) -> str:
        (n,) = self.unpack("<H", f"{what} length")
        if n == 0:
            raise self.fail(f"{what} at offset {self.pos - 2} has length 0 (a string counts its NUL)")
        start = self.take(n, what)
        raw = bytes(self.buf[start:start + n])
        if raw[-1] != 0:
            raise self.fail(f"{what} at offset {start} is not NUL-terminated")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} at offset {start} is not UTF-8") from None


def _model_file(path: Path) -> Path:
    file = path / "model.bin" if path.is_dir() else path
    if not file.is_file():
        raise CheckpointError(f"{file}: no such file" + (" (not a CTranslate2 model folder)" if path.is_dir() else ""))
    return file


def _tensor(r: _Reader, start: int, shape: tuple[int, ...], dtype_id: int) -> Tensor:
    torch_dtype, np_dtype = _DTYPES[dtype_id]
    count = math.prod(shape)
    array = np.frombuffer(r.buf, dtype=np_dtype, count=count, offset=start)
    if start % np_dtype.itemsize:  # misaligned payloads are copied (kernels may assume alignment)
        array = array.copy()
    t = torch.from_numpy(array)
    if torch_dtype == torch.bfloat16:
        t = t.view(torch.bfloat16)
    return t.reshape(shape)


def _read_vocabularies(folder: Path) -> dict[str, list[str]]:
    """Every ``*vocabulary*.json`` / ``.txt`` CTranslate2 would load; ``.json`` wins, as in ``load_vocabulary``."""
    out: dict[str, list[str]] = {}
    for file in sorted(folder.iterdir()):
        if not (file.suffix in (".json", ".txt") and _VOCAB_STEM.fullmatch(file.stem) and file.is_file()):
            continue
        if file.suffix == ".txt" and (folder / f"{file.stem}.json").is_file():
            continue
        try:
            if file.suffix == ".json":
                tokens = json.loads(file.read_text(encoding="utf-8"))
                if not (isinstance(tokens, list) and all(isinstance(t, str) for t in tokens)):
                    raise CheckpointError(f"{file}: a vocabulary must be a JSON list of strings")
            else:  # one token per line; '\r' is stripped only when every line ends with it
                lines = file.read_bytes().decode("utf-8").split("\n")
                if lines[-1] == "":
                    lines.pop()
                if lines and all(line.endswith("\r") for line in lines):
                    lines = [line[:-1] for line in lines]
                tokens = lines
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{file}: not a readable vocabulary ({e})") from None
        out[file.stem] = tokens
    return out


def _header(path: Path) -> tuple[_Reader, str, int]:
    """Map ``model.bin`` and read its version, spec name and revision: (reader after them, spec, revision)."""
    file = _model_file(path)
    with open(file, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise CheckpointError(f"{file}: truncated: the file is empty")
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    r = _Reader(file, buf)
    (version,) = r.unpack("<I", "binary version")
    if version != BINARY_VERSION:
        raise r.fail(f"CTranslate2 binary version {version}, expected {BINARY_VERSION}"
                     + (" (not a CTranslate2 model.bin?)" if version > 255 else ""))
    spec = r.string("spec name")
    (revision,) = r.unpack("<I", "spec revision")
    return r, spec, revision


def ct2_spec(path: str | Path) -> str:
    """The spec name of a CTranslate2 model (``"WhisperSpec"`` …) from its header alone."""
    return _header(Path(path))[1]


def read_ct2(path: str | Path) -> Ct2Model:
    """Read a CTranslate2 model: a folder holding ``model.bin`` (plus ``config.json`` and vocabulary
    files when present), or the ``model.bin`` path itself (its folder supplies the rest).

    Raises a one-line :class:`CheckpointError` naming the file and the problem for a missing file,
    another binary version, a truncated file, an unknown dtype, a payload that disagrees with its
    shape, an alias to nothing, or bytes left after the aliases.
    """
    path = Path(path)
    r, spec, revision = _header(path)
    file = r.path
    (n_vars,) = r.unpack("<I", "variable count")
    tensors: dict[str, Tensor] = {}
    for i in range(n_vars):
        name = r.string(f"name of variable {i}")
        (rank,) = r.unpack("<B", f"rank of {name!r}")
        shape = r.unpack(f"<{rank}I", f"shape of {name!r}")
        dtype_id, nbytes = r.unpack("<BI", f"dtype and size of {name!r}")
        if dtype_id not in _DTYPES:
            raise r.fail(f"variable {name!r} has unknown dtype id {dtype_id} (known: {_DTYPE_NAMES})")
        expected = math.prod(shape) * _DTYPES[dtype_id][1].itemsize
        if nbytes != expected:
            raise r.fail(f"variable {name!r} stores {nbytes} bytes, but shape {list(shape)} of "
                         f"{str(_DTYPES[dtype_id][0]).removeprefix('torch.')} needs {expected}")
        if name in tensors:
            raise r.fail(f"variable {name!r} is stored twice")
        start = r.take(nbytes, f"data of {name!r}")
        tensors[name] = _tensor(r, start, shape, dtype_id)
    (n_aliases,) = r.unpack("<I", "alias count")
    aliases: dict[str, str] = {}
    for i in range(n_aliases):
        alias = r.string(f"alias {i}")
        aliases[alias] = r.string(f"target of alias {alias!r}")
    if r.pos != len(r.buf):
        raise r.fail(f"{len(r.buf) - r.pos} unexpected bytes after the aliases (offset {r.pos})")
    for alias, target in aliases.items():
        if target not in tensors:
            raise r.fail(f"alias {alias!r} points to {target!r}, which is not stored")
        if alias in tensors:
            raise r.fail(f"alias {alias!r} is also a stored variable")
    for alias, target in aliases.items():
        for suffix in _ALIAS_SUFFIXES:
            if target + suffix in tensors:
                tensors[alias + suffix] = tensors[target + suffix]

    folder = file.parent
    config = None
    if (folder / "config.json").is_file():
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{folder / 'config.json'}: not readable JSON ({e})") from None
    return Ct2Model(file, spec, revision, tensors, aliases, config, _read_vocabularies(folder))


def dequantize(tensors: Mapping[str, Tensor], dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
    """Floating tensors in ``dtype``: an integer ``<name>`` with a ``<name>_scale`` becomes
    ``q * (1 / scale)`` (one scale per row, i.e. per first-dimension index, or one scalar scale),
    computed in float32 as CTranslate2's ``Dequantize`` does; the scales are dropped; float16 and
    bfloat16 tensors are cast; integer tensors without a scale (``num_heads``, flags) stay as they
    are. Tensors that were one object (aliases) remain one object."""
    seen: dict[int, Tensor] = {}
    out: dict[str, Tensor] = {}
    for name, t in tensors.items():
        base = name.removesuffix("_scale")
        if base != name and base in tensors and not tensors[base].is_floating_point():
            continue  # a quantisation scale, consumed with its weight
        if name + "_zero" in tensors:
            raise CheckpointError(f"{name}: zero-point (AWQ) quantisation is not supported")
        if id(t) in seen:
            out[name] = seen[id(t)]
            continue
        if t.is_floating_point():
            new = t.to(dtype)
        elif name + "_scale" in tensors:
            scale = tensors[name + "_scale"].to(torch.float32)
            if scale.dim() == 0:
                inv = 1.0 / scale
            elif scale.dim() == 1 and t.dim() >= 1 and scale.shape[0] == t.shape[0]:
                inv = (1.0 / scale).reshape(-1, *([1] * (t.dim() - 1)))
            else:
                raise CheckpointError(f"{name}: scale of shape {list(scale.shape)} does not fit "
                                      f"weight of shape {list(t.shape)} (one per row, or a scalar)")
            new = (t.to(torch.float32) * inv).to(dtype)
        else:
            new = t
        out[name] = seen[id(t)] = new
    return out


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def _stored(tensors: Mapping[str, Tensor], aliases: Mapping[str, str]) -> dict[str, Tensor]:
    """The tensors to store: names that an alias covers (``a``, ``a_scale``, ``a_zero``) are dropped
    when they equal their target's tensor, an error otherwise."""
    out = dict(tensors)
    for alias, target in aliases.items():
        if alias == target or alias in aliases.values():
            raise CheckpointError(f"alias {alias!r} -> {target!r}: aliases must point to stored tensors")
        if target not in tensors:
            raise CheckpointError(f"alias {alias!r} points to {target!r}, which is not among the tensors")
        for suffix in _ALIAS_SUFFIXES:
            given = tensors.get(alias + suffix)
            if given is None:
                continue
            mine = tensors.get(target + suffix)
            if mine is None or not (given is mine or (given.dtype == mine.dtype and given.shape == mine.shape
                                                         and torch.equal(given, mine))):
                raise CheckpointError(f"{alias + suffix!r} is an alias of {target + suffix!r} but was given a different tensor")
            del out[alias + suffix]
    return out


def _string(s: str) -> bytes:
    raw = s.encode("utf-8") + b"\0"
    if len(raw) > 0xFFFF:
        raise CheckpointError(f"name of {len(raw)} bytes is longer than the format's 65535: {s[:60]!r}…")
    return struct.pack("<H", len(raw)) + raw


def write_ct2(
    path: str | Path,
    spec_name: str,
    revision: int,
    tensors: Mapping[str, Tensor],
    aliases: Mapping[str, str] | None = None,
    config: Mapping[str, Any] | None = None,
    vocabulary: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """Write a CTranslate2 model folder at ``path``: ``model.bin`` (binary version 6, variables in
    the order given, then the aliases), ``config.json`` (as CTranslate2 writes it: sorted keys,
    indent 2) and the vocabulary as ``vocabulary.json`` (a list of tokens) or one
    ``<stem>.json`` per entry of a mapping (``{"shared_vocabulary": [...]}``). Each file is written
    to a temporary name and renamed; ``model.bin`` comes last. ``tensors`` may contain the aliases'
    own names (as :attr:`Ct2Model.tensors` does): they are stored once, under the target.
    ``path`` is the folder (or its ``model.bin``). Returns the folder.
    """
    folder = Path(path)
    if folder.name == "model.bin":
        folder = folder.parent
    aliases = dict(aliases or {})
    stored = _stored(tensors, aliases)
    header = [struct.pack("<I", BINARY_VERSION), _string(spec_name), struct.pack("<II", revision, len(stored))]
    payloads: list[tuple[bytes, np.ndarray]] = []
    for name, t in stored.items():
        if not isinstance(t, Tensor):
            raise CheckpointError(f"{name!r}: expected a torch tensor, got {type(t).__name__}")
        if t.dtype not in _DTYPE_IDS:
            raise CheckpointError(f"{name!r} has dtype {t.dtype}; CTranslate2 stores {_DTYPE_NAMES}")
        if t.dim() > 255 or any(d > 0xFFFFFFFF for d in t.shape):
            raise CheckpointError(f"{name!r} of shape {list(t.shape)} does not fit the format (rank ≤ 255, dims < 2**32)")
        data = t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
        if data.nbytes > 0xFFFFFFFF:
            raise CheckpointError(f"{name!r} holds {data.nbytes} bytes; the format stores at most 2**32 - 1 per tensor")
        meta = (_string(name) + struct.pack(f"<B{t.dim()}I", t.dim(), *t.shape)
                + struct.pack("<BI", _DTYPE_IDS[t.dtype], data.nbytes))
        payloads.append((meta, data))
    footer = [struct.pack("<I", len(aliases))] + [_string(a) + _string(t) for a, t in aliases.items()]

    def write_bin(f) -> None:
        for part in header:
            f.write(part)
        for meta, data in payloads:
            f.write(meta)
            f.write(memoryview(data))
        for part in footer:
            f.write(part)

    if isinstance(vocabulary, str):
        raise CheckpointError("vocabulary must be a list of tokens (or a mapping of them), not a string")
    vocabs = {} if vocabulary is None else dict(vocabulary) if isinstance(vocabulary, Mapping) else {"vocabulary": vocabulary}
    for stem in vocabs:
        if not _VOCAB_STEM.fullmatch(stem):
            raise CheckpointError(f"vocabulary name {stem!r} is not one CTranslate2 reads "
                                  "(vocabulary, shared_vocabulary, source_vocabulary, target_vocabulary)")

    folder.mkdir(parents=True, exist_ok=True)
    for stem, tokens in vocabs.items():
        text = json.dumps(list(tokens), indent=2)
        _write_atomic(folder / f"{stem}.json", lambda f, text=text: f.write(text.encode("utf-8")))
    if config is not None:
        text = json.dumps(dict(config), indent=2, sort_keys=True) + "\n"
        _write_atomic(folder / "config.json", lambda f: f.write(text.encode("utf-8")))
    _write_atomic(folder / "model.bin", write_bin)
    dir_fd = os.open(folder, os.O_RDONLY)  # the renames reach the disk too
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return folder
