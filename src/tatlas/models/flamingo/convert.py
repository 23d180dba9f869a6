"""Checkpoints <-> ours: transformers' IDEFICS folders (``IdeficsForVisionText2Text``) both ways,
and OpenFlamingo state dicts (``open_flamingo.Flamingo``: an open_clip ViT, a Llama-family LM
extended with ``FlamingoLMMixin``) in. The LM converts as the ``llm`` system's causal LMs, the
tower as the ``clip`` system's; the resampler and the gated layers by the rules below."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ...io import CheckpointError, KeyMap, Rename, Split, read_tensors, write_hf_folder
from ...io.checkpoint import read_json
from ..clip.config import CLIPVisionConfig
from ..clip.convert import OPENAI_CLIP, hf_vision_rules
from ..llava.convert import read_image_stats
from ..llm.convert import convert_hf, export_hf
from .config import CrossConfig, FlamingoConfig, ResamplerConfig


def _w(src: str, dst: str, params: tuple[str, ...] = ("weight",)) -> tuple[Rename, ...]:
    return tuple(Rename(f"{src}.{p}", f"{dst}.{p}") for p in params)


_WB = ("weight", "bias")

# --------------------------------------------------------------------------------------- IDEFICS
_HF_RESAMPLER = KeyMap((
    Rename("latents", "resampler.latents"),
    *_w("blocks.{i}.0.context_layer_norm", "resampler.layers.{i}.attn.media_norm", _WB),
    *_w("blocks.{i}.0.latents_layer_norm", "resampler.layers.{i}.attn.latent_norm", _WB),
    *_w("blocks.{i}.0.q_layer_norm", "resampler.layers.{i}.attn.attn.q_norm", _WB),
    *_w("blocks.{i}.0.k_layer_norm", "resampler.layers.{i}.attn.attn.k_norm", _WB),
    *(r for a, b in (("q_proj", "q"), ("k_proj", "k"), ("v_proj", "v"), ("output_proj", "out"))
      for r in _w(f"blocks.{{i}}.0.{a}", f"resampler.layers.{{i}}.attn.attn.{b}")),
    *_w("blocks.{i}.1.ln", "resampler.layers.{i}.mlp_norm", _WB),
    *_w("blocks.{i}.1.fc", "resampler.layers.{i}.mlp.fc1"),
    *_w("blocks.{i}.1.c_proj", "resampler.layers.{i}.mlp.fc2"),
    *_w("layer_norm", "resampler.norm", _WB),
))
_HF_CROSS = KeyMap((
    Rename("{i}.alpha_cross_attn", "cross_layers.{i}.attn_gate"),
    Rename("{i}.alpha_dense", "cross_layers.{i}.mlp_gate"),
    *(r for a, b in (("q_proj", "q"), ("k_proj", "k"), ("v_proj", "v"), ("o_proj", "out"), ("q_layer_norm", "q_norm"),
                     ("k_layer_norm", "k_norm"))
      for r in _w(f"{{i}}.cross_attn.{a}", f"cross_layers.{{i}}.attn.{b}")),
    *(r for a in ("gate", "up", "down") for r in _w(f"{{i}}.mlp.{a}_proj", f"cross_layers.{{i}}.mlp.{a}")),
    *_w("{i}.input_layernorm", "cross_layers.{i}.attn_norm"),
    *_w("{i}.post_attention_layernorm", "cross_layers.{i}.mlp_norm"),
), ignore=("{i}.cross_attn.rotary_emb.{path}",))
_HF_TOWER = KeyMap(tuple(r for r in hf_vision_rules("vision_model", "vision") if "post_layernorm" not in r.src),
                   ignore=("vision_model.embeddings.position_ids", "vision_model.post_layernorm.{path}"))
_ACTS = {"gelu": "gelu", "quick_gelu": "quick_gelu", "silu": "silu", "gelu_pytorch_tanh": "gelu_tanh",
         "gelu_new": "gelu_tanh"}


def _split_idefics(tensors: dict[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    """IDEFICS tensors by part (``text`` keyed as a causal LM's), decoupled embeddings merged."""
    parts: dict[str, dict[str, Tensor]] = {"text": {}, "vision": {}, "resampler": {}, "cross": {}}
    rules = (("model.vision_model.", "vision", "vision_model."), ("model.perceiver_resampler.", "resampler", ""),
             ("model.gated_cross_attn_layers.", "cross", ""), ("model.", "text", "model."), ("lm_head.", "text", "lm_head."))
    for key, t in tensors.items():
        for prefix, part, new in rules:
            if key.startswith(prefix):
                parts[part][new + key[len(prefix):]] = t
                break
        else:
            raise CheckpointError(f"an IDEFICS checkpoint holds a tensor no part reads: {key}")
    text = parts["text"]
    for base, extra in (("model.embed_tokens.weight", "model.embed_tokens.additional_embedding.weight"),
                        ("lm_head.weight", "lm_head.additional_fc.weight")):
        if extra in text:
            text[base] = torch.cat([text[base], text.pop(extra)])
    return parts


def _special_ids(folder: Path) -> dict[str, int]:
    """``<image>`` and ``<|endofchunk|>`` ids from a folder's ``tokenizer.json`` (empty if none)."""
    path, ours = folder / "tokenizer.json", folder / "tatlas_special_tokens.json"
    added = {t["content"]: int(t["id"]) for t in json.loads(path.read_text()).get("added_tokens", [])} if path.is_file() else {}
    if ours.is_file():  # what to_hf writes when there is no tokenizer
        added = {**json.loads(ours.read_text()), **added}
    out = {"media_token_id": added.get("<image>"), "eoc_token_id": added.get("<|endofchunk|>")}
    return {k: v for k, v in out.items() if v is not None}


def _vision_from_idefics(v: dict[str, Any]) -> CLIPVisionConfig:
    act = v.get("hidden_act", "gelu")
    if act not in _ACTS:
        raise CheckpointError(f"vision_config.hidden_act {act!r} is not supported (supported: {sorted(_ACTS)})")
    return CLIPVisionConfig(
        image_size=v.get("image_size", 224), patch=v.get("patch_size", 14), dim=v.get("embed_dim", 768),
        layers=v.get("num_hidden_layers", 32), heads=v.get("num_attention_heads", 16),
        mlp_hidden=v.get("intermediate_size", 5120), channels=v.get("num_channels", 3), act=_ACTS[act],
        eps=v.get("layer_norm_eps", 1e-5))


def config_from_idefics(hf: dict[str, Any], folder: Path | None = None) -> tuple[dict[str, Any], FlamingoConfig]:
    """An ``idefics`` config dict -> (the LM's Llama config dict, our config)."""
    if hf.get("model_type") != "idefics":
        raise CheckpointError(f"model_type {hf.get('model_type')!r} is not IDEFICS ('idefics')")
    if hf.get("tie_word_embeddings", False):
        raise CheckpointError("tie_word_embeddings=True IDEFICS models are not supported")
    heads, dim = hf.get("num_attention_heads", 32), hf.get("hidden_size", 4096)
    rope = hf.get("rope_parameters") or {"rope_type": "default", "rope_theta": hf.get("rope_theta", 10_000.0)}
    text_hf = {
        "model_type": "llama", "vocab_size": hf.get("vocab_size", 32000) + hf.get("additional_vocab_size", 0),
        "hidden_size": dim, "intermediate_size": hf.get("intermediate_size", 11008),
        "num_hidden_layers": hf.get("num_hidden_layers", 32), "num_attention_heads": heads,
        "num_key_value_heads": heads, "rms_norm_eps": hf.get("rms_norm_eps", 1e-6),
        "max_position_embeddings": hf.get("max_position_embeddings", 2048), "rope_parameters": rope,
        "hidden_act": hf.get("hidden_act", "silu"), "tie_word_embeddings": False,
    }
    p = hf.get("perceiver_config") or {}
    use_resampler = hf.get("use_resampler", p.get("use_resampler", False))
    resampler = ResamplerConfig(
        depth=p.get("resampler_depth", 6), heads=p.get("resampler_n_heads", 16), head_dim=p.get("resampler_head_dim", 96),
        latents=p.get("resampler_n_latents", 64), act="relu", qk_norm=bool(p.get("qk_layer_norms_perceiver", False)),
    ) if use_resampler else None
    act = hf.get("hidden_act", "silu")
    cross = CrossConfig(every=hf.get("cross_layer_interval", 1), first=0, heads=heads, head_dim=dim // heads, norm="rms",
                        mlp="gated", mlp_hidden=hf.get("intermediate_size", 11008), act=_ACTS.get(act, act),
                        gate=hf.get("alpha_type", "float"), qk_norm=bool(hf.get("qk_layer_norms", False)))
    from ..llm.convert import config_from_hf as llm_config

    vision = _vision_from_idefics(hf.get("vision_config") or {})
    if folder is not None:
        vision = replace(vision, **read_image_stats(folder))
    config = FlamingoConfig(text=llm_config(text_hf), vision=vision,
                            cross=cross, resampler=resampler, vision_tokens="all",
                            **(_special_ids(folder) if folder is not None else {}))
    return text_hf, config


def from_hf(folder: str | Path) -> tuple[FlamingoConfig, dict[str, Tensor]]:
    """A transformers IDEFICS folder -> (config, state dict). ``<image>``/``<|endofchunk|>`` ids
    come from its ``tokenizer.json`` if it has one (else pass ``image_attention_mask``)."""
    folder = Path(folder)
    hf = read_json(folder / "config.json")
    text_hf, config = config_from_idefics(hf, folder)
    parts = _split_idefics(read_tensors(folder))
    _, text_state = convert_hf(text_hf, parts["text"])
    state = {f"language_model.{k}": v for k, v in text_state.items()}
    state.update(_HF_TOWER.convert(parts["vision"]))
    if config.resampler is not None:
        state.update(_HF_RESAMPLER.convert(parts["resampler"]))
    elif parts["resampler"]:
        raise CheckpointError(f"{folder}: use_resampler is False but the checkpoint holds resampler tensors")
    cross = _HF_CROSS.convert(parts["cross"])
    if config.cross.gate == "vector":  # IDEFICS stores [1, 1, C]
        cross = {k: v.reshape(-1) if k.endswith("_gate") else v for k, v in cross.items()}
    state.update(cross)
    return config, state


def to_hf(model, folder: str | Path) -> Path:
    """Write ``model`` as a transformers IDEFICS folder that ``IdeficsForVisionText2Text.from_pretrained``
    loads back equal. Only IDEFICS's layout exports (RMSNorm and gated MLP cross layers, the LM's
    own heads, one before every ``every``-th layer from 0, every tower token)."""
    c: FlamingoConfig = model.config
    x, t = c.cross, c.text
    why = [reason for bad, reason in (
        (x.norm != "rms" or x.mlp != "gated", "cross layers with LayerNorm / a plain MLP (OpenFlamingo's)"),
        (x.first != 0, f"cross layers starting at LM layer {x.first}"),
        (x.heads != t.heads or x.head_dim != t.head_dim or x.mlp_hidden != t.mlp_hidden or x.act != t.act,
         "cross layers whose heads/MLP differ from the LM's"),
        (c.vision_tokens != "all", "vision_tokens='patches'"),
        (c.resampler is not None and (c.resampler.act != "relu" or c.resampler.mlp_mult != 4 or c.resampler.max_media
                                      or c.resampler.max_frames), "a resampler IDEFICS cannot express"),
        (t.tie_embeddings or t.kv_heads != t.heads or t.qkv_bias, "an LM IDEFICS cannot express"),
    ) if bad]
    if why:
        raise ValueError(f"this Flamingo does not fit transformers' IDEFICS layout: {'; '.join(why)}")
    state = dict(model.state_dict())
    text_config, text_state = export_hf(t, {k[len("language_model."):]: v for k, v in state.items()
                                           if k.startswith("language_model.")})
    out = dict(text_state)  # a Llama's keys are IDEFICS's: model.embed_tokens, model.layers, lm_head
    vision = _HF_TOWER.inverted().convert({k: v for k, v in state.items() if k.startswith("vision.")})
    out.update({f"model.{k}": v for k, v in vision.items()})
    out["model.vision_model.post_layernorm.weight"] = torch.ones(c.vision.dim)  # never read
    out["model.vision_model.post_layernorm.bias"] = torch.zeros(c.vision.dim)
    if c.resampler is not None:
        res = _HF_RESAMPLER.inverted().convert({k: v for k, v in state.items() if k.startswith("resampler.")})
        out.update({f"model.perceiver_resampler.{k}": v for k, v in res.items()})
    cross = {k: v.reshape(1, 1, -1) if k.endswith("_gate") and x.gate == "vector" else v
             for k, v in state.items() if k.startswith("cross_layers.")}
    out.update({f"model.gated_cross_attn_layers.{k}": v for k, v in _HF_CROSS.inverted().convert(cross).items()})
    v, r = c.vision, c.resampler
    hf_config: dict[str, Any] = {
        "architectures": ["IdeficsForVisionText2Text"], "model_type": "idefics", "vocab_size": t.vocab_size,
        "additional_vocab_size": 0, "hidden_size": t.dim, "intermediate_size": t.mlp_hidden,
        "num_hidden_layers": t.layers, "num_attention_heads": t.heads, "hidden_act": t.act, "rms_norm_eps": t.norm_eps,
        "max_position_embeddings": t.max_positions, "rope_parameters": text_config["rope_parameters"],
        "tie_word_embeddings": False, "cross_layer_interval": x.every, "qk_layer_norms": x.qk_norm,
        "alpha_type": x.gate, "alpha_initializer": "zeros", "use_resampler": r is not None,
        "vision_config": {"embed_dim": v.dim, "image_size": v.image_size, "patch_size": v.patch,
                          "num_hidden_layers": v.layers, "num_attention_heads": v.heads,
                          "intermediate_size": v.mlp_hidden, "num_channels": v.channels,
                          "hidden_act": {"gelu_tanh": "gelu_pytorch_tanh"}.get(v.act, v.act), "layer_norm_eps": v.eps},
        "perceiver_config": {"use_resampler": r is not None, **({} if r is None else {
            "resampler_n_latents": r.latents, "resampler_depth": r.depth, "resampler_n_heads": r.heads,
            "resampler_head_dim": r.head_dim, "qk_layer_norms_perceiver": r.qk_norm})},
        "torch_dtype": "float32",
    }
    processor = {"image_processor_type": "IdeficsImageProcessor", "image_size": v.image_size,
                 "image_mean": list(v.image_mean), "image_std": list(v.image_std), "image_num_channels": v.channels}
    extra = {"preprocessor_config.json": processor}
    if c.media_token_id is not None:
        extra["tatlas_special_tokens.json"] = {"<image>": c.media_token_id, "<|endofchunk|>": c.eoc_token_id}
    return write_hf_folder(folder, hf_config, out, extra_json=extra)


# ----------------------------------------------------------------------------------- OpenFlamingo
_OF_RESAMPLER = KeyMap((
    Rename("perceiver.latents", "resampler.latents"),
    Rename("perceiver.frame_embs", "resampler.frame_embed"),
    *_w("perceiver.layers.{i}.0.norm_media", "resampler.layers.{i}.attn.media_norm", _WB),
    *_w("perceiver.layers.{i}.0.norm_latents", "resampler.layers.{i}.attn.latent_norm", _WB),
    *_w("perceiver.layers.{i}.0.to_q", "resampler.layers.{i}.attn.attn.q"),
    Split("perceiver.layers.{i}.0.to_kv.weight", ("resampler.layers.{i}.attn.attn.k.weight",
                                                  "resampler.layers.{i}.attn.attn.v.weight")),
    *_w("perceiver.layers.{i}.0.to_out", "resampler.layers.{i}.attn.attn.out"),
    *_w("perceiver.layers.{i}.1.0", "resampler.layers.{i}.mlp_norm", _WB),
    *_w("perceiver.layers.{i}.1.1", "resampler.layers.{i}.mlp.fc1"),
    *_w("perceiver.layers.{i}.1.3", "resampler.layers.{i}.mlp.fc2"),
    *_w("perceiver.norm", "resampler.norm", _WB),
))
_OF_CROSS = KeyMap((
    Rename("{i}.attn_gate", "cross_layers.{i}.attn_gate"),
    Rename("{i}.ff_gate", "cross_layers.{i}.mlp_gate"),
    *_w("{i}.attn.norm", "cross_layers.{i}.attn_norm", _WB),
    *_w("{i}.attn.to_q", "cross_layers.{i}.attn.q"),
    Split("{i}.attn.to_kv.weight", ("cross_layers.{i}.attn.k.weight", "cross_layers.{i}.attn.v.weight")),
    *_w("{i}.attn.to_out", "cross_layers.{i}.attn.out"),
    *_w("{i}.ff.0", "cross_layers.{i}.mlp_norm", _WB),
    *_w("{i}.ff.1", "cross_layers.{i}.mlp.fc1"),
    *_w("{i}.ff.3", "cross_layers.{i}.mlp.fc2"),
))
_OF_LAYER = re.compile(r"lang_encoder\.(?:model\.layers\.(\d+)\.(decoder_layer|gated_cross_attn_layer)|"
                       r"old_decoder_blocks\.(\d+)|gated_cross_attn_layers\.(\d+))\.(.+)")


def _of_settings(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The LM's transformers ``config.json`` (required) and open_clip's ``open_clip_config.json``
    (optional) beside an OpenFlamingo checkpoint."""
    folder = path if path.is_dir() else path.parent
    lm = folder / "config.json"
    if not lm.is_file():
        raise CheckpointError(f"{path}: an OpenFlamingo checkpoint needs its language model's transformers config.json "
                              f"beside it (its heads cannot be read off the weights); none at {lm}")
    clip = folder / "open_clip_config.json"
    raw = json.loads(clip.read_text()) if clip.is_file() else {}
    return json.loads(lm.read_text()), raw.get("model_cfg", raw)


def from_open_flamingo(path: str | Path) -> tuple[FlamingoConfig, dict[str, Tensor]]:
    """An ``open_flamingo.Flamingo`` state dict (``torch.save(model.state_dict())``, read with
    ``weights_only=True``; or safetensors) -> (config, state). Beside it: the LM's ``config.json``,
    optionally ``open_clip_config.json`` (tower heads and activation; without it, OpenAI's CLIP
    tower as the released models have: 64-wide heads, QuickGELU) and ``tokenizer.json``
    (``<image>``/``<|endofchunk|>`` ids; else the factory's order, the last two rows of the
    vocabulary). Attention is 64 wide per head in the resampler and gated layers, as the factory
    builds them."""
    path = Path(path)
    tensors = read_tensors(path)
    lm_hf, clip_cfg = _of_settings(path)
    if not any(k.startswith("lang_encoder.model.embed_tokens") for k in tensors) or "vision_encoder.conv1.weight" not in tensors:
        raise CheckpointError(f"{path}: not a whole OpenFlamingo state dict (no lang_encoder.model.embed_tokens / "
                              "vision_encoder.conv1.weight); the released checkpoint.pt files hold only the trained "
                              "parts: load them into the full model first")
    text, cross_src, vision, rest = {}, {}, {}, {}
    for key, t in tensors.items():
        m = _OF_LAYER.match(key)
        if m:
            layer = int(m.group(1) or m.group(3) or m.group(4))
            kind = m.group(2) or ("decoder_layer" if m.group(3) else "gated_cross_attn_layer")
            if kind == "decoder_layer":
                text.setdefault(f"model.layers.{layer}.{m.group(5)}", t)
            else:
                cross_src.setdefault((layer, m.group(5)), t)
        elif key.startswith("lang_encoder."):
            text[key[len("lang_encoder."):]] = t
        elif key.startswith("vision_encoder."):
            vision["visual." + key[len("vision_encoder."):]] = t
        else:
            rest[key] = t
    layers = sorted({i for i, _ in cross_src})
    if not layers:
        raise CheckpointError(f"{path}: no gated cross-attention layers (lang_encoder...gated_cross_attn_layer)")
    every = layers[1] - layers[0] if len(layers) > 1 else lm_hf["num_hidden_layers"]
    text_config, text_state = convert_hf(lm_hf, text)
    n = text_config.layers
    expect = tuple(range(every - 1, n, every))
    if tuple(layers) != expect:
        raise CheckpointError(f"{path}: gated layers before LM layers {layers}; OpenFlamingo places them at "
                              f"(i + 1) % every == 0, expected {list(expect)}")
    index = {layer: j for j, layer in enumerate(layers)}
    cross = _OF_CROSS.convert({f"{index[i]}.{k}": t for (i, k), t in cross_src.items()})
    c0 = cross_src[(layers[0], "attn.to_q.weight")]
    vcfg = clip_cfg.get("vision_cfg") or {}
    conv = vision["visual.conv1.weight"]
    width, patch = conv.shape[0], conv.shape[-1]
    grid = round((vision["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    n_blocks = len({k.split(".")[3] for k in vision if k.startswith("visual.transformer.resblocks.")})
    head_width = int(vcfg.get("head_width", 64))
    if width % head_width:
        raise CheckpointError(f"{path}: the vision tower is {width} wide, not a multiple of its head width {head_width} "
                              "(set vision_cfg.head_width in open_clip_config.json beside the checkpoint)")
    # no open_clip_config.json: OpenAI's ViT-L/14, the tower of every released OpenFlamingo, QuickGELU
    quick = clip_cfg.get("quick_gelu", False) if clip_cfg else True
    tower = CLIPVisionConfig(image_size=patch * grid, patch=patch, dim=width, layers=n_blocks,
                             heads=width // head_width, channels=conv.shape[1],
                             mlp_hidden=vision["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
                             act="quick_gelu" if quick else "gelu")
    vision.pop("visual.proj", None)  # the pooled embedding's projection: Flamingo reads the tokens
    state = KeyMap(tuple(r for r in OPENAI_CLIP.rules if getattr(r, "src", "").startswith("visual.")
                         and r.src != "visual.proj")).convert(vision)
    resampler_src = {k: t for k, t in rest.items() if k.startswith("perceiver.")}
    unread = sorted(set(rest) - set(resampler_src))
    if unread:
        raise CheckpointError(f"{path}: tensors no Flamingo part reads: {unread[:5]}")
    time = resampler_src.pop("perceiver.media_time_embs", None)
    state.update(_OF_RESAMPLER.convert(resampler_src))
    if time is not None:
        state["resampler.time_embed"] = time.reshape(time.shape[0], -1)
    depth = len({k.split(".")[2] for k in resampler_src if k.startswith("perceiver.layers.")})
    inner = resampler_src["perceiver.layers.0.0.to_q.weight"].shape[0]
    resampler = ResamplerConfig(
        depth=depth, heads=inner // 64, head_dim=64, latents=resampler_src["perceiver.latents"].shape[0],
        mlp_mult=resampler_src["perceiver.layers.0.1.1.weight"].shape[0] // width,
        max_media=None if time is None else time.shape[0],
        max_frames=None if "perceiver.frame_embs" not in resampler_src else resampler_src["perceiver.frame_embs"].shape[0])
    cross_cfg = CrossConfig(every=every, first=every - 1, heads=c0.shape[0] // 64, head_dim=64, norm="layer",
                            mlp="plain", mlp_hidden=cross_src[(layers[0], "ff.1.weight")].shape[0], act="gelu")
    ids = _special_ids(path if path.is_dir() else path.parent)
    ids.setdefault("eoc_token_id", text_config.vocab_size - 2)
    ids.setdefault("media_token_id", text_config.vocab_size - 1)
    config = FlamingoConfig(text=text_config, vision=tower, cross=cross_cfg, resampler=resampler,
                            vision_tokens="patches", **ids)
    state.update({f"language_model.{k}": v for k, v in text_state.items()})
    state.update(cross)
    return config, state
