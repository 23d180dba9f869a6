"""The entry points users touch: ``create``, ``load``, ``save``, ``load_weights``."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .io import (
    CheckpointError,
    check_config,
    check_fields,
    config_from_dict,
    config_to_dict,
    load_state_strict,
    read_checkpoint,
    read_json,
    save_checkpoint,
)
from .io.ctranslate2 import ct2_spec
from .io.gguf import is_gguf
from .models.registry import System, get_system, owner_of, system_of, systems
from .nn.fastpath import optimize_
from .nn.memory import check_fits


_VALUE_OPS = frozenset({  # in-place ops that only write values: nothing to do on the meta device
    "normal_", "uniform_", "fill_", "zero_", "copy_", "mul_", "add_", "sub_", "div_", "clamp_", "clamp_min_",
    "clamp_max_", "erfinv_", "exp_", "log_", "sqrt_", "abs_", "neg_", "random_", "bernoulli_", "exponential_",
    "masked_fill_", "addcmul_", "addcdiv_", "pow_", "tanh_", "sigmoid_", "floor_", "ceil_", "round_", "sign_",
})


_SCALAR_ARITHMETIC = frozenset({"mul", "__mul__", "__rmul__", "div", "__truediv__", "add", "__add__", "__radd__",
                                "sub", "__sub__"})
_UNARY = frozenset({"log", "exp", "sqrt"})  # e.g. a logit scale's initial value


class _SkipMetaInit(torch.overrides.TorchFunctionMode):
    """Parameter initialisation skipped on the meta device (a model built only to receive a
    checkpoint's tensors): on meta, ``normal_``/``uniform_``... run through torch's Python references,
    whose first use imports ``torch._dynamo`` — a second of start-up for values nobody reads. So do
    ``torch.randn(n) * scale`` initialisers (class tokens, latents), a logit scale's ``log`` and
    ``torch.linspace``: 0.5-1.6 s at the first load of a CLIP, a VLM, ImageBind, ImageGPT or an
    Evoformer. They become empty meta tensors of their shape."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _VALUE_OPS:
            target = args[0] if args else kwargs.get("tensor", kwargs.get("self"))  # nn.init passes tensor=
            if isinstance(target, torch.Tensor) and target.is_meta:
                return target
        elif func in (torch.randn, torch.rand, torch.linspace) and kwargs.keys() <= {"dtype", "requires_grad"} \
                and torch.get_default_device().type == "meta":  # initial values, a drop-path schedule: shapes only
            size = args if func is not torch.linspace else args[2:3]  # linspace(start, end, steps)
            return torch.empty(*size, device="meta", **kwargs)
        elif ((name in _SCALAR_ARITHMETIC and len(args) == 2 and type(args[1]) in (int, float))
              or (name in _UNARY and len(args) == 1)) and not kwargs and isinstance(args[0], torch.Tensor) \
                and args[0].is_meta and args[0].is_floating_point():
            return torch.empty(args[0].shape, dtype=args[0].dtype, device="meta")  # (empty_like: Python references too)
        return func(*args, **kwargs)


class _TooManyTensors(Exception):
    pass


def _on_meta(system: System, config: Any, max_tensors: int | None = None) -> nn.Module:
    """``system``'s model built on ``meta`` (no memory, no initialisation). A tensor so large that its
    byte count overflows is a one-line ``MemoryError``; with ``max_tensors`` (what a checkpoint
    holds), a config stating more tensors than that (2**31 layers in a corrupt file) stops as soon as
    it passes them, a :class:`CheckpointError`, instead of building for hours."""
    from torch.nn.modules import module as hooks

    me, created = threading.get_ident(), [0]

    def count(*_: Any) -> None:
        if threading.get_ident() == me:
            created[0] += 1
            if max_tensors is not None and created[0] > max_tensors:
                raise _TooManyTensors

    handles = [hooks.register_module_parameter_registration_hook(count),
               hooks.register_module_buffer_registration_hook(count)]
    try:
        with torch.device("meta"), _SkipMetaInit():
            return system.model_cls(config)
    except _TooManyTensors:
        raise CheckpointError(f"{system.name}: the config describes more than {max_tensors:,} tensors, far more than "
                              "the checkpoint holds (a corrupt or foreign config)") from None
    except (RuntimeError, TypeError) as e:  # a tensor so large that its byte count overflows
        first = (str(e).strip().splitlines() or [""])[0]
        if "overflow" not in first.lower():
            raise
        raise MemoryError(f"{system.name}: a tensor of this config is too large for any memory ({first})") from None
    finally:
        for handle in handles:
            handle.remove()


def _check_size(system: System, config: Any, device: torch.device | str | None, dtype: torch.dtype | None) -> None:
    """Build the model on ``meta`` first (no memory, no initialisation) and refuse, with one line, a
    config whose parameters and buffers cannot fit in the memory ``device`` has free."""
    shadow = _on_meta(system, config)
    tensors = [*shadow.parameters(), *shadow.buffers()]
    size = sum(t.numel() * (dtype.itemsize if dtype is not None and t.is_floating_point() else t.element_size())
               for t in tensors)
    n = sum(t.numel() for t in shadow.parameters())
    check_fits(size, f"{system.name} with {n:,} parameters", device)


def _build(system: System, config: Any, device: torch.device | str | None, dtype: torch.dtype | None) -> nn.Module:
    check_config(config)
    if device is None or torch.device(device).type != "meta":
        _check_size(system, config, device, dtype)
    if device is None or torch.device(device).type == "cpu":
        model = system.model_cls(config)  # no device context: the CPU is the default
    elif torch.device(device).type == "meta":
        model = _on_meta(system, config)
    else:
        with torch.device(device):
            model = system.model_cls(config)
    return model.to(dtype=dtype) if dtype is not None else model


def optimize(model: nn.Module) -> nn.Module:
    """Swap in the model's inference fast path, in place (:func:`tatlas.nn.fastpath.optimize_` plus
    the system's own ``fast_variants``): the same numbers, faster on the CPU without gradients.
    Parameters and state-dict keys are unchanged; training still works (it takes the plain path)."""
    try:
        variants = system_of(model).fast_variants
    except ValueError:  # not a registered system's model: the shared blocks alone
        variants = {}
    return optimize_(model, variants)


def create(
    name: str, preset: str = "tiny", *, device: torch.device | str | None = None,
    dtype: torch.dtype | None = None, fast: bool = False, **overrides: Any,
) -> nn.Module:
    """Build system ``name`` from an exact preset name, with optional config field overrides
    (``dataclasses.replace``, or the config's own ``vary`` where sizes derive from others). Weights
    are randomly initialised. ``fast``: :func:`optimize` it."""
    system = get_system(name)
    config = system.preset(preset)
    if overrides:
        check_fields(type(config), overrides)
        try:
            vary = getattr(config, "vary", None)
            config = vary(**overrides) if vary is not None else dataclasses.replace(config, **overrides)
        except TypeError as e:
            fields = sorted(f.name for f in dataclasses.fields(config))
            raise ValueError(f"bad override for {name}: {e}; valid fields: {fields}") from None
    model = _build(system, config, device, dtype)
    return optimize(model) if fast else model


def save(model: nn.Module, path: str | Path) -> Path:
    """Save a tatlas model as one safetensors file carrying its system and config."""
    system = system_of(model)
    return save_checkpoint(path, model.state_dict(), system=system.name, config=config_to_dict(model.config))


def _config_diff(a: Any, b: Any) -> list[str]:
    da, db = config_to_dict(a), config_to_dict(b)
    return [f"{k}: model {da.get(k)!r}, checkpoint {db.get(k)!r}" for k in sorted(set(da) | set(db)) if da.get(k) != db.get(k)]


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load our checkpoint into an existing model; another system or config is a clear error."""
    state, system_name, config_dict, _ = read_checkpoint(path)
    system = system_of(model)
    if system_name != system.name:
        raise CheckpointError(f"{path}: checkpoint is for system {system_name!r}, the model is {system.name!r}")
    config = config_from_dict(system.config_cls, config_dict)
    if config != model.config:
        raise CheckpointError(f"{path}: checkpoint config differs from the model's: {'; '.join(_config_diff(model.config, config))}")
    return load_state_strict(model, state)


def load(
    path: str | Path, *, format: str | None = None, system: str | None = None,
    device: torch.device | str | None = None, dtype: torch.dtype | None = None, fast: bool = False,
    cache: bool = False,
) -> nn.Module:
    """Load a model from our checkpoint, a Hugging Face folder (recognised by ``config.json``'s
    ``model_type``), or a foreign format named by ``format`` (e.g. ``"openai-whisper"``).
    ``system`` states what you expect; a checkpoint of another system is an error. ``fast``:
    :func:`optimize` it for inference. ``cache``: keep a foreign checkpoint's conversion in the
    user's cache and load that, memory-mapped, while the source is unchanged
    (:mod:`tatlas.io.converted`)."""
    path = Path(path)
    if cache and path.exists() and not (path.is_file() and path.suffix == ".safetensors"):
        model = _load_converted(path, format, system)
        model = model.to(device or "cpu")
        model = model.to(dtype=dtype) if dtype is not None else model
    else:
        model = _load(path, format, system, device, dtype)
    return optimize(model) if fast else model


def _load_converted(path: Path, format: str | None, system: str | None) -> nn.Module:
    """``path`` converted once into our format in the cache, then read from there (the first load
    converts, writes the entry and reads it back, so every load holds the same mapped weights)."""
    from .io import converted

    target = converted.entry(path, format, system)
    if target.is_file():
        try:
            return _load(target, None, system, None, None)
        except CheckpointError:
            pass  # a damaged entry: convert again
    model = _load(path, format, system, None, None)
    try:
        save(model, target)
    except (OSError, ValueError):  # (a CheckpointError is a ValueError)
        return model  # an unwritable cache (or a model our format cannot hold): the conversion as it is
    try:
        cached = _load(target, None, system, None, None)
    except CheckpointError:
        target.unlink(missing_ok=True)
        return model
    for old in converted.stale_entries(path, target):
        old.unlink(missing_ok=True)
    return cached


def _load(path: Path, format: str | None, system: str | None, device: Any, dtype: torch.dtype | None) -> nn.Module:
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if format is not None:
        return _load_by(path, "formats", format, "unknown checkpoint format {key!r}; known formats: {known}", system,
                        device, dtype, error=ValueError)
    if is_gguf(path):  # llama.cpp's format (a file, its .partNN pieces, or a folder holding them)
        return _load_by(path, "formats", "gguf", "unknown checkpoint format {key!r}; known formats: {known}", system,
                        device, dtype, error=ValueError)
    if path.is_dir() and (path / "model.bin").is_file():  # a CTranslate2 folder (e.g. faster-whisper's)
        return _load_by(path, "ct2_specs", ct2_spec(path), "{path}: CTranslate2 model spec {key!r} is not supported; "
                        "supported: {known}", system, device, dtype)
    if path.is_dir() and (path / "config.json").is_file():
        hf = read_json(path / "config.json")
        if not isinstance(hf, dict):
            raise CheckpointError(f"{path / 'config.json'}: expected a JSON object, got {type(hf).__name__}")
        model_type = hf.get("model_type")
        if not isinstance(model_type, str):
            raise CheckpointError(f"{path / 'config.json'}: model_type: expected the name of an architecture "
                                  f"(e.g. 'llama'), got {model_type!r}")
        return _load_by(path, "hf_model_types", model_type, "{path}: Hugging Face model_type {key!r} is not "
                        "supported; supported: {known}", system, device, dtype)
    if path.is_file() and path.suffix == ".safetensors":
        state, system_name, config_dict, _ = read_checkpoint(path)
        owner = get_system(system_name)
        return _finish(owner, config_from_dict(owner.config_cls, config_dict), state, path, system, device, dtype)
    known = sorted(k for s in systems().values() for k in s.formats)
    raise CheckpointError(
        f"{path}: not a tatlas checkpoint (.safetensors with tatlas metadata) nor a folder with config.json; "
        f"a file in another format loads when its format is named (one of: {', '.join(known)})"
    )


def _load_by(path: Path, table: str, key: Any, unknown: str, expected: str | None, device: Any,
             dtype: torch.dtype | None, *, error: type[Exception] = CheckpointError) -> nn.Module:
    """Load ``path`` with the converter registered under ``key`` in the systems' ``table``
    (``formats``, ``ct2_specs`` or ``hf_model_types``); an unknown key is ``error(unknown)``, the
    message formatted with ``path``, ``key`` and the ``known`` keys."""
    owner = owner_of(table, key)
    if owner is not None:
        try:
            config, state = getattr(owner, table)[key](path)
        except (ValueError, TypeError) as e:
            text = str(e)
            if isinstance(e, ValueError) and not ("invalid literal" in text or "could not convert" in text):
                raise  # the converter's own one-line errors (CheckpointError ...) pass as they are
            raise CheckpointError(f"{path}: {_config_value_error(path, e)}") from None
        except (KeyError, AttributeError, IndexError, ZeroDivisionError, OverflowError) as e:  # a malformed file
            text = f"missing {e.args[0]!r}" if isinstance(e, KeyError) and e.args else " ".join(str(e).split())
            raise CheckpointError(f"{path}: not a valid {key} checkpoint ({type(e).__name__}: {text})") from None
        return _finish(owner, config, state, path, expected, device, dtype)
    known = sorted(k for s in systems().values() for k in getattr(s, table))
    raise error(unknown.format(path=path, key=key, known=known))


def _config_value_error(path: Path, error: Exception) -> str:
    """A converter's ``int("abc")``-style failure, with the config field that holds the bad value
    when a config file beside the weights has it: ``config.json: n_layer = 'abc' (int() ...)``."""
    text = " ".join(str(error).split())
    bad = text.rsplit(": ", 1)[-1].strip("'\"") if "invalid literal" in text or "could not convert" in text else None
    config = path / "config.json" if path.is_dir() else None
    if bad is not None and config is not None and config.is_file():
        try:
            hits = _keys_holding(read_json(config), bad)
        except CheckpointError:
            hits = []
        if hits:
            return f"config.json: {', '.join(hits)} = {bad!r} is not a number of the type expected ({text})"
    return f"a config value of the wrong type ({type(error).__name__}: {text})"


def _keys_holding(data: Any, value: str, prefix: str = "") -> list[str]:
    if isinstance(data, dict):
        return [k for key, v in data.items() for k in _keys_holding(v, value, f"{prefix}{key}.")]
    return [prefix.rstrip(".")] if isinstance(data, str) and data == value else []


def _finish(owner: System, config: Any, state: dict, path: Path, expected: str | None,
            device: Any, dtype: torch.dtype | None) -> nn.Module:
    if expected is not None and expected != owner.name:
        raise CheckpointError(f"{path}: checkpoint is for system {owner.name!r}, expected {expected!r}")
    check_config(config)
    model = _on_meta(owner, config, max_tensors=2 * len(state) + 1024)  # tied and unsaved buffers: the margin
    load_state_strict(model, state, assign=True)
    for module in model.modules():  # non-persistent buffers were built on meta: recompute them
        if hasattr(module, "reset_buffers"):
            module.reset_buffers("cpu")
    if hasattr(model, "tie_weights"):  # assign=True loaded tied tensors as separate parameters
        model.tie_weights()
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise CheckpointError(f"{path}: tensors not restored after loading (a defect in {owner.name}): {left}")
    model = model.to(device or "cpu")
    return model.to(dtype=dtype) if dtype is not None else model
