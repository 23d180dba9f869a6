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
import threading
import warnings
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


_LISTED = 20  # names shown per kind of mismatch; the rest are counted


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:_LISTED])
    return shown + (f", ... and {len(items) - _LISTED} more" if len(items) > _LISTED else "")


class CheckpointMismatchError(CheckpointError):
    """State-dict keys, shapes or kinds of dtype disagree with the model; the message lists each
    kind of problem with its count (the first 20 names of each; all are in the attributes)."""

    def __init__(self, missing: list[str], unexpected: list[str], mismatched: list[tuple[str, tuple, tuple]],
                 wrong_dtype: list[tuple[str, torch.dtype, torch.dtype]] | None = None):
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
        self.wrong_dtype = wrong_dtype or []
        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: {_names(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {_names(unexpected)}")
        if mismatched:
            parts.append(f"mis-shaped {len(mismatched)}: "
                         + _names([f"{k} (model {list(m)}, checkpoint {list(c)})" for k, m, c in mismatched]))
        if self.wrong_dtype:
            parts.append(f"wrong dtype {len(self.wrong_dtype)}: "
                         + _names([f"{k} (model {m}, checkpoint {c})" for k, m, c in self.wrong_dtype]))
        super().__init__("checkpoint does not fit the model: " + "; ".join(parts))


def read_json(path: str | Path) -> Any:
    """A JSON file's content; a missing or malformed file is a :class:`CheckpointError` naming it
    (and, for bad JSON, the line and column)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: cannot be read as JSON text ({' '.join(str(e).split())})") from None


def _kind(dtype: torch.dtype) -> str:
    if dtype.is_floating_point:
        return "float"
    return "complex" if dtype.is_complex else "bool" if dtype == torch.bool else "int"


def check_state_dict(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``state`` has exactly the model's tensors and
    shapes, each of the same kind of dtype (a float tensor where the model has a float one; the
    precision may differ)."""
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    mismatched = sorted(
        (k, tuple(own[k].shape), tuple(state[k].shape))
        for k in own
        if k in state and tuple(own[k].shape) != tuple(state[k].shape)
    )
    wrong_dtype = sorted(
        ((k, own[k].dtype, state[k].dtype) for k in own
         if k in state and isinstance(state[k], Tensor) and _kind(own[k].dtype) != _kind(state[k].dtype)),
        key=lambda item: item[0],
    )
    if missing or unexpected or mismatched or wrong_dtype:
        raise CheckpointMismatchError(missing, unexpected, mismatched, wrong_dtype)


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
    # one temporary file per writer: two processes saving the same path (a converted-weights cache
    # entry, io/converted.py) each rename a whole file into place, never a mix of both
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
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
        raise CheckpointError(f"{path}: not a readable safetensors file ({' '.join(str(e).split())})") from None
    return tensors, metadata


def read_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], str, dict[str, Any], dict[str, str]]:
    """Our checkpoint -> ``(state, system, config_dict, metadata)`` with tied tensors restored."""
    tensors, meta = read_safetensors(path)
    if "tatlas.system" not in meta:
        raise CheckpointError(f"{path}: a safetensors file without tatlas metadata (not a tatlas checkpoint)")
    config = _metadata_json(path, meta, "tatlas.config", None)
    aliases = _metadata_json(path, meta, "tatlas.aliases", "{}")
    if not all(isinstance(t, str) and t in tensors for t in aliases.values()):
        raise CheckpointError(f"{path}: tatlas.aliases names tensors the file does not hold (a corrupt checkpoint)")
    for alias, target in aliases.items():
        tensors[alias] = tensors[target]
    return tensors, meta["tatlas.system"], config, meta


def _metadata_json(path: str | Path, meta: dict[str, str], key: str, default: str | None) -> dict[str, Any]:
    """A metadata entry that holds a JSON object; a missing or malformed one is a one-line error."""
    text = meta.get(key, default)
    if text is None:
        raise CheckpointError(f"{path}: tatlas metadata without {key} (a corrupt checkpoint)")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: {key} is not valid JSON ({e}; a corrupt checkpoint)") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: {key} holds {type(value).__name__}, expected a JSON object (a corrupt checkpoint)")
    return value


def load_torch_file(path: str | Path) -> dict[str, Any]:
    """A ``.pt``/``.bin`` file through ``torch.load(weights_only=True)``: no code runs."""
    try:
        with warnings.catch_warnings():  # torch warns (two lines on stderr) about any pickle not written by torch.save
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except Exception as e:  # pickle errors come in many types
        raise CheckpointError(f"{path}: cannot be read safely with weights_only=True ({pickle_refusal(e)})") from None


def pickle_refusal(error: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in one line, without torch's advice to load
    it with ``weights_only=False`` (which runs whatever code the file holds)."""
    text = " ".join(str(error).split())
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].strip()
        for cut in (" Please use `torch.serialization", " Check the documentation", " To allowlist"):
            text = text.split(cut)[0]
        return f"it holds objects other than tensors ({text.rstrip('. ')}); only tensors and plain containers load"
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if "TorchScript" in text:
        return ("a TorchScript archive, which torch.load cannot read without running code (OpenAI's CLIP .pt files "
                "load as the 'openai-clip' format, which reads only their tensors)")
    if "weights_only" in first:
        first = "not a file torch.load reads without running code"
    if isinstance(error, KeyError) or "invalid load key" in first:  # the bytes are not a pickle at all
        return f"not a file written by torch.save ({type(error).__name__}: {first})"
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


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
