"""Training checkpoints that survive being killed at any instant.

Layout under ``<out_dir>/checkpoints/``::

    step-00000100/
        model.safetensors     weights (single process / DDP), with tatlas system + config metadata
                              when the model is a registered system (loadable by ``tatlas.load``)
        dcp/                  FSDP2: model and optimizer shards (torch.distributed.checkpoint)
        trainer.pt            step, data position, scheduler, optimizer (single/DDP), config
        rng-rank00000.pt      Python, NumPy, torch (and CUDA) RNG states of each rank
        MANIFEST.json         written last: every file's size and SHA-256
    latest                    the newest committed folder's name (a convenience for people)

Every ``.pt`` file loads with ``torch.load(weights_only=True)``: tensors, dicts, lists, numbers,
strings only.

Atomicity: a checkpoint is written into a hidden staging folder ``.step-00000100.tmp`` in the same
directory; every file and the folder are fsync'ed, the manifest is written (itself atomically),
then the folder is renamed to ``step-00000100`` and the parent directory fsync'ed. Only then is
``latest`` replaced (temporary file, fsync, rename) and the oldest checkpoints beyond the newest K
moved aside and deleted. A checkpoint counts only if its manifest is present and every file has the
recorded size and hash; :meth:`CheckpointStore.newest_complete` warns about and skips any other,
so a torn or corrupted checkpoint is never resumed from while an older good one exists.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..io import CheckpointError, config_to_dict, load_state_strict, read_checkpoint, read_safetensors, save_checkpoint
from ..io.checkpoint import pickle_refusal
from ..models.registry import system_of

log = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"
LATEST = "latest"
FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"^step-(\d+)$")


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def rng_file_name(rank: int) -> str:
    return f"rng-rank{rank:05d}.pt"


# --------------------------------------------------------------------------- durable file writes


def fsync_path(path: Path) -> None:
    """Flush a file's or a directory's contents to disk."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically: temporary file in the same folder, fsync, rename,
    fsync of the folder. A reader sees the old content or the new, never a mixture."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


def torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` then fsync (the file lives in a staging folder renamed later)."""
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def torch_load(path: Path) -> Any:
    """Load a ``.pt`` file of ours with ``weights_only=True``: no code runs."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors come in many types
        raise CheckpointError(f"{path}: cannot be read with weights_only=True ({pickle_refusal(e)})") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(folder: Path, info: dict[str, Any]) -> None:
    """fsync every file and folder under ``folder``, then write its manifest atomically."""
    files = {}
    for p in _files(folder):
        fsync_path(p)
        files[p.relative_to(folder).as_posix()] = {"size": p.stat().st_size, "sha256": _sha256(p)}
    for d in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        fsync_path(d)
    atomic_write_bytes(folder / MANIFEST, json.dumps({**info, "files": files}, indent=1).encode())


def verify(folder: Path) -> str | None:
    """``None`` when ``folder`` is a complete checkpoint, else the reason it is not."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = manifest["files"]
    except FileNotFoundError:
        return f"no {MANIFEST} (the save did not finish)"
    except (ValueError, KeyError, TypeError) as e:
        return f"unreadable {MANIFEST} ({e})"
    for rel, rec in files.items():
        p = folder / rel
        if not p.is_file():
            return f"{rel} is missing"
        if p.stat().st_size != rec["size"]:
            return f"{rel} has {p.stat().st_size} bytes, the manifest says {rec['size']}"
        if _sha256(p) != rec["sha256"]:
            return f"{rel} does not match its SHA-256 in the manifest (corrupted)"
    return None


# --------------------------------------------------------------------------- the checkpoint folder


class CheckpointStore:
    """The ``checkpoints/`` folder of a run: staging, committing, pruning, finding the newest good one.

    In a distributed run every rank holds one; ``barrier`` synchronises them and only rank 0
    (``is_main``) creates, renames and deletes folders. The folder must be on a file system all
    ranks share.
    """

    def __init__(
        self, root: str | os.PathLike[str], *, keep: int = 3, is_main: bool = True,
        barrier: Callable[[], None] = lambda: None,
    ) -> None:
        self.root = Path(root)
        self.keep, self.is_main, self.barrier = keep, is_main, barrier
        self._verified: set[str] = set()  # folders known good: written by this store or verified once

    def step_dirs(self) -> list[tuple[int, Path]]:
        """Committed-looking folders ``step-N`` (not verified), newest first."""
        if not self.root.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
        return sorted(found, reverse=True)

    def newest_complete(self, *, set_aside: bool = False) -> Path | None:
        """The newest folder that passes :func:`verify`; each newer one that fails is logged as a
        warning naming the reason, and the search goes on to the previous one. ``set_aside`` (a run
        that owns the folder): a failing one is also renamed ``step-N.corrupt``, so it is neither
        resumed from nor counted among the K checkpoints kept."""
        for step, folder in self.step_dirs():
            if self._good(folder):
                return folder
            if set_aside:
                self._set_aside(folder)
        return None

    def _good(self, folder: Path) -> bool:
        """Whether ``folder`` passes :func:`verify` (each folder is hashed once per store); a failure
        is logged as a warning naming the reason."""
        if folder.name in self._verified:
            return True
        reason = verify(folder)
        if reason is None:
            self._verified.add(folder.name)
            return True
        log.warning("checkpoint %s is incomplete or corrupt: %s; trying the previous one", folder, reason)
        return False

    def _set_aside(self, folder: Path) -> None:
        """Rename a corrupt checkpoint ``step-N`` to ``step-N.corrupt`` (kept for a person to look at)."""
        if not self.is_main:
            return
        target = folder.with_name(folder.name + ".corrupt")
        if target.exists():
            target = folder.with_name(f"{folder.name}.corrupt-{os.getpid()}")
        os.replace(folder, target)
        fsync_path(self.root)
        log.warning("moved the corrupt checkpoint %s aside to %s", folder, target.name)

    def corrupt(self) -> list[Path]:
        """Checkpoints set aside as corrupt (``step-N.corrupt``)."""
        return sorted(self.root.glob("step-*.corrupt*")) if self.root.is_dir() else []

    def begin(self, step: int) -> Path:
        """A fresh, empty staging folder for ``step`` (rank 0 makes it; all ranks wait)."""
        staging = self.root / f".{step_dir_name(step)}.tmp"
        if self.is_main:
            self.root.mkdir(parents=True, exist_ok=True)
            for stale in [*self.root.glob(".step-*.tmp"), *self.root.glob(".trash-*")]:  # a run killed mid-save
                shutil.rmtree(stale, ignore_errors=True)
            staging.mkdir()
        self.barrier()
        return staging

    def commit(self, step: int, staging: Path, info: dict[str, Any]) -> Path:
        """Seal the staging folder (manifest), rename it into place, point ``latest`` at it and
        prune. Every rank must have finished writing before it calls this."""
        self.barrier()
        final = self.root / step_dir_name(step)
        if self.is_main:
            write_manifest(staging, {"format": FORMAT_VERSION, "step": step, **info})
            if final.exists():  # e.g. a corrupt checkpoint of this step, skipped when resuming
                self._discard(final)
            os.replace(staging, final)
            fsync_path(self.root)
            atomic_write_bytes(self.root / LATEST, (final.name + "\n").encode())
            self._verified.add(final.name)
            self._prune()
        self.barrier()
        return final

    def _prune(self) -> None:
        """Keep the newest K checkpoints that verify; older ones are deleted, and a corrupt one met on
        the way is set aside (``step-N.corrupt``) rather than counted."""
        good = 0
        for _, folder in self.step_dirs():
            if good >= self.keep:
                self._discard(folder)
                self._verified.discard(folder.name)
            elif self._good(folder):
                good += 1
            else:
                self._set_aside(folder)

    def _discard(self, folder: Path) -> None:
        """Rename aside first (atomic), then delete: a kill mid-delete leaves no half folder under a
        ``step-N`` name."""
        trash = folder.with_name(f".trash-{folder.name}-{os.getpid()}")
        os.replace(folder, trash)
        fsync_path(self.root)
        shutil.rmtree(trash, ignore_errors=True)

    def has_checkpoints(self) -> bool:
        return bool(self.step_dirs())


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A checkpoint folder given by the user: a ``step-N`` folder, or a ``checkpoints/`` folder or
    a run's ``out_dir`` (then its newest complete checkpoint)."""
    path = Path(path)
    if (path / MANIFEST).exists() or _STEP_DIR.match(path.name):
        reason = verify(path)
        if reason is not None:
            raise CheckpointError(f"{path}: not a complete checkpoint: {reason}")
        return path
    for root in (path / "checkpoints", path):
        found = CheckpointStore(root).newest_complete()
        if found is not None:
            return found
    raise CheckpointError(f"{path}: no complete checkpoint found")


# --------------------------------------------------------------------------- RNG states


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch and CUDA RNG states as tensors and plain lists/ints/floats."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": list(mt), "gauss": gauss},
        "numpy": {"kind": str(kind), "keys": [int(k) for k in keys], "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], np.array(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- model weights


def _registered(model: nn.Module) -> Any:
    try:
        return system_of(model)
    except ValueError:  # a plain nn.Module, not a registered tatlas system
        return None


def save_weights(model: nn.Module, state: dict[str, Tensor], path: Path) -> Path:
    """Weights as safetensors. A registered tatlas system gets its system name and config in the
    metadata (``tatlas.load`` rebuilds it); any other module is saved as plain tensors."""
    system = _registered(model)
    if system is not None:
        save_checkpoint(path, state, system=system.name, config=config_to_dict(model.config))
    else:
        from safetensors.torch import save_file

        # tied tensors are saved twice rather than guessing which name owns them
        save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(path),
                  metadata={"tatlas.format": "1"})
    fsync_path(path)
    return path


def load_weights(model: nn.Module, path: Path) -> None:
    """Strictly load :func:`save_weights`' file into ``model`` (names every mismatch)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            tagged = "tatlas.system" in (f.metadata() or {})
    except Exception as e:  # noqa: BLE001  (safetensors raises several types for a bad file)
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    if tagged:
        tensors, name, _, _ = read_checkpoint(path)  # restores tied tensors
        system = _registered(model)
        if system is not None and name != system.name:
            raise CheckpointError(f"{path}: checkpoint is for system {name!r}, the model is {system.name!r}")
    else:
        tensors, _ = read_safetensors(path)
    load_state_strict(model, tensors)
