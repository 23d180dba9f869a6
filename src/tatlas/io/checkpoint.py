"""Checkpoints that load without executing code.

- Our format: one safetensors file whose metadata carries the system name and its config as JSON
  (``tatlas.system``, ``tatlas.config``) and the names of tied tensors (``tatlas.aliases``), so a file
  is enough to rebuild the model.
- Foreign tensors: safetensors files or folders (sharded with ``*.index.json``), and ``.pt``/``.bin``
  only through ``torch.load(weights_only=True)``.
- Strict loading raises one :class:`CheckpointMismatchError` naming every missing, unexpected and
  mis-shaped tensor.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

FORMAT_VERSION = "1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


class CheckpointMismatchError(CheckpointError):
    """State-dict keys or shapes disagree with the model; the message lists every problem."""

    def __init__(self, missing: list[str], unexpected: list[str], mismatched: list[tuple[str, tuple, tuple]]):
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {', '.join(unexpected)}")
        if mismatched:
            parts.append(
                f"mis-shaped {len(mismatched)}: "
                + ", ".join(f"{k} (model {list(m)}, checkpoint {list(c)})" for k, m, c in mismatched)
            )
        super().__init__("checkpoint does not fit the model: " + "; ".join(parts))


def check_state_dict(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``state`` has exactly the model's tensors and shapes."""
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    mismatched = sorted(
        (k, tuple(own[k].shape), tuple(state[k].shape))
        for k in own
        if k in state and tuple(own[k].shape) != tuple(state[k].shape)
    )
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(missing, unexpected, mismatched)


def load_state_strict(model: nn.Module, state: Mapping[str, Tensor], *, assign: bool = False) -> nn.Module:
    """Check then load ``state`` into ``model`` (``assign=True`` for models built on ``meta``)."""
    check_state_dict(model, state)
    model.load_state_dict(state, strict=True, assign=assign)
    return model


def _dedupe(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors that share storage (tied weights) are saved once; the others become aliases."""
    seen: dict[tuple, str] = {}
    tensors, aliases = {}, {}
    for name, t in state.items():
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
        if t.numel() and key in seen:
            aliases[name] = seen[key]
        else:
            seen[key] = name
            tensors[name] = t.detach().contiguous()
    return tensors, aliases


def save_checkpoint(
    path: str | Path, state: Mapping[str, Tensor], *, system: str, config: dict[str, Any],
    extra: dict[str, str] | None = None,
) -> Path:
    """Write ``state`` with its system and config to a safetensors file, atomically (temp + rename)."""
    path = Path(path)
    tensors, aliases = _dedupe(state)
    metadata = {
        "tatlas.format": FORMAT_VERSION,
        "tatlas.system": system,
        "tatlas.config": json.dumps(config),
        "tatlas.aliases": json.dumps(aliases),
        **(extra or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    with open(tmp, "rb") as f:  # the bytes reach the disk before the rename makes them visible
        os.fsync(f.fileno())
    tmp.replace(path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def read_safetensors(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """All tensors of a safetensors file and its metadata; a torn or foreign file is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    return tensors, metadata


def read_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], str, dict[str, Any], dict[str, str]]:
    """Our checkpoint -> ``(state, system, config_dict, metadata)`` with tied tensors restored."""
    tensors, meta = read_safetensors(path)
    if "tatlas.system" not in meta:
        raise CheckpointError(f"{path}: a safetensors file without tatlas metadata (not a tatlas checkpoint)")
    for alias, target in json.loads(meta.get("tatlas.aliases", "{}")).items():
        tensors[alias] = tensors[target]
    return tensors, meta["tatlas.system"], json.loads(meta["tatlas.config"]), meta


def load_torch_file(path: str | Path) -> dict[str, Any]:
    """A ``.pt``/``.bin`` file through ``torch.load(weights_only=True)``: no code runs."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except Exception as e:  # pickle errors come in many types
        raise CheckpointError(f"{path}: cannot be read safely with weights_only=True ({type(e).__name__}: {e})") from None


def read_tensors(path: str | Path) -> dict[str, Tensor]:
    """Tensors from a file (``.safetensors``, ``.pt``, ``.bin``, ``.pth``) or a folder holding
    ``model.safetensors``, a sharded ``model.safetensors.index.json`` or ``pytorch_model.bin``."""
    path = Path(path)
    if path.is_dir():
        index = path / "model.safetensors.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            out: dict[str, Tensor] = {}
            for shard in shards:
                out.update(read_safetensors(path / shard)[0])
            return out
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (path / name).is_file():
                return read_tensors(path / name)
        raise CheckpointError(f"{path}: folder has no model.safetensors, index or pytorch_model.bin")
    if path.suffix == ".safetensors":
        return read_safetensors(path)[0]
    if path.suffix in {".pt", ".pth", ".bin", ".ckpt"}:
        state = load_torch_file(path)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        return state
    raise CheckpointError(f"{path}: unknown checkpoint format (expected .safetensors, .pt, .pth, .bin or a folder)")


def write_hf_folder(folder: str | Path, config: dict[str, Any], tensors: Mapping[str, Tensor], *,
                    extra_json: dict[str, dict[str, Any]] | None = None) -> Path:
    """Write a Hugging Face style folder: ``config.json``, ``model.safetensors`` (tensors stored
    contiguous, ``format: pt``) and any further JSON files (e.g. ``preprocessor_config.json``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    for name, content in (extra_json or {}).items():
        (folder / name).write_text(json.dumps(content, indent=2))
    save_file({k: t.detach().contiguous() for k, t in tensors.items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    return folder
