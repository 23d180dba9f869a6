"""Transformers ``LlavaForConditionalGeneration`` / ``LlavaNextForConditionalGeneration`` folders
<-> ours. The decoder converts as the ``llm`` system's causal LMs do, the CLIP tower as the ``clip``
system's; the connector's ``linear_1``/``linear_2`` are our MLP's ``fc1``/``fc2``."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ...io import CheckpointError, KeyMap, Rename, read_tensors, write_hf_folder
from ...io.checkpoint import read_json
from ..clip.convert import hf_vision_rules, vision_config_from_hf, vision_config_to_hf
from ..llm.convert import convert_hf, export_hf
from ..vlm import join_hf_vlm_state, split_hf_vlm_state
from .config import PROJECTOR_ACTS, LlavaConfig

_ACTS = {"gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh", **{a: a for a in PROJECTOR_ACTS}}
# the tower's ln_post (``post_layernorm``) only normalises CLIP's pooled output, which LLaVA never reads
HF_TOWER = KeyMap(tuple(r for r in hf_vision_rules("vision_model", "vision") if "post_layernorm" not in r.src),
                  ignore=("vision_model.embeddings.position_ids", "vision_model.post_layernorm.{path}"))
HF_PROJECTOR = KeyMap(tuple(Rename(f"linear_{i}.{p}", f"projector.fc{i}.{p}") for i in (1, 2) for p in ("weight", "bias")))


def _text_config(hf: dict[str, Any]) -> dict[str, Any]:
    """The decoder's config dict; the top level's ``tie_word_embeddings`` governs (as in transformers)."""
    text = dict(hf["text_config"])
    if "tie_word_embeddings" in hf:
        text["tie_word_embeddings"] = hf["tie_word_embeddings"]
    return text


def read_image_stats(folder: Path) -> dict[str, tuple[float, ...]]:
    """``image_mean``/``image_std`` from a folder's ``preprocessor_config.json`` (empty if none)."""
    path = folder / "preprocessor_config.json"
    pre = json.loads(path.read_text()) if path.is_file() else {}
    return {k: tuple(float(x) for x in pre[k]) for k in ("image_mean", "image_std") if k in pre}


def config_from_hf(hf: dict[str, Any], text: Any, folder: Path | None = None) -> LlavaConfig:
    model_type = hf.get("model_type")
    if model_type not in ("llava", "llava_next"):
        raise CheckpointError(f"model_type {model_type!r} is not LLaVA ('llava' or 'llava_next')")
    layer = hf.get("vision_feature_layer", -2)
    if not isinstance(layer, int):
        raise CheckpointError(f"vision_feature_layer {layer!r}: only one layer is supported (not a list)")
    act = hf.get("projector_hidden_act", "gelu")
    if act not in _ACTS:
        raise CheckpointError(f"projector_hidden_act {act!r} is not supported (supported: {sorted(_ACTS)})")
    vision = vision_config_from_hf(hf["vision_config"])
    if folder is not None:
        vision = replace(vision, **read_image_stats(folder))
    pinpoints = None
    if model_type == "llava_next":
        pinpoints = tuple((int(h), int(w)) for h, w in hf.get("image_grid_pinpoints") or ())
    return LlavaConfig(
        text=text, vision=vision, image_token_id=int(hf.get("image_token_index", hf.get("image_token_id", 32000))),
        feature_layer=layer, feature_strategy=hf.get("vision_feature_select_strategy", "default"),
        projector_act=_ACTS[act], projector_bias=bool(hf.get("multimodal_projector_bias", True)), grid_pinpoints=pinpoints,
    )


def from_hf(folder: str | Path) -> tuple[LlavaConfig, dict[str, Tensor]]:
    """A transformers LLaVA / LLaVA-NeXT folder -> (config, state dict)."""
    folder = Path(folder)
    hf = read_json(folder / "config.json")
    parts = split_hf_vlm_state(read_tensors(folder))
    text, text_state = convert_hf(_text_config(hf), parts["text"])
    config = config_from_hf(hf, text, folder)
    state = {f"language_model.{k}": v for k, v in text_state.items()}
    state.update(HF_TOWER.convert({f"vision_model.{k}": v for k, v in parts["vision"].items()}))
    state.update(HF_PROJECTOR.convert(parts["projector"]))
    other = dict(parts["other"])
    if config.grid_pinpoints is not None and "image_newline" in other:
        state["image_newline"] = other.pop("image_newline")
    if other:
        raise CheckpointError(f"{folder}: tensors no LLaVA part reads: {sorted(other)[:5]}")
    return config, state


def to_hf(model, folder: str | Path) -> Path:
    """Write ``model`` as a transformers LLaVA (or LLaVA-NeXT) folder that ``from_pretrained`` loads
    back equal: ``config.json``, ``model.safetensors`` and the image processor's settings."""
    c: LlavaConfig = model.config
    state = dict(model.state_dict())
    text_config, text_state = export_hf(c.text, {k[len("language_model."):]: v for k, v in state.items()
                                                 if k.startswith("language_model.")})
    dim = c.vision.dim
    post = {"post_layernorm.weight": torch.ones(dim), "post_layernorm.bias": torch.zeros(dim)}  # never read
    parts = {
        "text": text_state,
        "vision": {k[len("vision_model."):]: v for k, v in HF_TOWER.inverted().convert(
            {k: v for k, v in state.items() if k.startswith("vision.")}).items()} | post,
        "projector": HF_PROJECTOR.inverted().convert({k: v for k, v in state.items() if k.startswith("projector.")}),
        "other": {"image_newline": state["image_newline"]} if c.grid_pinpoints else {},
    }
    v = c.vision
    hf_config: dict[str, Any] = {
        "architectures": ["LlavaNextForConditionalGeneration" if c.grid_pinpoints else "LlavaForConditionalGeneration"],
        "model_type": "llava_next" if c.grid_pinpoints else "llava", "text_config": text_config,
        "vision_config": vision_config_to_hf(v), "image_token_index": c.image_token_id,
        "vision_feature_layer": c.feature_layer, "vision_feature_select_strategy": c.feature_strategy,
        "projector_hidden_act": {"gelu_tanh": "gelu_pytorch_tanh"}.get(c.projector_act, c.projector_act),
        "multimodal_projector_bias": c.projector_bias, "tie_word_embeddings": c.text.tie_embeddings,
        "image_seq_length": c.tokens_per_tile,
    }
    processor: dict[str, Any] = {
        "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": v.image_size},
        "resample": 3, "do_center_crop": True, "crop_size": {"height": v.image_size, "width": v.image_size},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True,
        "image_mean": list(v.image_mean), "image_std": list(v.image_std),
    }
    if c.grid_pinpoints:
        hf_config["image_grid_pinpoints"] = [list(p) for p in c.grid_pinpoints]
        processor.update(image_processor_type="LlavaNextImageProcessor", do_pad=True,
                         image_grid_pinpoints=hf_config["image_grid_pinpoints"])
    return write_hf_folder(folder, hf_config, join_hf_vlm_state(parts), extra_json={"preprocessor_config.json": processor})
