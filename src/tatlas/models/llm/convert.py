"""Hugging Face Llama / Mistral / Qwen2 folders <-> ours.

Hugging Face stores q/k projections already in the half-split rotary layout we use, so the map is
renames only. Rotary settings are read from ``rope_parameters`` (transformers 5) or
``rope_theta``/``rope_scaling`` (transformers 4 folders)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import Tensor

from ...io import CheckpointError, KeyMap, Rename, read_tensors
from ...io.checkpoint import _dedupe
from ...nn.positions import Llama3Scaling
from .config import LLMConfig

HF_LLAMA = KeyMap(
    rules=(
        Rename("model.embed_tokens.weight", "embed.weight"),
        *(Rename(f"model.layers.{{i}}.self_attn.{hf}_proj.{p}", f"layers.{{i}}.attn.{ours}.{p}")
          for hf, ours in (("q", "q"), ("k", "k"), ("v", "v"), ("o", "out")) for p in ("weight", "bias")),
        *(Rename(f"model.layers.{{i}}.mlp.{hf}_proj.weight", f"layers.{{i}}.mlp.{hf}.weight")
          for hf in ("gate", "up", "down")),
        Rename("model.layers.{i}.input_layernorm.weight", "layers.{i}.attn_norm.weight"),
        Rename("model.layers.{i}.post_attention_layernorm.weight", "layers.{i}.mlp_norm.weight"),
        Rename("model.norm.weight", "norm.weight"),
        Rename("lm_head.weight", "lm_head.weight"),
    ),
    ignore=(r"model.layers.{i}.self_attn.rotary_emb.inv_freq", "model.rotary_emb.inv_freq"),
)

HF_ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def _rope(hf: dict[str, Any]) -> tuple[float, Llama3Scaling | None]:
    params = hf.get("rope_parameters") or {}
    legacy = hf.get("rope_scaling") or {}
    theta = float(params.get("rope_theta", hf.get("rope_theta", 10_000.0)))
    scaling = params if params.get("rope_type", "default") != "default" else legacy
    kind = scaling.get("rope_type", scaling.get("type", "default")) if scaling else "default"
    if kind == "default":
        return theta, None
    if kind != "llama3":
        raise CheckpointError(f"rotary scaling {kind!r} is not supported (supported: default, llama3)")
    return theta, Llama3Scaling(
        factor=float(scaling["factor"]), low_freq_factor=float(scaling["low_freq_factor"]),
        high_freq_factor=float(scaling["high_freq_factor"]),
        original_max_positions=int(scaling["original_max_position_embeddings"]),
    )


def config_from_hf(hf: dict[str, Any]) -> LLMConfig:
    model_type = hf.get("model_type")
    if model_type not in HF_ARCHITECTURES:
        raise CheckpointError(f"model_type {model_type!r} is not a Llama-family text model ({sorted(HF_ARCHITECTURES)})")
    theta, scaling = _rope(hf)
    heads = hf["num_attention_heads"]
    window = hf.get("sliding_window") if model_type == "mistral" else None
    if model_type == "qwen2" and hf.get("use_sliding_window"):
        raise CheckpointError("Qwen2 with use_sliding_window=True is not supported")
    return LLMConfig(
        vocab_size=hf["vocab_size"], dim=hf["hidden_size"], layers=hf["num_hidden_layers"], heads=heads,
        kv_heads=hf.get("num_key_value_heads") or heads, mlp_hidden=hf["intermediate_size"],
        head_dim=hf.get("head_dim"), max_positions=hf.get("max_position_embeddings", 2048),
        rope_theta=theta, rope_scaling=scaling, norm_eps=hf.get("rms_norm_eps", 1e-6),
        qkv_bias=bool(hf.get("attention_bias", model_type == "qwen2")), sliding_window=window,
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)), act=hf.get("hidden_act", "silu"),
    )


def from_hf(folder: Path) -> tuple[LLMConfig, dict[str, Tensor]]:
    """A Hugging Face Llama/Mistral/Qwen2 folder -> (config, state dict)."""
    hf = json.loads((Path(folder) / "config.json").read_text())
    config = config_from_hf(hf)
    state = HF_LLAMA.convert(read_tensors(folder))
    if config.tie_embeddings:
        state["lm_head.weight"] = state["embed.weight"]
    return config, state


def to_hf(model, folder: str | Path) -> Path:
    """Write ``model`` as a Hugging Face ``LlamaForCausalLM`` folder (config.json + model.safetensors)."""
    from safetensors.torch import save_file

    c: LLMConfig = model.config
    if c.sliding_window is not None:
        raise ValueError("a sliding-window model has no Llama equivalent; it would change the outputs")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in model.state_dict().items()}
    if c.tie_embeddings:
        state.pop("lm_head.weight")
    hf_state = HF_LLAMA.inverted().convert(state)
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": c.rope_theta}
    if c.rope_scaling is not None:
        s = c.rope_scaling
        rope = {"rope_type": "llama3", "rope_theta": c.rope_theta, "factor": s.factor,
                "low_freq_factor": s.low_freq_factor, "high_freq_factor": s.high_freq_factor,
                "original_max_position_embeddings": s.original_max_positions}
    hf_config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": c.vocab_size,
        "hidden_size": c.dim, "intermediate_size": c.mlp_hidden, "num_hidden_layers": c.layers,
        "num_attention_heads": c.heads, "num_key_value_heads": c.kv_heads, "head_dim": c.head_size,
        "max_position_embeddings": c.max_positions, "rms_norm_eps": c.norm_eps, "rope_parameters": rope,
        "attention_bias": c.qkv_bias, "mlp_bias": False, "tie_word_embeddings": c.tie_embeddings,
        "hidden_act": c.act, "torch_dtype": "float32",
    }
    (folder / "config.json").write_text(json.dumps(hf_config, indent=2))
    tensors, _ = _dedupe(hf_state)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder
