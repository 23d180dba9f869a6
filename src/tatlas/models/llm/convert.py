"""Hugging Face Llama / Mistral / Qwen2 / Gemma 3 (text and image-text) folders <-> ours.

Hugging Face stores q/k projections already in the half-split rotary layout we use, so the maps
are renames (and one transpose: Gemma 3's projector weight is stored ``[in, out]``). Rotary
settings are read from ``rope_parameters`` (transformers 5) or ``rope_theta``/``rope_scaling``
(transformers 4 folders); Gemma 3 image-text folders saved by transformers 4 use other prefixes
(``language_model.model.``, ``vision_tower.vision_model.``), mapped first. Mixtral / Qwen2-MoE /
DeepSeek-V3 MoE blocks map through :func:`hf_moe_keymap` (Switch blocks: :func:`switch_from_hf`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from ...io import TRANSPOSE, CheckpointError, KeyMap, Rename, Stack, read_tensors, write_hf_folder
from ...io.checkpoint import read_json
from ...nn.positions import Llama3Scaling
from .config import LatentConfig, LLMConfig, MoEConfig, VisionConfig, uniform_layers


def _decoder_rules(src: str) -> tuple[Rename, ...]:
    """Decoder-layer renames with HF keys under ``src`` (e.g. ``"model."``)."""
    return (
        Rename(f"{src}embed_tokens.weight", "embed.weight"),
        *(Rename(f"{src}layers.{{i}}.self_attn.{hf}_proj.{p}", f"layers.{{i}}.attn.{ours}.{p}")
          for hf, ours in (("q", "q"), ("k", "k"), ("v", "v"), ("o", "out")) for p in ("weight", "bias")),
        Rename(f"{src}layers.{{i}}.self_attn.q_norm.weight", "layers.{i}.attn.q_norm.weight"),
        Rename(f"{src}layers.{{i}}.self_attn.k_norm.weight", "layers.{i}.attn.k_norm.weight"),
        *(Rename(f"{src}layers.{{i}}.mlp.{hf}_proj.weight", f"layers.{{i}}.mlp.{hf}.weight")
          for hf in ("gate", "up", "down")),
        Rename(f"{src}layers.{{i}}.input_layernorm.weight", "layers.{i}.attn_norm.weight"),
        Rename(f"{src}norm.weight", "norm.weight"),
        Rename("lm_head.weight", "lm_head.weight"),
    )


HF_LLAMA = KeyMap(
    rules=(*_decoder_rules("model."),
           Rename("model.layers.{i}.post_attention_layernorm.weight", "layers.{i}.mlp_norm.weight")),
    ignore=("model.layers.{i}.self_attn.rotary_emb.inv_freq", "model.rotary_emb.inv_freq"),
)

_GEMMA_SANDWICH = (
    ("post_attention_layernorm", "attn_post_norm"),
    ("pre_feedforward_layernorm", "mlp_norm"),
    ("post_feedforward_layernorm", "mlp_post_norm"),
)


def _gemma3_text_rules(src: str) -> tuple[Rename, ...]:
    return (*_decoder_rules(src),
            *(Rename(f"{src}layers.{{i}}.{hf}.weight", f"layers.{{i}}.{ours}.weight") for hf, ours in _GEMMA_SANDWICH))


HF_GEMMA3_TEXT = KeyMap(rules=_gemma3_text_rules("model."))

_V = "model.vision_tower."
HF_GEMMA3 = KeyMap(
    rules=(
        *_gemma3_text_rules("model.language_model."),
        Rename(f"{_V}embeddings.patch_embedding.weight", "vision.patch_embed.proj.weight"),
        Rename(f"{_V}embeddings.patch_embedding.bias", "vision.patch_embed.proj.bias"),
        Rename(f"{_V}embeddings.position_embedding.weight", "vision.positions.weight"),
        *(Rename(f"{_V}encoder.layers.{{i}}.{hf}.{p}", f"vision.blocks.{{i}}.{ours}.{p}")
          for hf, ours in (("layer_norm1", "attn_norm"), ("self_attn.q_proj", "attn.q"), ("self_attn.k_proj", "attn.k"),
                           ("self_attn.v_proj", "attn.v"), ("self_attn.out_proj", "attn.out"),
                           ("layer_norm2", "mlp_norm"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2"))
          for p in ("weight", "bias")),
        Rename(f"{_V}post_layernorm.weight", "vision.post_norm.weight"),
        Rename(f"{_V}post_layernorm.bias", "vision.post_norm.bias"),
        Rename("model.multi_modal_projector.mm_input_projection_weight", "projector.proj.weight", TRANSPOSE),
        Rename("model.multi_modal_projector.mm_soft_emb_norm.weight", "projector.norm.weight"),
    ),
    ignore=(f"{_V}head.{{path}}",),  # SigLIP's pooling head: Gemma 3 uses the patch tokens
)

# Gemma 3 image-text checkpoints on disk use older prefixes (the hub's from transformers 4, and
# transformers 5's save_pretrained still writes ``language_model.model.`` and ``vision_tower.``)
GEMMA3_LEGACY_PREFIXES = KeyMap(rules=(
    Rename("language_model.model.{path}", "model.language_model.{path}"),
    Rename("language_model.lm_head.weight", "lm_head.weight"),
    Rename("vision_tower.vision_model.{path}", "model.vision_tower.{path}"),
    Rename("vision_tower.{path}", "model.vision_tower.{path}"),
    Rename("multi_modal_projector.{path}", "model.multi_modal_projector.{path}"),
    Rename("model.{path}", "model.{path}"),
    Rename("lm_head.weight", "lm_head.weight"),
))

# --------------------------------------------------------------------------- mixture-of-experts blocks


def hf_moe_keymap(kind: str, *, src: str = "", dst: str = "") -> KeyMap:
    """The key map from a transformers MoE block's state to :class:`~tatlas.nn.moe.MoE`'s, for ``kind`` in
    ``"mixtral"`` (``MixtralSparseMoeBlock``), ``"qwen2_moe"`` (``Qwen2MoeSparseMoeBlock``) and
    ``"deepseek_v3"`` (``DeepseekV3MoE``). ``src``/``dst`` prefix the keys on either side and may hold
    placeholders, e.g. ``src="model.layers.{i}.mlp.", dst="layers.{i}.mlp."``. No tensor is transformed:
    the stacked expert layout is transformers' own (``gate.weight -> router.weight``,
    ``gate.e_score_correction_bias -> router.correction_bias``, ``experts.gate_up_proj -> experts.gate_up``,
    ``experts.down_proj -> experts.down``, ``shared_expert(s).{gate,up,down}_proj.weight ->
    shared.{gate,up,down}.weight``, ``shared_expert_gate.weight -> shared_gate.weight``).

    Build the matching layer as ``MoE(router=..., experts=Experts(dim=C, hidden=I, experts=E), ...)`` with
    ``TopKRouter(normalize=True)`` (Mixtral); ``TopKRouter(normalize=norm_topk_prob)``,
    ``shared=GatedMLP(dim=C, hidden=shared_expert_intermediate_size)`` and
    ``shared_gate=nn.Linear(C, 1, bias=False)`` (Qwen2-MoE); ``DeepSeekRouter(groups=n_group,
    topk_groups=topk_group, scaling=routed_scaling_factor, normalize=norm_topk_prob)`` and
    ``shared=GatedMLP(dim=C, hidden=n_shared_experts * moe_intermediate_size)`` (DeepSeek-V3)."""
    if kind not in ("mixtral", "qwen2_moe", "deepseek_v3"):
        raise ValueError(f"kind: expected 'mixtral', 'qwen2_moe' or 'deepseek_v3', got {kind!r}")
    pairs = [("gate.weight", "router.weight"), ("experts.gate_up_proj", "experts.gate_up"),
             ("experts.down_proj", "experts.down")]
    shared = {"qwen2_moe": "shared_expert", "deepseek_v3": "shared_experts"}.get(kind)
    if shared:
        pairs += [(f"{shared}.{p}_proj.weight", f"shared.{p}.weight") for p in ("gate", "up", "down")]
    if kind == "qwen2_moe":
        pairs.append(("shared_expert_gate.weight", "shared_gate.weight"))
    if kind == "deepseek_v3":
        pairs.append(("gate.e_score_correction_bias", "router.correction_bias"))
    return KeyMap(tuple(Rename(src + a, dst + b) for a, b in pairs))


def switch_from_hf(state: Mapping[str, Tensor], *, src: str = "", dst: str = "") -> dict[str, Tensor]:
    """A transformers ``SwitchTransformersSparseMLP`` state (keys under ``src``) -> :class:`~tatlas.nn.moe.MoE`'s
    (keys under ``dst``; build it with ``router=SwitchRouter(capacity=expert_capacity, bias=router_bias)``,
    ``experts=Experts(gated=False, act=dense_act_fn)``): ``router.classifier.{weight,bias} ->
    router.{weight,bias}``; per-expert ``experts.expert_{j}.wi.weight [I, C]`` / ``wo.weight [C, I]`` stacked
    over ``j`` into ``experts.up [E, I, C]`` / ``experts.down [E, C, I]``. Strict: any other key under ``src``
    is an error. (Switch layers are used by tests and benchmarks; no Switch system is registered.)"""
    keymap = KeyMap((
        Rename(f"{src}router.classifier.weight", f"{dst}router.weight"),
        Rename(f"{src}router.classifier.bias", f"{dst}router.bias"),
        Stack((f"{src}experts.expert_{{j}}.wi.weight",), f"{dst}experts.up"),
        Stack((f"{src}experts.expert_{{j}}.wo.weight",), f"{dst}experts.down"),
    ))
    return keymap.convert({k: v for k, v in state.items() if k.startswith(src)})


def _moe_rules(kind: str) -> tuple[Rename | Stack, ...]:
    """Both on-disk layouts: stacked experts (transformers 5 in memory) and one tensor per expert
    (the hub's checkpoints, and what transformers 5's save_pretrained writes)."""
    fused = hf_moe_keymap(kind, src="model.layers.{i}.mlp.", dst="layers.{i}.mlp.").rules
    ours = "layers.{i}.mlp."
    if kind == "mixtral":
        hf = "model.layers.{i}.block_sparse_moe."
        per_expert = (
            Stack((f"{hf}experts.{{j}}.w1.weight", f"{hf}experts.{{j}}.w3.weight"), f"{ours}experts.gate_up"),
            Stack((f"{hf}experts.{{j}}.w2.weight",), f"{ours}experts.down"),
            Rename(f"{hf}gate.weight", f"{ours}router.weight"),
        )
    else:
        hf = "model.layers.{i}.mlp."
        per_expert = (
            Stack((f"{hf}experts.{{j}}.gate_proj.weight", f"{hf}experts.{{j}}.up_proj.weight"), f"{ours}experts.gate_up"),
            Stack((f"{hf}experts.{{j}}.down_proj.weight",), f"{ours}experts.down"),
        )
    return (*fused, *per_expert)


_LLAMA_DENSE = HF_LLAMA.rules
HF_MIXTRAL = KeyMap(rules=(*_LLAMA_DENSE, *_moe_rules("mixtral")), ignore=HF_LLAMA.ignore)
HF_QWEN2_MOE = KeyMap(rules=(*_LLAMA_DENSE, *_moe_rules("qwen2_moe")), ignore=HF_LLAMA.ignore)
HF_DEEPSEEK_V3 = KeyMap(
    rules=(
        *_LLAMA_DENSE,
        *_moe_rules("deepseek_v3"),
        *(Rename(f"model.layers.{{i}}.self_attn.{hf}.weight", f"layers.{{i}}.attn.{ours}.weight")
          for hf, ours in (("q_a_proj", "q_a"), ("q_a_layernorm", "q_norm"), ("q_b_proj", "q_b"),
                           ("kv_a_proj_with_mqa", "kv_a"), ("kv_a_layernorm", "kv_norm"), ("kv_b_proj", "kv_b"))),
        *(Rename(f"model.layers.{{i}}.self_attn.{hf}.bias", f"layers.{{i}}.attn.{ours}.bias")
          for hf, ours in (("q_a_proj", "q_a"), ("kv_a_proj_with_mqa", "kv_a"))),
    ),
    # multi-token-prediction layers (beyond num_hidden_layers) are not part of next-token decoding
    ignore=(*HF_LLAMA.ignore,),
)

HF_ARCHITECTURES = {
    "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
    "gemma3_text": "Gemma3ForCausalLM", "gemma3": "Gemma3ForConditionalGeneration",
    "mixtral": "MixtralForCausalLM", "qwen2_moe": "Qwen2MoeForCausalLM", "deepseek_v3": "DeepseekV3ForCausalLM",
}
_KEYMAPS = {"mixtral": HF_MIXTRAL, "qwen2_moe": HF_QWEN2_MOE, "deepseek_v3": HF_DEEPSEEK_V3}


def _moe_config(hf: dict[str, Any], model_type: str) -> tuple[MoEConfig, dict[str, Any]]:
    """The MoE settings of a Mixtral / Qwen2-MoE / DeepSeek-V3 config, and LLMConfig extras."""
    layers = hf["num_hidden_layers"]
    if model_type == "mixtral":
        return MoEConfig(experts=hf["num_local_experts"], k=hf["num_experts_per_tok"], hidden=hf["intermediate_size"],
                         aux_loss_weight=float(hf.get("router_aux_loss_coef", 0.0))), {}
    if model_type == "qwen2_moe":
        step, dense = hf.get("decoder_sparse_step", 1), set(hf.get("mlp_only_layers") or [])
        moe_layers = tuple(i for i in range(layers) if i not in dense and (i + 1) % step == 0)
        return MoEConfig(experts=hf["num_experts"], k=hf["num_experts_per_tok"], hidden=hf["moe_intermediate_size"],
                         normalize=bool(hf.get("norm_topk_prob", False)),
                         shared_hidden=hf.get("shared_expert_intermediate_size", 0),
                         shared_gate=bool(hf.get("shared_expert_intermediate_size", 0)),
                         layers=None if len(moe_layers) == layers else moe_layers,
                         aux_loss_weight=float(hf.get("router_aux_loss_coef", 0.0))), {}
    first, freq = hf.get("first_k_dense_replace", 0), hf.get("moe_layer_freq", 1)
    moe_layers = tuple(i for i in range(layers) if i >= first and i % freq == 0)
    if hf.get("topk_method", "noaux_tc") != "noaux_tc":
        raise CheckpointError(f"DeepSeek topk_method {hf['topk_method']!r} is not supported (only noaux_tc)")
    moe = MoEConfig(experts=hf["n_routed_experts"], k=hf["num_experts_per_tok"], hidden=hf["moe_intermediate_size"],
                    router="deepseek", normalize=bool(hf.get("norm_topk_prob", True)),
                    shared_hidden=hf.get("n_shared_experts", 0) * hf["moe_intermediate_size"],
                    groups=hf.get("n_group", 1), topk_groups=hf.get("topk_group", 1),
                    scaling=float(hf.get("routed_scaling_factor", 1.0)),
                    layers=None if len(moe_layers) == layers else moe_layers)
    latent = LatentConfig(kv_rank=hf["kv_lora_rank"], nope_dim=hf["qk_nope_head_dim"], rope_dim=hf["qk_rope_head_dim"],
                          v_dim=hf["v_head_dim"], q_rank=hf.get("q_lora_rank"))
    return moe, {"latent": latent, "rope_interleaved": bool(hf.get("rope_interleave", True))}


def _rope(params: dict[str, Any], legacy: dict[str, Any] | None = None, theta: float = 10_000.0
          ) -> tuple[float, Llama3Scaling | None]:
    legacy = legacy or {}
    theta = float(params.get("rope_theta", theta))
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


def _gemma3_text_config(hf: dict[str, Any], **extra: Any) -> LLMConfig:
    rope = hf.get("rope_parameters") or {}
    full = rope.get("full_attention", rope)
    local = rope.get("sliding_attention", {})
    theta, scaling = _rope(full, None, float(hf.get("rope_theta", 1_000_000.0)))
    if local.get("rope_type", "default") != "default":
        raise CheckpointError(f"rotary scaling {local['rope_type']!r} on local layers is not supported")
    local_theta = float(local.get("rope_theta", hf.get("rope_local_base_freq", 10_000.0)))
    if hf.get("attn_logit_softcapping") is not None:
        raise CheckpointError("attention logit soft-capping is not supported (Gemma 2 style); Gemma 3 has none")
    if hf.get("use_bidirectional_attention"):
        raise CheckpointError("use_bidirectional_attention=True (an encoder) is not a decoder LM")
    layers = hf["num_hidden_layers"]
    types = hf.get("layer_types") or [
        "full_attention" if (i + 1) % hf.get("sliding_window_pattern", 6) == 0 else "sliding_attention"
        for i in range(layers)]
    return LLMConfig(
        vocab_size=hf["vocab_size"], dim=hf["hidden_size"], layers=layers, heads=hf["num_attention_heads"],
        kv_heads=hf["num_key_value_heads"], mlp_hidden=hf["intermediate_size"], head_dim=hf.get("head_dim", 256),
        max_positions=hf.get("max_position_embeddings", 131_072), rope_theta=theta, rope_scaling=scaling,
        rope_local_theta=local_theta, norm_eps=hf.get("rms_norm_eps", 1e-6), norm_offset=1.0, embed_scale=True,
        qk_norm=True, sandwich_norm=True, query_scale=float(hf.get("query_pre_attn_scalar", 256)),
        qkv_bias=bool(hf.get("attention_bias", False)), sliding_window=hf.get("sliding_window"),
        layer_types=tuple("full" if t == "full_attention" else "sliding" for t in types),
        final_softcap=hf.get("final_logit_softcapping"), tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        act={"gelu_pytorch_tanh": "gelu_tanh"}.get(hf.get("hidden_activation", "gelu_pytorch_tanh"), "gelu"),
        **extra,
    )


def config_from_hf(hf: dict[str, Any]) -> LLMConfig:
    model_type = hf.get("model_type")
    if model_type not in HF_ARCHITECTURES:
        raise CheckpointError(f"model_type {model_type!r} is not a supported decoder LM ({sorted(HF_ARCHITECTURES)})")
    if model_type == "gemma3_text":
        return _gemma3_text_config(hf)
    if model_type == "gemma3":
        v = hf["vision_config"]
        vision = VisionConfig(
            image_size=v["image_size"], patch=v["patch_size"], dim=v["hidden_size"], layers=v["num_hidden_layers"],
            heads=v["num_attention_heads"], mlp_hidden=v["intermediate_size"], channels=v.get("num_channels", 3),
            act={"gelu_pytorch_tanh": "gelu_tanh"}.get(v.get("hidden_act", "gelu_pytorch_tanh"), "gelu"),
            eps=v.get("layer_norm_eps", 1e-6), tokens_per_image=hf.get("mm_tokens_per_image", 256),
        )
        text = {**hf["text_config"], "tie_word_embeddings": hf.get("tie_word_embeddings",
                                                                   hf["text_config"].get("tie_word_embeddings", True))}
        return _gemma3_text_config(text, vision=vision,
                                   image_token_id=hf.get("image_token_id", hf.get("image_token_index")))
    theta, scaling = _rope(hf.get("rope_parameters") or {}, hf.get("rope_scaling"), float(hf.get("rope_theta", 10_000.0)))
    heads = hf["num_attention_heads"]
    window = hf.get("sliding_window") if model_type in ("mistral", "mixtral") else None
    if model_type in ("qwen2", "qwen2_moe") and hf.get("use_sliding_window"):
        raise CheckpointError(f"{model_type} with use_sliding_window=True is not supported")
    extra: dict[str, Any] = {}
    if model_type in _KEYMAPS:
        extra["moe"], more = _moe_config(hf, model_type)
        extra.update(more)
    return LLMConfig(
        vocab_size=hf["vocab_size"], dim=hf["hidden_size"], layers=hf["num_hidden_layers"], heads=heads,
        kv_heads=hf.get("num_key_value_heads") or heads, mlp_hidden=hf["intermediate_size"],
        head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
        layer_types=uniform_layers(hf["num_hidden_layers"], window), max_positions=hf.get("max_position_embeddings", 2048),
        rope_theta=theta, rope_scaling=scaling, norm_eps=hf.get("rms_norm_eps", 1e-6),
        qkv_bias=bool(hf.get("attention_bias", hf.get("qkv_bias", model_type in ("qwen2", "qwen2_moe")))),
        sliding_window=window, tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        act=hf.get("hidden_act", "silu"), **extra,
    )


def from_hf(folder: Path) -> tuple[LLMConfig, dict[str, Tensor]]:
    """A Hugging Face Llama/Mistral/Qwen2/Gemma 3 folder -> (config, state dict)."""
    return convert_hf(read_json(Path(folder) / "config.json"), read_tensors(folder))


def convert_hf(hf: dict[str, Any], tensors: dict[str, Tensor]) -> tuple[LLMConfig, dict[str, Tensor]]:
    """A transformers config dict and its tensors (a causal LM's keys) -> (config, state dict)."""
    config = config_from_hf(hf)
    if hf["model_type"] == "gemma3":
        state = HF_GEMMA3.convert(GEMMA3_LEGACY_PREFIXES.convert(tensors))
    elif hf["model_type"] == "gemma3_text":
        state = HF_GEMMA3_TEXT.convert(tensors)
    elif hf["model_type"] in _KEYMAPS:
        layers = config.layers  # DeepSeek's multi-token-prediction layers come after the decoder's
        extra = [k for k in tensors if k.startswith("model.layers.") and int(k.split(".")[2]) >= layers]
        state = _KEYMAPS[hf["model_type"]].convert({k: v for k, v in tensors.items() if k not in extra})
    else:
        state = HF_LLAMA.convert(tensors)
    if config.tie_embeddings:
        state["lm_head.weight"] = state["embed.weight"]
    return config, state


def to_hf(model, folder: str | Path) -> Path:
    """Write a Llama-architecture ``model`` as a Hugging Face folder: ``LlamaForCausalLM``, or
    ``Qwen2ForCausalLM`` when it has q/k/v biases (Llama's ``attention_bias`` would add one to the
    output projection too)."""
    hf_config, hf_state = export_hf(model.config, dict(model.state_dict()))
    return write_hf_folder(folder, hf_config, hf_state)


def export_hf(c: LLMConfig, state: dict[str, Tensor]) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Our config and state dict -> a transformers Llama/Qwen2 config dict and its tensors."""
    llama_like = (c.sliding_window is None and not c.sandwich_norm and not c.qk_norm and not c.embed_scale
                  and c.norm_offset == 0.0 and c.query_scale is None and c.final_softcap is None and c.vision is None
                  and c.moe is None and c.latent is None and not c.rope_interleaved)
    if not llama_like:
        raise ValueError("only Llama-architecture models export to a Llama folder (this config would change outputs)")
    state = dict(state)
    if c.tie_embeddings:
        state.pop("lm_head.weight", None)
    hf_state = HF_LLAMA.inverted().convert(state)
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": c.rope_theta}
    if c.rope_scaling is not None:
        s = c.rope_scaling
        rope = {"rope_type": "llama3", "rope_theta": c.rope_theta, "factor": s.factor,
                "low_freq_factor": s.low_freq_factor, "high_freq_factor": s.high_freq_factor,
                "original_max_position_embeddings": s.original_max_positions}
    arch, model_type = ("Qwen2ForCausalLM", "qwen2") if c.qkv_bias else ("LlamaForCausalLM", "llama")
    hf_config = {
        "architectures": [arch], "model_type": model_type, "vocab_size": c.vocab_size,
        "hidden_size": c.dim, "intermediate_size": c.mlp_hidden, "num_hidden_layers": c.layers,
        "num_attention_heads": c.heads, "num_key_value_heads": c.kv_heads, "head_dim": c.head_dim,
        "max_position_embeddings": c.max_positions, "rms_norm_eps": c.norm_eps, "rope_parameters": rope,
        "attention_bias": c.qkv_bias, "mlp_bias": False, "tie_word_embeddings": c.tie_embeddings,
        "hidden_act": c.act, "torch_dtype": "float32",
    }
    return hf_config, hf_state
