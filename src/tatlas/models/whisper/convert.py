"""Whisper checkpoints from the formats people have on disk -> ours, and back.

- Hugging Face folders (``config.json`` with ``model_type: "whisper"``, ``WhisperForConditionalGeneration``);
- openai-whisper ``.pt`` files (``{"dims": ..., "model_state_dict": ...}``, read with ``weights_only=True``);
- CTranslate2 Whisper folders (``model.bin``, e.g. faster-whisper's conversions; see :mod:`tatlas.io.ctranslate2`).

Each format names the same tensors differently; one table per format gives the names of a block's
parts, and one function builds the :class:`~tatlas.io.KeyMap` from it. The released models have no
key bias; our fused self-attention projection gets a zero key-bias slice (see :mod:`.model`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ...io import CheckpointError, Fuse, KeyMap, Rename, Split, load_torch_file, read_tensors, write_hf_folder
from ...io.checkpoint import read_json
from .config import ENGLISH_VOCAB, MULTILINGUAL_VOCAB, WhisperConfig

# Our block: attn_norm, attn.{qkv,out}, cross_norm, cross_attn.{q,k,v,out}, mlp_norm, mlp.{fc1,fc2}.
# Per format: the source name of each part of a block (q/k/v/out of both attentions, norms, MLP).
_HF_BLOCK = {
    "attn_norm": "self_attn_layer_norm", "q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
    "out": "self_attn.out_proj", "cross_norm": "encoder_attn_layer_norm", "cross_q": "encoder_attn.q_proj",
    "cross_k": "encoder_attn.k_proj", "cross_v": "encoder_attn.v_proj", "cross_out": "encoder_attn.out_proj",
    "mlp_norm": "final_layer_norm", "fc1": "fc1", "fc2": "fc2",
}
_OPENAI_BLOCK = {
    "attn_norm": "attn_ln", "q": "attn.query", "k": "attn.key", "v": "attn.value", "out": "attn.out",
    "cross_norm": "cross_attn_ln", "cross_q": "cross_attn.query", "cross_k": "cross_attn.key",
    "cross_v": "cross_attn.value", "cross_out": "cross_attn.out", "mlp_norm": "mlp_ln", "fc1": "mlp.0", "fc2": "mlp.2",
}
# Everything outside the blocks: our name -> source name.
_HF_OUTER = {
    "encoder.conv1": "model.encoder.conv1", "encoder.conv2": "model.encoder.conv2", "encoder.norm": "model.encoder.layer_norm",
    "decoder.embed": "model.decoder.embed_tokens", "decoder.positions": "model.decoder.embed_positions",
    "decoder.norm": "model.decoder.layer_norm", "encoder.layers": "model.encoder.layers",
    "decoder.layers": "model.decoder.layers",
}
_OPENAI_OUTER = {
    "encoder.conv1": "encoder.conv1", "encoder.conv2": "encoder.conv2", "encoder.norm": "encoder.ln_post",
    "decoder.embed": "decoder.token_embedding", "decoder.positions": "decoder.positional_embedding",
    "decoder.norm": "decoder.ln", "encoder.layers": "encoder.blocks", "decoder.layers": "decoder.blocks",
}


def _keymap(block: Mapping[str, str], outer: Mapping[str, str], *, positions_is_parameter: bool,
            ignore: tuple[str, ...]) -> KeyMap:
    rules: list = []
    for ours in ("encoder.conv1", "encoder.conv2", "encoder.norm", "decoder.norm"):
        rules += [Rename(f"{outer[ours]}.{p}", f"{ours}.{p}") for p in ("weight", "bias")]
    rules.append(Rename(f"{outer['decoder.embed']}.weight", "decoder.embed.weight"))
    src_pos = f"{outer['decoder.positions']}.weight" if positions_is_parameter else outer["decoder.positions"]
    rules.append(Rename(src_pos, "decoder.positions.weight"))
    for side in ("encoder", "decoder"):
        src, dst = f"{outer[f'{side}.layers']}.{{i}}", f"{side}.layers.{{i}}"
        b = {k: f"{src}.{v}" for k, v in block.items()}
        rules += [
            Fuse((f"{b['q']}.weight", f"{b['k']}.weight", f"{b['v']}.weight"), f"{dst}.attn.qkv.weight"),
            Fuse((f"{b['q']}.bias", f"{b['k']}.bias", f"{b['v']}.bias"), f"{dst}.attn.qkv.bias"),
        ]
        parts = {"out": "attn.out", "fc1": "mlp.fc1", "fc2": "mlp.fc2", "attn_norm": "attn_norm", "mlp_norm": "mlp_norm"}
        if side == "decoder":
            parts |= {"cross_norm": "cross_norm", "cross_q": "cross_attn.q", "cross_v": "cross_attn.v",
                      "cross_out": "cross_attn.out"}
            rules.append(Rename(f"{b['cross_k']}.weight", f"{dst}.cross_attn.k.weight"))
        rules += [Rename(f"{b[k]}.{p}", f"{dst}.{ours}.{p}") for k, ours in parts.items() for p in ("weight", "bias")]
    return KeyMap(rules=tuple(rules), ignore=ignore)


HF_WHISPER = _keymap(_HF_BLOCK, _HF_OUTER, positions_is_parameter=True,
                     ignore=("model.encoder.embed_positions.weight", "proj_out.weight"))
OPENAI_WHISPER = _keymap(_OPENAI_BLOCK, _OPENAI_OUTER, positions_is_parameter=False,
                         ignore=("encoder.positional_embedding",))


def _with_zero_key_bias(state: Mapping[str, Tensor], block: Mapping[str, str], outer: Mapping[str, str]) -> dict:
    """The released checkpoints have no key bias: add zeros so q/k/v biases fuse."""
    state = dict(state)
    for side in ("encoder", "decoder"):
        prefix = outer[f"{side}.layers"] + "."
        for name in [k for k in state if k.startswith(prefix) and k.endswith(f".{block['k']}.weight")]:
            bias = name[: -len("weight")] + "bias"
            state.setdefault(bias, torch.zeros(state[name].shape[0], dtype=state[name].dtype))
    return state


def _check_positions(state: Mapping[str, Tensor], name: str, config: WhisperConfig) -> None:
    """The encoder's positions are fixed sinusoids (recomputed here); a checkpoint whose stored
    ones differ was trained with something else and would silently decode garbage."""
    from ...nn import sinusoidal_positions

    stored = state.get(name)
    if stored is None:
        return
    shape = (config.audio_ctx, config.audio_dim)  # compared before the sinusoids are computed (a corrupt
    if tuple(stored.shape) != shape or not torch.allclose(  # config may state 2**31 positions)
            stored.float(), sinusoidal_positions(*shape), atol=1e-3):
        raise CheckpointError(f"{name}: the encoder positions are not Whisper's sinusoids "
                              f"(shape {list(stored.shape)}, expected {list(shape)})")


def _drop_key_bias(state: dict[str, Tensor], block: Mapping[str, str], outer: Mapping[str, str]) -> dict:
    """Inverse of :func:`_with_zero_key_bias` (the key bias cannot change attention: dropped on export)."""
    return {k: v for k, v in state.items() if not k.endswith(f".{block['k']}.bias")}


# ---------------------------------------------------------------------------------------- Hugging Face


def config_from_hf(hf: Mapping[str, Any]) -> WhisperConfig:
    if hf.get("model_type") != "whisper":
        raise CheckpointError(f"model_type {hf.get('model_type')!r} is not a Whisper model")
    d = int(hf["d_model"])
    for side in ("encoder", "decoder"):
        ffn = int(hf.get(f"{side}_ffn_dim", 4 * d))
        if ffn != 4 * d:
            raise CheckpointError(f"Whisper {side}_ffn_dim={ffn} is not supported (expected 4 x d_model = {4 * d})")
    if hf.get("activation_function", "gelu") != "gelu":
        raise CheckpointError(f"Whisper activation {hf.get('activation_function')!r} is not supported (expected gelu)")
    if hf.get("scale_embedding"):
        raise CheckpointError("Whisper scale_embedding=True is not supported")
    heads = hf.get("alignment_heads")
    gen = hf.get("_generation_alignment_heads")
    return WhisperConfig(
        mels=int(hf.get("num_mel_bins", 80)), audio_ctx=int(hf.get("max_source_positions", 1500)), audio_dim=d,
        audio_heads=int(hf["encoder_attention_heads"]), audio_layers=int(hf["encoder_layers"]),
        vocab_size=int(hf["vocab_size"]), text_ctx=int(hf.get("max_target_positions", 448)), text_dim=d,
        text_heads=int(hf["decoder_attention_heads"]), text_layers=int(hf["decoder_layers"]),
        alignment_heads=tuple(tuple(h) for h in (heads or gen)) if (heads or gen) else None,
    )


def _generation_alignment_heads(folder: Path) -> list | None:
    path = folder / "generation_config.json"
    if path.is_file():
        try:
            return json.loads(path.read_text()).get("alignment_heads")
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}: not readable JSON ({e})") from None
    return None


def from_hf(folder: Path) -> tuple[WhisperConfig, dict[str, Tensor]]:
    """A Hugging Face ``WhisperForConditionalGeneration`` folder -> (config, state dict). The
    alignment heads come from ``generation_config.json`` when it has them."""
    folder = Path(folder)
    hf = read_json(folder / "config.json")
    heads = _generation_alignment_heads(folder)
    config = config_from_hf({**hf, "alignment_heads": heads} if heads else hf)
    state = read_tensors(folder)
    _check_positions(state, "model.encoder.embed_positions.weight", config)
    proj = state.get("proj_out.weight")
    if proj is not None and not torch.equal(proj, state["model.decoder.embed_tokens.weight"]):
        raise CheckpointError("proj_out.weight differs from the token embedding: Whisper ties them")
    return config, HF_WHISPER.convert(_with_zero_key_bias(state, _HF_BLOCK, _HF_OUTER))


def to_hf(model, folder: str | Path) -> Path:
    """Write ``model`` as a Hugging Face Whisper folder (``config.json``, ``generation_config.json``
    with the alignment heads, ``model.safetensors``)."""
    from ...nn import sinusoidal_positions

    c: WhisperConfig = model.config
    state = _drop_key_bias(HF_WHISPER.inverted().convert(model.state_dict()), _HF_BLOCK, _HF_OUTER)
    state["model.encoder.embed_positions.weight"] = sinusoidal_positions(c.audio_ctx, c.audio_dim)
    english = not c.multilingual
    hf_config = {
        "architectures": ["WhisperForConditionalGeneration"], "model_type": "whisper", "vocab_size": c.vocab_size,
        "num_mel_bins": c.mels, "d_model": c.audio_dim, "encoder_layers": c.audio_layers,
        "encoder_attention_heads": c.audio_heads, "decoder_layers": c.text_layers,
        "decoder_attention_heads": c.text_heads, "encoder_ffn_dim": 4 * c.audio_dim,
        "decoder_ffn_dim": 4 * c.text_dim, "max_source_positions": c.audio_ctx, "max_target_positions": c.text_ctx,
        "activation_function": "gelu", "scale_embedding": False, "tie_word_embeddings": True,
        "decoder_start_token_id": 50257 if english else 50258, "pad_token_id": 50256 if english else 50257,
        "bos_token_id": 50256 if english else 50257, "eos_token_id": 50256 if english else 50257,
        "dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "torch_dtype": "float32",
    }
    gen = {"alignment_heads": [list(h) for h in c.heads_for_alignment]}
    return write_hf_folder(folder, hf_config, state, extra_json={"generation_config.json": gen})


# ---------------------------------------------------------------------------------------- openai-whisper


def config_from_openai(dims: Mapping[str, Any], alignment_heads=None) -> WhisperConfig:
    names = ("n_mels", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer", "n_vocab", "n_text_ctx",
             "n_text_state", "n_text_head", "n_text_layer")
    if not isinstance(dims, Mapping):
        raise CheckpointError(f"openai-whisper dims: expected a mapping of sizes, got {type(dims).__name__}")
    absent = [n for n in names if n not in dims]
    if absent:
        raise CheckpointError(f"openai-whisper dims: missing {absent}")
    return WhisperConfig(
        mels=dims["n_mels"], audio_ctx=dims["n_audio_ctx"], audio_dim=dims["n_audio_state"],
        audio_heads=dims["n_audio_head"], audio_layers=dims["n_audio_layer"], vocab_size=dims["n_vocab"],
        text_ctx=dims["n_text_ctx"], text_dim=dims["n_text_state"], text_heads=dims["n_text_head"],
        text_layers=dims["n_text_layer"], alignment_heads=alignment_heads,
    )


def from_openai(path: Path) -> tuple[WhisperConfig, dict[str, Tensor]]:
    """An openai-whisper checkpoint (``.pt`` with ``dims`` and ``model_state_dict``) -> (config, state).

    Its alignment heads are not in the file (openai-whisper keeps them beside the download URLs):
    the preset of the same dimensions supplies them when the file is a released model."""
    path = Path(path)
    raw = load_torch_file(path)
    if not isinstance(raw, dict) or "dims" not in raw or "model_state_dict" not in raw:
        raise CheckpointError(f"{path}: not an openai-whisper checkpoint (expected keys 'dims' and "
                              f"'model_state_dict', got {sorted(raw) if isinstance(raw, dict) else type(raw).__name__})")
    heads = raw.get("alignment_heads")
    if isinstance(heads, torch.Tensor):  # a model saved after set_alignment_heads: a [layers, heads] mask
        config = config_from_openai(raw["dims"], tuple(tuple(int(x) for x in ij) for ij in heads.nonzero().tolist()))
    else:
        config = _with_released_heads(config_from_openai(raw["dims"]))
    state = raw["model_state_dict"]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: model_state_dict: expected a mapping of tensors, got {type(state).__name__}")
    _check_positions(state, "encoder.positional_embedding", config)
    return config, OPENAI_WHISPER.convert(_with_zero_key_bias(state, _OPENAI_BLOCK, _OPENAI_OUTER))


def _with_released_heads(config: WhisperConfig) -> WhisperConfig:
    from dataclasses import replace

    from .config import PRESETS

    for preset in PRESETS.values():
        if replace(preset, alignment_heads=None) == replace(config, alignment_heads=None):
            return replace(config, alignment_heads=preset.alignment_heads)
    return config


def to_openai(model, path: str | Path) -> Path:
    """Write ``model`` as an openai-whisper ``.pt`` checkpoint (loadable by ``whisper.load_model``)."""
    from ...nn import sinusoidal_positions

    c: WhisperConfig = model.config
    state = _drop_key_bias(OPENAI_WHISPER.inverted().convert(model.state_dict()), _OPENAI_BLOCK, _OPENAI_OUTER)
    state["encoder.positional_embedding"] = sinusoidal_positions(c.audio_ctx, c.audio_dim)
    dims = {"n_mels": c.mels, "n_audio_ctx": c.audio_ctx, "n_audio_state": c.audio_dim, "n_audio_head": c.audio_heads,
            "n_audio_layer": c.audio_layers, "n_vocab": c.vocab_size, "n_text_ctx": c.text_ctx,
            "n_text_state": c.text_dim, "n_text_head": c.text_heads, "n_text_layer": c.text_layers}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"dims": dims, "model_state_dict": {k: v.detach().contiguous() for k, v in state.items()}}, path)
    return path


# ---------------------------------------------------------------------------------------- CTranslate2

# CTranslate2's WhisperSpec names (faster-whisper's conversions): fused self-attention q/k/v
# (``linear_0``, whose key-bias slice is zero), cross-attention q (``linear_0``) and fused k/v
# (``linear_1``), LayerNorms as gamma/beta, no transposes.
def _ct2_keymap() -> KeyMap:
    def norm(src: str, dst: str) -> list[Rename]:
        return [Rename(f"{src}/gamma", f"{dst}.weight"), Rename(f"{src}/beta", f"{dst}.bias")]

    def linear(src: str, dst: str) -> list[Rename]:
        return [Rename(f"{src}/weight", f"{dst}.weight"), Rename(f"{src}/bias", f"{dst}.bias")]

    rules: list = [*linear("encoder/conv1", "encoder.conv1"), *linear("encoder/conv2", "encoder.conv2"),
                   *norm("encoder/layer_norm", "encoder.norm"), *norm("decoder/layer_norm", "decoder.norm"),
                   Rename("decoder/embeddings/weight", "decoder.embed.weight"),
                   Rename("decoder/position_encodings/encodings", "decoder.positions.weight")]
    for side in ("encoder", "decoder"):
        src, dst = f"{side}/layer_{{i}}", f"{side}.layers.{{i}}"
        rules += [*norm(f"{src}/self_attention/layer_norm", f"{dst}.attn_norm"),
                  *linear(f"{src}/self_attention/linear_0", f"{dst}.attn.qkv"),
                  *linear(f"{src}/self_attention/linear_1", f"{dst}.attn.out"),
                  *norm(f"{src}/ffn/layer_norm", f"{dst}.mlp_norm"),
                  *linear(f"{src}/ffn/linear_0", f"{dst}.mlp.fc1"), *linear(f"{src}/ffn/linear_1", f"{dst}.mlp.fc2")]
    src, dst = "decoder/layer_{i}/attention", "decoder.layers.{i}.cross_attn"
    rules += [*norm(f"{src}/layer_norm", "decoder.layers.{i}.cross_norm"), *linear(f"{src}/linear_0", f"{dst}.q"),
              *linear(f"{src}/linear_2", f"{dst}.out"),
              Split(f"{src}/linear_1/weight", (f"{dst}.k.weight", f"{dst}.v.weight")),
              Split(f"{src}/linear_1/bias", (f"{dst}.k.bias", f"{dst}.v.bias"))]
    return KeyMap(rules=tuple(rules), ignore=("encoder/position_encodings/encodings", "decoder/projection/weight"))


CT2_WHISPER = _ct2_keymap()


def from_ct2(path: Path) -> tuple[WhisperConfig, dict[str, Tensor]]:
    """A CTranslate2 Whisper folder (``model.bin`` of spec ``WhisperSpec``; float32, float16,
    bfloat16 or int8 weights, dequantised to float32) -> (config, state dict)."""
    from ...io.ctranslate2 import dequantize, read_ct2

    ct2 = read_ct2(path)
    if ct2.spec != "WhisperSpec":
        raise CheckpointError(f"{ct2.path}: a CTranslate2 {ct2.spec!r} model, not a Whisper model (WhisperSpec)")
    tensors = dequantize(ct2.tensors)
    scalars = {k: v for k, v in tensors.items() if v.dim() == 0}
    state = {k: v for k, v in tensors.items() if v.dim() > 0}
    layers = {side: len({k.split("/")[1] for k in state if re.match(rf"{side}/layer_\d+/", k)})
              for side in ("encoder", "decoder")}
    try:
        conv1, enc_pos = state["encoder/conv1/weight"], state["encoder/position_encodings/encodings"]
        embed, dec_pos = state["decoder/embeddings/weight"], state["decoder/position_encodings/encodings"]
        heads = {side: int(scalars[f"{side}/num_heads"]) for side in ("encoder", "decoder")}
    except KeyError as e:
        raise CheckpointError(f"{ct2.path}: missing Whisper variable {e.args[0]!r}") from None
    cfg = ct2.config or {}
    config = WhisperConfig(
        mels=conv1.shape[1], audio_ctx=enc_pos.shape[0], audio_dim=conv1.shape[0], audio_heads=heads["encoder"],
        audio_layers=layers["encoder"], vocab_size=embed.shape[0], text_ctx=dec_pos.shape[0], text_dim=embed.shape[1],
        text_heads=heads["decoder"], text_layers=layers["decoder"],
        alignment_heads=tuple(tuple(h) for h in cfg["alignment_heads"]) if cfg.get("alignment_heads") else None,
    )
    _check_positions(state, "encoder/position_encodings/encodings", config)
    out = CT2_WHISPER.convert(state)
    for i in range(config.text_layers):
        k_bias = out.pop(f"decoder.layers.{i}.cross_attn.k.bias")
        if k_bias.abs().max() > 0:  # cannot change attention (see model.py), but our layer has no slot for it
            raise CheckpointError(f"{ct2.path}: decoder layer {i} has a non-zero cross-attention key bias")
    return config, out


# Scalar attributes of CTranslate2's WhisperSpec as faster-whisper's conversions store them
# (``decoder/alignment_*`` are leftovers of the generic decoder spec; the heads are in config.json).
def _ct2_scalars(c: WhisperConfig) -> dict[str, Tensor]:
    i8, i16 = torch.int8, torch.int16
    return {
        "decoder/activation": torch.tensor(3, dtype=i8),  # GELU
        "decoder/alibi": torch.tensor(0, dtype=i8),
        "decoder/alignment_heads": torch.tensor(1, dtype=i16),
        "decoder/alignment_layer": torch.tensor(-1, dtype=i16),
        "decoder/num_heads": torch.tensor(c.text_heads, dtype=i16),
        "decoder/pre_norm": torch.tensor(1, dtype=i8),
        "decoder/scale_embeddings": torch.tensor(0, dtype=i8),
        "decoder/start_from_zero_embedding": torch.tensor(0, dtype=i8),
        "encoder/num_heads": torch.tensor(c.audio_heads, dtype=i16),
    }


def to_ct2(model, folder: str | Path) -> Path:
    """Write ``model`` as a CTranslate2 Whisper folder (float32 ``model.bin``, ``config.json`` with
    the alignment heads and suppressed ids, ``vocabulary.json``) that CTranslate2 and faster-whisper
    load. The vocabulary is openai-whisper's, so the model must have a released vocabulary size."""
    from ...io.ctranslate2 import write_ct2
    from ...nn import sinusoidal_positions
    from .decoding import suppress_token_ids
    from .tokenizer import _byte_decoder, get_tokenizer

    c: WhisperConfig = model.config
    if c.vocab_size not in (ENGLISH_VOCAB, MULTILINGUAL_VOCAB, MULTILINGUAL_VOCAB + 1):
        raise ValueError(f"CTranslate2 export needs openai-whisper's vocabulary (51864, 51865 or 51866 ids), "
                         f"the model has {c.vocab_size}")
    tok = get_tokenizer(c.multilingual, num_languages=max(c.num_languages, 99))
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    for i in range(c.text_layers):  # the fused k/v bias has a zero key half (see model.py)
        state[f"decoder.layers.{i}.cross_attn.k.bias"] = torch.zeros(c.text_dim)
    tensors = {**_ct2_scalars(c), **CT2_WHISPER.inverted().convert(state),
               "encoder/position_encodings/encodings": sinusoidal_positions(c.audio_ctx, c.audio_dim)}
    vocabulary = _ct2_vocabulary(tok, {b: ch for ch, b in _byte_decoder().items()})
    config = {
        "alignment_heads": [list(h) for h in c.heads_for_alignment],
        "lang_ids": list(tok.all_language_tokens),
        "suppress_ids": suppress_token_ids(tok, "-1"),
        "suppress_ids_begin": [tok.encode(" ")[0], tok.eot],
    }
    return write_ct2(folder, "WhisperSpec", 3, tensors, {"decoder/projection/weight": "decoder/embeddings/weight"},
                     config, vocabulary)


def _ct2_vocabulary(tok, printable: dict[int, str]) -> list[str]:
    """Every id's token as CTranslate2 lists it: BPE tokens in GPT-2's printable byte characters
    (``"Ġthe"``), special tokens by name."""
    specials = {i: name for name, i in tok.special_tokens.items()}
    return [specials[i] if i in specials else "".join(printable[b] for b in tok.decode_bytes([i]))
            for i in range(tok.n_vocab)]
