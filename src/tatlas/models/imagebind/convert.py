"""The official ImageBind checkpoint (``imagebind_huge.pth``: ``torch.save(model.state_dict())`` of
``imagebind.models.imagebind_model.ImageBindModel``) -> ours, read with ``weights_only=True`` (or a
safetensors file of the same keys), and back (:func:`to_official`).

The official keys, per modality ``m``: ``modality_preprocessors.m.*`` (stem convolution or linear,
stem LayerNorm, ``cls_token [1, 1, C]``, positions ``[1, N, C]``; text: ``token_embedding``,
``pos_embed``, the causal ``mask`` buffer), ``modality_trunks.m.blocks.i.*`` (``nn.MultiheadAttention``:
``in_proj_weight/bias``, ``bias_k/bias_v [1, 1, C]``, ``out_proj``; ``norm_1``, ``mlp.fc1/fc2``,
``norm_2``; vision's ``pre_transformer_layer.0`` LayerNorm), ``modality_heads.m.*`` (LayerNorm and
projection; text's under ``proj``) and ``modality_postprocessors.m.1.log_logit_scale``.

A state dict does not hold the number of heads (nor the audio patch stride or spectrogram size,
which only the preprocessing fixes): those come from the preset whose shapes match every shape read
from the file (``imagebind_huge``, ``tiny``, ...), else from ``imagebind_huge``'s settings with 64-wide
heads; :func:`convert_state_dict` takes an explicit config.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from ...io import CheckpointError, KeyMap, Rename, Transform, read_tensors
from .config import MODALITIES, PRESETS, ImageBindConfig

_VECTOR = Transform("[1, 1, C] <-> [C]", lambda t: t.reshape(-1), lambda t: t.reshape(1, 1, -1))
_TABLE = Transform("[1, N, C] <-> [N, C]", lambda t: t.reshape(-1, t.shape[-1]), lambda t: t.unsqueeze(0))

_STEM = {  # our stem parameters <- the official preprocessor's
    "vision": (("rgbt_stem.proj.1.weight", "stem.patch.proj.weight"),),
    "text": (("token_embedding.weight", "stem.token_embed.weight"),),
    "audio": (("rgbt_stem.proj.weight", "stem.patch.proj.weight"), ("rgbt_stem.norm_layer.weight", "stem.norm.weight"),
              ("rgbt_stem.norm_layer.bias", "stem.norm.bias")),
    "depth": (("depth_stem.proj.weight", "stem.patch.proj.weight"), ("depth_stem.norm_layer.weight", "stem.norm.weight"),
              ("depth_stem.norm_layer.bias", "stem.norm.bias")),
    "thermal": (("rgbt_stem.proj.weight", "stem.patch.proj.weight"),
                ("rgbt_stem.norm_layer.weight", "stem.norm.weight"), ("rgbt_stem.norm_layer.bias", "stem.norm.bias")),
    "imu": (("imu_stem.proj.weight", "stem.proj.weight"), ("imu_stem.norm_layer.weight", "stem.norm.weight"),
            ("imu_stem.norm_layer.bias", "stem.norm.bias")),
}
_POSITIONS = {"text": "pos_embed", "imu": "pos_embed"}  # others: pos_embedding_helper.pos_embed
_HEAD = {  # (LayerNorm, projection) module paths under modality_heads.m
    "text": ("proj.0", "proj.1"), "imu": ("0", "3"),
}
_BLOCK = (("norm_1", "attn_norm"), ("attn.in_proj_weight", "attn.qkv.weight"), ("attn.in_proj_bias", "attn.qkv.bias"),
          ("attn.out_proj.weight", "attn.out.weight"), ("attn.out_proj.bias", "attn.out.bias"),
          ("norm_2", "mlp_norm"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2"))


def _rules(modality: str) -> list[Rename]:
    pre, trunk, head = (f"modality_{part}.{modality}" for part in ("preprocessors", "trunks", "heads"))
    ours = f"encoders.{modality}"
    rules = [Rename(f"{pre}.{src}", f"{ours}.{dst}") for src, dst in _STEM[modality]]
    rules.append(Rename(f"{pre}.{_POSITIONS.get(modality, 'pos_embedding_helper.pos_embed')}", f"{ours}.positions.weight",
                        _TABLE))
    if modality != "text":
        rules.append(Rename(f"{pre}.cls_token", f"{ours}.class_token", _VECTOR))
    for src, dst in _BLOCK:
        names = (src,) if src.startswith("attn.") else (f"{src}.weight", f"{src}.bias")
        for name in names:
            suffix = name[len(src):]
            rules.append(Rename(f"{trunk}.blocks.{{i}}.{name}", f"{ours}.blocks.{{i}}.{dst}{suffix}"))
    rules += [Rename(f"{trunk}.blocks.{{i}}.attn.bias_{kv}", f"{ours}.blocks.{{i}}.attn.bias_{kv}", _VECTOR)
              for kv in "kv"]
    rules += [Rename(f"{trunk}.pre_transformer_layer.0.{p}", f"{ours}.pre_norm.{p}") for p in ("weight", "bias")]
    norm, proj = _HEAD.get(modality, ("0", "2"))
    rules += [Rename(f"{head}.{norm}.{p}", f"{ours}.head_norm.{p}") for p in ("weight", "bias")]
    rules.append(Rename(f"{head}.{proj}.weight", f"{ours}.proj.weight"))
    rules.append(Rename(f"modality_postprocessors.{modality}.1.log_logit_scale", f"log_scale_{modality}",
                        Transform("[] <-> []", lambda t: t.reshape(()), lambda t: t.reshape(()))))
    return rules


def _keymap(modalities: tuple[str, ...]) -> KeyMap:
    return KeyMap(tuple(r for m in modalities for r in _rules(m)), ignore=("modality_preprocessors.text.mask",))


def _shape(state: dict[str, Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointError(f"not an ImageBind state dict: no {key!r}")
    return tuple(state[key].shape)


def infer_config(state: dict[str, Tensor]) -> ImageBindConfig:
    """The config a state dict's shapes imply (heads and the other settings no shape holds: see the
    module docstring)."""
    modalities = tuple(m for m in MODALITIES if any(k.startswith(f"modality_trunks.{m}.") for k in state))
    if not modalities:
        raise CheckpointError("not an ImageBind state dict: no modality_trunks.* keys")
    enc, shapes = {}, {}
    for m in modalities:
        layers = 1 + max(int(k.split(".")[3]) for k in state if k.startswith(f"modality_trunks.{m}.blocks."))
        dim = _shape(state, f"modality_trunks.{m}.blocks.0.norm_1.weight")[0]
        enc[m] = {"dim": dim, "layers": layers,
                  "kv_bias": f"modality_trunks.{m}.blocks.0.attn.bias_k" in state,
                  "pre_norm": f"modality_trunks.{m}.pre_transformer_layer.0.weight" in state}
        key = f"modality_postprocessors.{m}.1.log_logit_scale"
        enc[m]["logit_scale"] = float(state[key].exp()) if key in state else None
    some = modalities[0]
    proj = {"text": "modality_heads.text.proj.1.weight", "imu": "modality_heads.imu.3.weight"}.get(
        some, f"modality_heads.{some}.2.weight")
    out_dim = _shape(state, proj)[0]
    if "vision" in modalities:
        _, _, frames, patch, _ = _shape(state, "modality_preprocessors.vision.rgbt_stem.proj.1.weight")
        n = _shape(state, "modality_preprocessors.vision.pos_embedding_helper.pos_embed")[1] - 1
        shapes.update(frames=frames, patch=patch, image_size=round(n**0.5) * patch)
    if "text" in modalities:
        shapes.update(vocab_size=_shape(state, "modality_preprocessors.text.token_embedding.weight")[0],
                      context_length=_shape(state, "modality_preprocessors.text.pos_embed")[1])
    for m in ("depth", "thermal"):
        if m in modalities:
            stem = "depth_stem" if m == "depth" else "rgbt_stem"
            patch = _shape(state, f"modality_preprocessors.{m}.{stem}.proj.weight")[-1]
            n = _shape(state, f"modality_preprocessors.{m}.pos_embedding_helper.pos_embed")[1] - 1
            shapes.update({f"{m}_patch": patch, f"{m}_size": round(n**0.5) * patch})
    if "audio" in modalities:
        shapes["audio_patch"] = _shape(state, "modality_preprocessors.audio.rgbt_stem.proj.weight")[-1]
    if "imu" in modalities:
        width = _shape(state, "modality_preprocessors.imu.imu_stem.proj.weight")[1]
        n = _shape(state, "modality_preprocessors.imu.pos_embed")[1] - 1
        base = PRESETS["imagebind_huge"]
        shapes.update(imu_patch=width // base.imu_channels, imu_steps=n * (width // base.imu_channels))

    def matches(preset: ImageBindConfig) -> bool:  # every shape (the scales are read, not matched)
        return (preset.out_dim == out_dim and all(getattr(preset, k) == v for k, v in shapes.items())
                and all(all(getattr(getattr(preset, m), k) == v for k, v in enc[m].items() if k != "logit_scale")
                        for m in modalities))

    base = next((p for p in PRESETS.values() if matches(p)), None)
    if base is None:
        base = PRESETS["imagebind_huge"]
        encoders = {m: replace(getattr(base, m), **enc[m], heads=max(1, enc[m]["dim"] // 64)) for m in modalities}
    else:
        encoders = {m: replace(getattr(base, m), logit_scale=enc[m]["logit_scale"]) for m in modalities}
    return replace(base, out_dim=out_dim, modalities=modalities, **shapes, **encoders)


def convert_state_dict(state: dict[str, Tensor], config: ImageBindConfig | None = None
                       ) -> tuple[ImageBindConfig, dict[str, Tensor]]:
    """Official keys -> ``(config, our state)``; ``config`` defaults to :func:`infer_config`."""
    config = config or infer_config(state)
    state = {k: v for k, v in state.items() if not k.endswith(".num_batches_tracked")}
    return config, _keymap(config.modalities).convert(state)


def from_official(path: str | Path) -> tuple[ImageBindConfig, dict[str, Tensor]]:
    """An official ImageBind checkpoint file (``.pth`` through ``torch.load(weights_only=True)``, or
    ``.safetensors``) -> ``(config, our state)``."""
    return convert_state_dict(read_tensors(Path(path)))


def to_official(state: dict[str, Tensor], config: ImageBindConfig) -> dict[str, Tensor]:
    """Our state -> the official keys (the text encoder's causal ``mask`` buffer included)."""
    out = _keymap(config.modalities).inverted().convert(state)
    if "text" in config.modalities:
        n = config.context_length
        out["modality_preprocessors.text.mask"] = torch.full((n, n), float("-inf")).triu(1)
    return out
