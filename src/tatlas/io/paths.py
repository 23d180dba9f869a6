"""Where results go, checked before the work that makes them: an output folder that is a file, or an
output file whose folder cannot exist, fails at once with one line, not after an hour of work."""

from __future__ import annotations

import os
from pathlib import Path


class OutputPathError(ValueError):
    """An output location that cannot be written; the message names it and what was expected."""


def _creatable(folder: Path, what: str, shown: Path) -> None:
    """``folder`` is a directory, or can be made: its nearest existing ancestor is a writable directory."""
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise OutputPathError(f"{what} {shown}: expected a folder (or a name to create), but {probe} is a file")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise OutputPathError(f"{what} {shown}: cannot write into {probe} (permission denied)")


def check_output_dir(path: str | os.PathLike[str], what: str = "output folder") -> Path:
    """``path`` is (or can be made) a writable folder; :class:`OutputPathError` if it is a file."""
    path = Path(path)
    _creatable(path, what, path)
    return path


def check_output_file(path: str | os.PathLike[str], what: str = "output file") -> Path:
    """``path`` can be written as a file: not a folder, and its folder exists or can be made."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{what} {path}: expected a file name, got a folder")
    _creatable(path.parent, what, path)
    return path
