"""Transformers ``InternVLForConditionalGeneration`` folders (the ``-hf`` checkpoints) <-> ours.
The decoder converts as the ``llm`` system's causal LMs do; the InternViT tower and the connector
by the renames below (class token and positions lose their leading singleton dims)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import Tensor

from ...io import CheckpointError, KeyMap, Rename, Transform, read_tensors, write_hf_folder
from ...io.checkpoint import read_json
from ..llava.convert import read_image_stats
from ..llm.convert import convert_hf, export_hf
from ..vlm import join_hf_vlm_state, split_hf_vlm_state
from .config import InternViTConfig, InternVLConfig

_CLS = Transform("[1, 1, C] <-> [C]", lambda t: t.reshape(-1), lambda t: t.reshape(1, 1, -1))
_POS = Transform("[1, N, C] <-> [N, C]", lambda t: t[0], lambda t: t[None])
_BLOCK = (("attention.q_proj", "attn.q"), ("attention.k_proj", "attn.k"), ("attention.v_proj", "attn.v"),
          ("attention.projection_layer", "attn.out"), ("attention.q_norm", "attn.q_norm"),
          ("attention.k_norm", "attn.k_norm"), ("layernorm_before", "attn_norm"), ("layernorm_after", "mlp_norm"),
          ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2"))
HF_TOWER = KeyMap((
    Rename("embeddings.cls_token", "vision.class_token", _CLS),
    Rename("embeddings.position_embeddings", "vision.positions.weight", _POS),
    Rename("embeddings.patch_embeddings.projection.weight", "vision.patch_embed.proj.weight"),
    Rename("embeddings.patch_embeddings.projection.bias", "vision.patch_embed.proj.bias"),
    *(Rename(f"encoder.layer.{{i}}.{hf}.{p}", f"vision.blocks.{{i}}.{ours}.{p}") for hf, ours in _BLOCK
      for p in ("weight", "bias")),
    Rename("encoder.layer.{i}.lambda_1", "vision.blocks.{i}.attn_scale"),
    Rename("encoder.layer.{i}.lambda_2", "vision.blocks.{i}.mlp_scale"),
    Rename("layernorm.weight", "vision.post_norm.weight"),
    Rename("layernorm.bias", "vision.post_norm.bias"),
))
HF_PROJECTOR = KeyMap((
    Rename("layer_norm.weight", "projector_norm.weight"), Rename("layer_norm.bias", "projector_norm.bias"),
    *(Rename(f"linear_{i}.{p}", f"projector.fc{i}.{p}") for i in (1, 2) for p in ("weight", "bias")),
))
_NORMS = {"layer_norm": "layer", "rms_norm": "rms"}
_ACTS = {"gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "silu": "silu", "relu": "relu"}


def _pair(value: Any) -> int:
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise CheckpointError(f"non-square image or patch size {value} is not supported")
        return int(value[0])
    return int(value)


def vision_config_from_hf(v: dict[str, Any]) -> InternViTConfig:
    if v.get("norm_type", "layer_norm") not in _NORMS or v.get("hidden_act", "gelu") not in _ACTS:
        raise CheckpointError(f"InternViT norm_type {v.get('norm_type')!r} / hidden_act {v.get('hidden_act')!r} "
                              f"is not supported (norms {sorted(_NORMS)}, activations {sorted(_ACTS)})")
    if not v.get("use_absolute_position_embeddings", True):
        raise CheckpointError("InternViT without absolute position embeddings is not supported")
    return InternViTConfig(
        image_size=_pair(v.get("image_size", 448)), patch=_pair(v.get("patch_size", 14)), dim=v.get("hidden_size", 1024),
        layers=v.get("num_hidden_layers", 24), heads=v.get("num_attention_heads", 16),
        mlp_hidden=v.get("intermediate_size", 4096), channels=v.get("num_channels", 3),
        act=_ACTS[v.get("hidden_act", "gelu")], eps=v.get("layer_norm_eps", 1e-6),
        norm=_NORMS[v.get("norm_type", "layer_norm")], layer_scale=float(v.get("layer_scale_init_value", 0.1)),
        qk_norm=bool(v.get("use_qk_norm", False)), qkv_bias=bool(v.get("attention_bias", False)),
        final_norm=not v.get("use_mean_pooling", True),
    )


def from_hf(folder: str | Path) -> tuple[InternVLConfig, dict[str, Tensor]]:
    """A transformers InternVL folder -> (config, state dict)."""
    folder = Path(folder)
    hf = read_json(folder / "config.json")
    layer = hf.get("vision_feature_layer", -1)
    if not isinstance(layer, int):
        raise CheckpointError(f"vision_feature_layer {layer!r}: only one layer is supported (not a list)")
    act = hf.get("projector_hidden_act", "gelu")
    if act not in _ACTS:
        raise CheckpointError(f"projector_hidden_act {act!r} is not supported (supported: {sorted(_ACTS)})")
    text_hf = {**hf["text_config"], "tie_word_embeddings": hf.get("tie_word_embeddings", True)}
    parts = split_hf_vlm_state(read_tensors(folder))
    text, text_state = convert_hf(text_hf, parts["text"])
    config = InternVLConfig(
        text=text, vision=replace(vision_config_from_hf(hf["vision_config"]), **read_image_stats(folder)),
        image_token_id=int(hf.get("image_token_id", hf.get("image_token_index", 151_667))), feature_layer=layer,
        feature_strategy=hf.get("vision_feature_select_strategy", "default"),
        downsample_ratio=float(hf.get("downsample_ratio", 0.5)), projector_act=_ACTS[act],
    )
    if parts["other"]:
        raise CheckpointError(f"{folder}: tensors no InternVL part reads: {sorted(parts['other'])[:5]}")
    state = {f"language_model.{k}": v for k, v in text_state.items()}
    state.update(HF_TOWER.convert(parts["vision"]))
    state.update(HF_PROJECTOR.convert(parts["projector"]))
    return config, state


def to_hf(model, folder: str | Path) -> Path:
    """Write ``model`` as a transformers InternVL folder that ``from_pretrained`` loads back equal
    (``config.json``, ``model.safetensors``, the tiling image processor's settings)."""
    c: InternVLConfig = model.config
    v = c.vision
    state = dict(model.state_dict())
    text_config, text_state = export_hf(c.text, {k[len("language_model."):]: t for k, t in state.items()
                                                 if k.startswith("language_model.")})
    parts = {"text": text_state,
             "vision": HF_TOWER.inverted().convert({k: t for k, t in state.items() if k.startswith("vision.")}),
             "projector": HF_PROJECTOR.inverted().convert(
                 {k: t for k, t in state.items() if k.startswith(("projector.", "projector_norm."))})}
    vision_config = {
        "model_type": "internvl_vision", "image_size": [v.image_size] * 2, "patch_size": [v.patch] * 2,
        "hidden_size": v.dim, "num_hidden_layers": v.layers, "num_attention_heads": v.heads,
        "intermediate_size": v.mlp_hidden, "num_channels": v.channels, "hidden_act": v.act, "layer_norm_eps": v.eps,
        "norm_type": {"layer": "layer_norm", "rms": "rms_norm"}[v.norm], "layer_scale_init_value": v.layer_scale,
        "use_qk_norm": v.qk_norm, "attention_bias": v.qkv_bias, "use_mean_pooling": not v.final_norm,
    }
    hf_config = {
        "architectures": ["InternVLForConditionalGeneration"], "model_type": "internvl", "text_config": text_config,
        "vision_config": vision_config, "image_token_id": c.image_token_id, "downsample_ratio": c.downsample_ratio,
        "vision_feature_layer": c.feature_layer, "vision_feature_select_strategy": c.feature_strategy,
        "projector_hidden_act": {"gelu_tanh": "gelu_pytorch_tanh"}.get(c.projector_act, c.projector_act),
        "image_seq_length": c.tokens_per_tile, "tie_word_embeddings": c.text.tie_embeddings,
    }
    processor = {
        "image_processor_type": "GotOcr2ImageProcessor", "crop_to_patches": True, "min_patches": 1, "max_patches": 12,
        "size": {"height": v.image_size, "width": v.image_size}, "do_resize": True, "resample": 3,
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True,
        "image_mean": list(v.image_mean), "image_std": list(v.image_std),
    }
    return write_hf_folder(folder, hf_config, join_hf_vlm_state(parts), extra_json={"preprocessor_config.json": processor})
