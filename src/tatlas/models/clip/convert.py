"""CLIP checkpoints from other codebases -> ours, and ours -> a Hugging Face folder.

Three sources, one declarative key map each (plus the inverse for export):

- Hugging Face ``CLIPModel`` folders (``config.json`` with ``model_type: "clip"``): separate
  q/k/v projections, so the map is renames only. Text pooling: ``text_config.eos_token_id == 2`` is
  HF's legacy mode (argmax over token ids, what OpenAI does), any other id pools at its first
  position.
- OpenAI CLIP state dicts (``format="openai-clip"``): the keys of OpenAI's ``model.py``; attention
  is ``nn.MultiheadAttention`` with fused ``in_proj_weight``/``in_proj_bias`` (split into q, k, v)
  and both projections are ``[in, out]`` parameters (transposed). The released ``.pt`` files are
  TorchScript archives: their tensors are read without running any of their code
  (:func:`read_torchscript_tensors`). Architecture from shapes as in OpenAI's ``build_model``:
  64-wide heads, QuickGELU.
- open_clip ``CLIP`` state dicts (``format="open_clip"``): the same keys (a training checkpoint's
  ``state_dict`` and DDP's ``module.`` prefix are unwrapped). Heads and activation are not in the
  weights: they are read from an ``open_clip_config.json`` beside the file (as the Hugging Face hub
  ships them) when there is one, else 64-wide heads and open_clip's default GELU (pass
  ``act="quick_gelu"`` to :func:`from_open_clip` for ``*-quickgelu`` models).
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ...io import TRANSPOSE, CheckpointError, KeyMap, Rename, Split, read_tensors, write_hf_folder
from ...io.checkpoint import read_json
from .config import CLIPConfig, CLIPTextConfig, CLIPVisionConfig

_BLOCK = ("attn_norm", "attn.q", "attn.k", "attn.v", "attn.out", "mlp_norm", "mlp.fc1", "mlp.fc2")

# ---------------------------------------------------------------------------------------------
# Hugging Face
# ---------------------------------------------------------------------------------------------


def _hf_blocks(src: str, dst: str) -> tuple[Rename, ...]:
    names = ("layer_norm1", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
             "layer_norm2", "mlp.fc1", "mlp.fc2")
    return tuple(Rename(f"{src}.encoder.layers.{{i}}.{hf}.{p}", f"{dst}.blocks.{{i}}.{ours}.{p}")
                 for hf, ours in zip(names, _BLOCK, strict=True) for p in ("weight", "bias"))


def hf_vision_rules(src: str = "vision_model", dst: str = "vision") -> tuple[Rename, ...]:
    """Transformers' ``CLIPVisionTransformer`` keys under ``src`` -> our :class:`~tatlas.nn.VisionTransformer`'s
    under ``dst`` (class token, ``ln_pre`` and ``ln_post`` included). LLaVA's tower uses them too."""
    return (
        Rename(f"{src}.embeddings.class_embedding", f"{dst}.class_token"),
        Rename(f"{src}.embeddings.patch_embedding.weight", f"{dst}.patch_embed.proj.weight"),
        Rename(f"{src}.embeddings.position_embedding.weight", f"{dst}.positions.weight"),
        Rename(f"{src}.pre_layrnorm.weight", f"{dst}.pre_norm.weight"),
        Rename(f"{src}.pre_layrnorm.bias", f"{dst}.pre_norm.bias"),
        *_hf_blocks(src, dst),
        Rename(f"{src}.post_layernorm.weight", f"{dst}.post_norm.weight"),
        Rename(f"{src}.post_layernorm.bias", f"{dst}.post_norm.bias"),
    )


HF_CLIP = KeyMap(
    rules=(
        Rename("text_model.embeddings.token_embedding.weight", "text.token_embed.weight"),
        Rename("text_model.embeddings.position_embedding.weight", "text.positions.weight"),
        *_hf_blocks("text_model", "text"),
        Rename("text_model.final_layer_norm.weight", "text.norm.weight"),
        Rename("text_model.final_layer_norm.bias", "text.norm.bias"),
        *hf_vision_rules(),
        Rename("visual_projection.weight", "image_proj.weight"),
        Rename("text_projection.weight", "text_proj.weight"),
        Rename("logit_scale", "logit_scale"),
    ),
    # older transformers saved the position-id buffers
    ignore=("text_model.embeddings.position_ids", "vision_model.embeddings.position_ids"),
)

_HF_ACTS = {"quick_gelu": "quick_gelu", "gelu": "gelu"}


def _hf_act(cfg: dict[str, Any], where: str) -> str:
    act = cfg.get("hidden_act", "quick_gelu")
    if act not in _HF_ACTS:
        raise CheckpointError(f"{where}.hidden_act {act!r} is not supported (supported: {sorted(_HF_ACTS)})")
    return _HF_ACTS[act]


def config_from_hf(hf: Mapping[str, Any]) -> CLIPConfig:
    """A Hugging Face ``CLIPConfig`` dict -> ours."""
    if hf.get("model_type") != "clip":
        raise CheckpointError(f"model_type {hf.get('model_type')!r} is not a CLIP model (expected 'clip')")
    t, v = hf.get("text_config") or {}, hf.get("vision_config") or {}
    eos = t.get("eos_token_id", 2)
    text = CLIPTextConfig(
        vocab_size=t.get("vocab_size", 49_408), context_length=t.get("max_position_embeddings", 77),
        dim=t.get("hidden_size", 512), layers=t.get("num_hidden_layers", 12), heads=t.get("num_attention_heads", 8),
        mlp_hidden=t.get("intermediate_size", 2048), act=_hf_act(t, "text_config"), eps=t.get("layer_norm_eps", 1e-5),
        **({"pool": "argmax"} if eos == 2 else {"pool": "eos", "eos_token_id": eos}),
    )
    return CLIPConfig(embed_dim=hf.get("projection_dim", 512), vision=vision_config_from_hf(v), text=text,
                      logit_scale_init=float(hf.get("logit_scale_init_value", 2.6592)))


def vision_config_from_hf(v: Mapping[str, Any]) -> CLIPVisionConfig:
    """A transformers ``CLIPVisionConfig`` dict -> ours (defaults as transformers' own)."""
    return CLIPVisionConfig(
        image_size=v.get("image_size", 224), patch=v.get("patch_size", 32), dim=v.get("hidden_size", 768),
        layers=v.get("num_hidden_layers", 12), heads=v.get("num_attention_heads", 12),
        mlp_hidden=v.get("intermediate_size", 3072), channels=v.get("num_channels", 3), act=_hf_act(v, "vision_config"),
        eps=v.get("layer_norm_eps", 1e-5),
    )


def vision_config_to_hf(v: CLIPVisionConfig, **extra: Any) -> dict[str, Any]:
    """Ours -> a transformers ``CLIPVisionConfig`` dict."""
    return {
        "model_type": "clip_vision_model", "image_size": v.image_size, "patch_size": v.patch,
        "hidden_size": v.dim, "num_hidden_layers": v.layers, "num_attention_heads": v.heads,
        "intermediate_size": v.mlp_hidden, "num_channels": v.channels, "hidden_act": v.act,
        "layer_norm_eps": v.eps, **extra,
    }


def _read_preprocessor(folder: Path, vision: CLIPVisionConfig) -> CLIPVisionConfig:
    """Image mean/std from the folder's ``preprocessor_config.json``, when it has one."""
    from dataclasses import replace

    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return vision
    pre = json.loads(path.read_text())
    mean, std = pre.get("image_mean"), pre.get("image_std")
    if mean is None or std is None:
        return vision
    return replace(vision, image_mean=tuple(float(m) for m in mean), image_std=tuple(float(s) for s in std))


def from_hf(folder: str | Path) -> tuple[CLIPConfig, dict[str, Tensor]]:
    """A Hugging Face ``CLIPModel`` folder -> (config, state dict)."""
    from dataclasses import replace

    folder = Path(folder)
    config = config_from_hf(read_json(folder / "config.json"))
    config = replace(config, vision=_read_preprocessor(folder, config.vision))
    return config, HF_CLIP.convert(read_tensors(folder))


def to_hf(model, folder: str | Path) -> Path:
    """Write ``model`` as a Hugging Face ``CLIPModel`` folder (``config.json`` +
    ``model.safetensors`` + ``preprocessor_config.json``) that ``CLIPModel.from_pretrained`` loads."""
    c: CLIPConfig = model.config
    v, t = c.vision, c.text
    hf_state = HF_CLIP.inverted().convert(dict(model.state_dict()))
    text_config = {
        "model_type": "clip_text_model", "vocab_size": t.vocab_size, "max_position_embeddings": t.context_length,
        "hidden_size": t.dim, "num_hidden_layers": t.layers, "num_attention_heads": t.heads,
        "intermediate_size": t.mlp_hidden, "hidden_act": t.act, "layer_norm_eps": t.eps,
        "projection_dim": c.embed_dim, "bos_token_id": 49_406, "pad_token_id": 1,
        # 2 is HF's legacy switch for argmax pooling (what OpenAI's checkpoints use)
        "eos_token_id": 2 if t.pool == "argmax" else t.eos_token_id,
    }
    vision_config = vision_config_to_hf(v, projection_dim=c.embed_dim)
    hf_config = {
        "architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": c.embed_dim,
        "logit_scale_init_value": c.logit_scale_init, "text_config": text_config, "vision_config": vision_config,
        "torch_dtype": str(model.logit_scale.dtype).removeprefix("torch."),
    }
    preprocessor = {
        "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": v.image_size},
        "resample": 3, "do_center_crop": True, "crop_size": {"height": v.image_size, "width": v.image_size},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True,
        "image_mean": list(v.image_mean), "image_std": list(v.image_std),
    }
    return write_hf_folder(folder, hf_config, hf_state, extra_json={"preprocessor_config.json": preprocessor})


# ---------------------------------------------------------------------------------------------
# OpenAI and open_clip
# ---------------------------------------------------------------------------------------------


def _openai_blocks(src: str, dst: str) -> tuple[Rename | Split, ...]:
    b = f"{src}.resblocks.{{i}}"
    d = f"{dst}.blocks.{{i}}"
    return (
        Split(f"{b}.attn.in_proj_weight", (f"{d}.attn.q.weight", f"{d}.attn.k.weight", f"{d}.attn.v.weight")),
        Split(f"{b}.attn.in_proj_bias", (f"{d}.attn.q.bias", f"{d}.attn.k.bias", f"{d}.attn.v.bias")),
        *(Rename(f"{b}.{src_name}.{p}", f"{d}.{ours}.{p}")
          for src_name, ours in (("ln_1", "attn_norm"), ("attn.out_proj", "attn.out"), ("ln_2", "mlp_norm"),
                                 ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2"))
          for p in ("weight", "bias")),
    )


OPENAI_CLIP = KeyMap(
    rules=(
        Rename("visual.conv1.weight", "vision.patch_embed.proj.weight"),
        Rename("visual.class_embedding", "vision.class_token"),
        Rename("visual.positional_embedding", "vision.positions.weight"),
        Rename("visual.ln_pre.weight", "vision.pre_norm.weight"),
        Rename("visual.ln_pre.bias", "vision.pre_norm.bias"),
        *_openai_blocks("visual.transformer", "vision"),
        Rename("visual.ln_post.weight", "vision.post_norm.weight"),
        Rename("visual.ln_post.bias", "vision.post_norm.bias"),
        Rename("visual.proj", "image_proj.weight", TRANSPOSE),  # [C_v, E] -> [E, C_v]
        Rename("token_embedding.weight", "text.token_embed.weight"),
        Rename("positional_embedding", "text.positions.weight"),
        *_openai_blocks("transformer", "text"),
        Rename("ln_final.weight", "text.norm.weight"),
        Rename("ln_final.bias", "text.norm.bias"),
        Rename("text_projection", "text_proj.weight", TRANSPOSE),  # [C_t, E] -> [E, C_t]
        Rename("logit_scale", "logit_scale"),
    ),
    # OpenAI's state dicts carry three ints; open_clip's causal mask is a buffer in some versions
    ignore=("input_resolution", "context_length", "vocab_size", "attn_mask", "transformer.resblocks.{i}.attn_mask",
            "visual.transformer.resblocks.{i}.attn_mask"),
)


class _ScriptObject:
    """Stands in for any TorchScript class (``__torch__.*``) while unpickling: keeps its state."""

    def __init__(self, *args: Any) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


class _TorchScriptUnpickler(pickle.Unpickler):
    """Unpickles a TorchScript archive's ``data.pkl`` allowing only tensor rebuilding and plain
    containers; every TorchScript class becomes a :class:`_ScriptObject`. Nothing is executed."""

    _ALLOWED = {
        ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
        ("collections", "OrderedDict"),
    }

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(file)
        self.archive, self.prefix = archive, prefix
        self.storages: dict[str, Any] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("__torch__"):
            return _ScriptObject
        if (module, name) in self._ALLOWED:
            return getattr(__import__(module, fromlist=[name]), name)
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]  # the storage's dtype stands in for its class
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CLIP TorchScript archive")

    def persistent_load(self, pid: Any) -> Any:
        kind, dtype, key, _location, _numel = pid
        if kind != "storage" or not isinstance(dtype, torch.dtype):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        if key not in self.storages:
            data = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
            untyped = torch.frombuffer(data, dtype=torch.uint8).clone().untyped_storage() if data else torch.UntypedStorage(0)
            self.storages[key] = torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)
        return self.storages[key]


def read_torchscript_tensors(path: str | Path) -> dict[str, Tensor]:
    """The parameters and buffers of a TorchScript archive (OpenAI's released CLIP ``.pt`` files),
    named as ``module.state_dict()`` would name them, without running any TorchScript code."""
    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        data = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if not data:
            raise CheckpointError(f"{path}: a zip archive without data.pkl (not a TorchScript or torch.save file)")
        prefix = data[0][: -len("data.pkl")]
        with archive.open(data[0]) as f:
            root = _TorchScriptUnpickler(f, archive, prefix).load()
    out: dict[str, Tensor] = {}

    def walk(obj: Any, name: str) -> None:
        state = obj.state if isinstance(obj, _ScriptObject) else None
        if not isinstance(state, dict):
            return
        for key, value in state.items():
            full = f"{name}{key}"
            if isinstance(value, Tensor):
                out[full] = value.detach()
            elif isinstance(value, _ScriptObject):
                walk(value, full + ".")  # a submodule; other attributes (ints, flags) are not weights

    walk(root, "")
    if not out:
        raise CheckpointError(f"{path}: no tensors found in the TorchScript archive")
    return out


def _is_torchscript(path: Path) -> bool:
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in archive.namelist())


def read_openai_state(path: str | Path) -> dict[str, Tensor]:
    """Tensors of an OpenAI/open_clip checkpoint: a TorchScript archive, a ``torch.save`` file
    (``weights_only=True``), a safetensors file, or a folder; ``state_dict`` and ``module.``
    wrappers removed."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if path.is_dir():
        found = [path / n for n in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin") if (path / n).is_file()]
        state = read_tensors(found[0]) if found else read_tensors(path)
    elif _is_torchscript(path):
        state = read_torchscript_tensors(path)
    else:
        state = read_tensors(path)
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _check_vit_clip(state: Mapping[str, Tensor], path: Path, fmt: str) -> None:
    if "visual.conv1.weight" in state and "visual.proj" in state and "token_embedding.weight" in state:
        return
    if any(k.startswith("visual.layer1.") for k in state):
        raise CheckpointError(f"{path}: a ResNet CLIP image tower (RN50 ...); only ViT CLIPs are supported")
    if any(k.startswith("visual.trunk.") for k in state):
        raise CheckpointError(f"{path}: an open_clip timm image tower; only the built-in ViT towers are supported")
    if any(k.startswith("text.transformer.") or k.startswith("text.") for k in state):
        raise CheckpointError(f"{path}: an open_clip model with a custom/Hugging Face text tower (CustomTextCLIP) "
                              "is not supported")
    sample = ", ".join(sorted(state)[:5])
    raise CheckpointError(
        f"{path}: not a {fmt} ViT CLIP state dict (no visual.conv1.weight / visual.proj / token_embedding.weight; "
        f"{len(state)} tensors, e.g. {sample})"
    )


def _count_blocks(state: Mapping[str, Tensor], prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})


def config_from_openai_state(
    state: Mapping[str, Tensor], *, act: str = "quick_gelu", vision_head_width: int = 64, text_heads: int | None = None,
    pool: str = "argmax", eos_token_id: int = 49_407, logit_scale_init: float | None = None,
) -> CLIPConfig:
    """Architecture from tensor shapes (OpenAI's ``build_model``): widths, depths, patch, image
    size, context, vocabulary, embedding; heads are 64 wide unless told otherwise."""
    conv = state["visual.conv1.weight"]
    v_width, patch = conv.shape[0], conv.shape[-1]
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    t_width = state["ln_final.weight"].shape[0]
    vision = CLIPVisionConfig(
        image_size=patch * grid, patch=patch, dim=v_width, layers=_count_blocks(state, "visual.transformer.resblocks."),
        heads=v_width // vision_head_width, mlp_hidden=state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        channels=conv.shape[1], act=act,
    )
    text = CLIPTextConfig(
        vocab_size=state["token_embedding.weight"].shape[0], context_length=state["positional_embedding"].shape[0],
        dim=t_width, layers=_count_blocks(state, "transformer.resblocks."),
        heads=text_heads if text_heads is not None else t_width // 64,
        mlp_hidden=state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0], act=act, pool=pool,
        eos_token_id=eos_token_id,
    )
    scale = float(state["logit_scale"]) if logit_scale_init is None and "logit_scale" in state else logit_scale_init
    return CLIPConfig(embed_dim=state["text_projection"].shape[1], vision=vision, text=text,
                      **({} if scale is None else {"logit_scale_init": scale}))


def from_openai(path: str | Path) -> tuple[CLIPConfig, dict[str, Tensor]]:
    """An OpenAI CLIP checkpoint (their TorchScript ``.pt`` or a state dict) -> (config, state)."""
    path = Path(path)
    state = read_openai_state(path)
    _check_vit_clip(state, path, "OpenAI CLIP")
    config = config_from_openai_state(state)
    return config, OPENAI_CLIP.convert(state)


_UNSUPPORTED_OPEN_CLIP = {
    "vision_cfg": {"timm_model_name": None, "hf_model_name": None, "attentional_pool": False, "no_ln_pre": False,
                   "final_ln_after_pool": False, "pool_type": "tok", "ls_init_value": None,
                   "pos_embed_type": "learnable", "qk_norm": False},
    "text_cfg": {"hf_model_name": None, "embed_cls": False, "no_causal_mask": False, "final_ln_after_pool": False,
                 "proj_bias": False, "ls_init_value": None, "proj_type": "linear", "qk_norm": False},
}


def _open_clip_settings(path: Path) -> dict[str, Any]:
    """Settings from ``open_clip_config.json`` beside ``path`` (or in it, for a folder)."""
    folder = path if path.is_dir() else path.parent
    cfg_path = folder / "open_clip_config.json"
    if not cfg_path.is_file():
        return {}
    raw = json.loads(cfg_path.read_text())
    model_cfg = raw.get("model_cfg", raw)
    if model_cfg.get("init_logit_bias") is not None:
        raise CheckpointError(f"{cfg_path}: a SigLIP-style model (logit bias) is not a CLIP")
    for tower, fields in _UNSUPPORTED_OPEN_CLIP.items():
        sub = model_cfg.get(tower) or {}
        for name, default in fields.items():
            value = sub.get(name, default)
            if value != default and not (default is None and not value):
                raise CheckpointError(f"{cfg_path}: {tower}.{name}={value!r} is not supported")
    vision, text = model_cfg.get("vision_cfg") or {}, model_cfg.get("text_cfg") or {}
    settings: dict[str, Any] = {"act": "quick_gelu" if model_cfg.get("quick_gelu") else "gelu"}
    if "head_width" in vision:
        settings["vision_head_width"] = int(vision["head_width"])
    if "heads" in text:
        settings["text_heads"] = int(text["heads"])
    pool = text.get("pool_type", "argmax")
    if pool not in ("argmax", "eos"):
        raise CheckpointError(f"{cfg_path}: text_cfg.pool_type={pool!r} is not supported (argmax, eos)")
    settings["pool"] = pool
    if pool == "eos":
        settings["eos_token_id"] = int(text.get("eos_id", 2))
    mean = (raw.get("preprocess_cfg") or {}).get("mean")
    std = (raw.get("preprocess_cfg") or {}).get("std")
    if mean and std:
        settings["image_stats"] = (tuple(float(m) for m in mean), tuple(float(s) for s in std))
    return settings


def from_open_clip(
    path: str | Path, *, act: str | None = None, vision_head_width: int | None = None, text_heads: int | None = None,
) -> tuple[CLIPConfig, dict[str, Tensor]]:
    """An open_clip ``CLIP`` checkpoint -> (config, state). Keyword arguments override what the
    weights and an ``open_clip_config.json`` beside them say (``act="quick_gelu"`` for open_clip's
    ``*-quickgelu`` models)."""
    from dataclasses import replace

    path = Path(path)
    state = read_openai_state(path)
    _check_vit_clip(state, path, "open_clip")
    if "logit_bias" in state:
        raise CheckpointError(f"{path}: has a logit_bias (a SigLIP-style model), which CLIP does not have")
    settings = _open_clip_settings(path)
    stats = settings.pop("image_stats", None)
    settings.setdefault("act", "gelu")
    overrides = {"act": act, "vision_head_width": vision_head_width, "text_heads": text_heads}
    settings.update({k: v for k, v in overrides.items() if v is not None})
    config = config_from_openai_state(state, **settings)
    if stats is not None:
        config = replace(config, vision=replace(config.vision, image_mean=stats[0], image_std=stats[1]))
    return config, OPENAI_CLIP.convert(state)


def to_open_clip(model) -> dict[str, Tensor]:
    """Our ``model``'s weights as an open_clip/OpenAI ``CLIP`` state dict."""
    return OPENAI_CLIP.inverted().convert(dict(model.state_dict()))
