"""Files split into parts, as wheels ship them to stay under a size limit (``model.gguf.part00``,
``.part01`` ...; CTranslate2's ``model.bin.part1`` in one wheel and ``.part2`` in another), joined
once into a cache: ``$TATLAS_CACHE`` or ``~/.cache/tatlas``.

:func:`join_parts` checks each part against its SHA-256 where one is known (a ``SHA256SUMS`` file,
a wheel's ``RECORD``) before joining, writes beside the destination and renames (a reader never sees
a half-joined file), and reuses a joined file while its size is the parts' total.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from .checkpoint import CheckpointError

__all__ = ["cache_dir", "file_sha256", "join_parts", "sums_file"]


def cache_dir() -> Path:
    """Where joined multi-part files go: ``$TATLAS_CACHE`` or ``~/.cache/tatlas``."""
    return Path(os.environ.get("TATLAS_CACHE") or Path.home() / ".cache" / "tatlas")


def file_sha256(path: Path) -> str:
    """The file's SHA-256, hex."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def sums_file(path: Path) -> dict[str, str]:
    """A ``sha256sum`` listing (``<hex>  <name>`` per line; absent file: ``{}``) -> ``{name: hex}``."""
    if not path.is_file():
        return {}
    listed = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) == 2:
            listed[fields[1].lstrip("*")] = fields[0].lower()
    return listed


def join_parts(parts: Sequence[Path], out: Path, *, sha256: str | None = None,
               digests: Mapping[Path, str] | None = None) -> Path:
    """``parts`` concatenated in order into ``out`` (written once through a temporary file and an
    atomic rename; reused while its size is the parts' total). ``digests``: a part's expected
    SHA-256 (hex; from a ``SHA256SUMS`` or a wheel's ``RECORD``), checked before joining;
    ``sha256``: the joined file's, checked as it is written."""
    parts = [Path(p) for p in parts]
    missing = [str(p) for p in parts if not p.is_file()]
    if missing or not parts:
        raise CheckpointError(f"missing part(s): {', '.join(missing) or 'none given'}")
    total = sum(p.stat().st_size for p in parts)
    if out.is_file() and out.stat().st_size == total:
        return out
    for part in parts:
        want = (digests or {}).get(part)
        if want is not None and file_sha256(part) != want.lower():
            raise CheckpointError(f"{part}: SHA-256 does not match its listed digest (a corrupt or partial download)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
    h = hashlib.sha256()
    try:
        with tmp.open("wb") as dst:
            for part in parts:
                with part.open("rb") as src:
                    while block := src.read(1 << 22):
                        dst.write(block)
                        h.update(block)
        if sha256 is not None and h.hexdigest() != sha256.lower():
            raise CheckpointError(f"{out.name}: the joined parts' SHA-256 is {h.hexdigest()}, expected "
                                  f"{sha256.lower()} (a corrupt or partial part)")
        tmp.replace(out)  # atomic: a reader never sees a half-joined file
    finally:
        tmp.unlink(missing_ok=True)
    return out
