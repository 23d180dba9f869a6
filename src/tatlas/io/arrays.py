"""NumPy ``.npy``/``.npz`` files read without pickle, with one-line errors that never advise loading
a file unsafely (numpy's own message for a file that is not an array file suggests ``allow_pickle``)."""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

_MAGIC = {b"\x93NUMPY": ".npy array", b"PK\x03\x04": ".npz archive", b"PK\x05\x06": ".npz archive"}


def numpy_kind(path: str | os.PathLike[str]) -> str | None:
    """``".npy array"`` or ``".npz archive"`` from the file's first bytes; ``None`` for anything else."""
    with open(path, "rb") as f:
        head = f.read(6)
    return next((kind for magic, kind in _MAGIC.items() if head.startswith(magic)), None)


def load_numpy(path: str | os.PathLike[str], error: type[Exception] = ValueError) -> Any:
    """``np.load(path, allow_pickle=False)``: an array or an ``NpzFile``. A file that is not an array
    file (text, a pickle, a torn download) or that holds Python objects is ``error`` naming it."""
    path = Path(path)
    try:
        kind = numpy_kind(path)
    except OSError as e:
        raise error(f"{path}: cannot be read ({' '.join(str(e).split())})") from None
    if kind is None:
        raise error(f"{path}: not a NumPy .npy or .npz file (its first bytes are neither)")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError) as e:  # zip version
        text = " ".join(str(e).split())
        if "pickle" in text:
            text = "it holds Python objects, which are not read (only numeric arrays)"
        raise error(f"{path}: not a readable {kind} ({text})") from None
