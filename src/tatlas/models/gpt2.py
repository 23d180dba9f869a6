"""What the GPT-2-shaped systems share (ImageGPT, the Decision Transformer; Radford et al. 2019):
the initialisation with residual-branch outputs scaled by ``1/sqrt(2 * layers)`` (§2.3), and the
Hugging Face side of a GPT-2 block — its ``Conv1D`` weights stored ``[in, out]`` (transposed to
ours), its key names, the config options our block does not implement, and its activation names."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from ..io import TRANSPOSE, CheckpointError, Rename
from ..nn import init_normal_

# Hugging Face activation names -> ours
HF_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                  "quick_gelu": "quick_gelu", "silu": "silu", "tanh": "tanh"}


def init_gpt2_(model: nn.Module, blocks: Iterable[nn.Module], layers: int, std: float = 0.02) -> None:
    """N(0, ``std``) everywhere, the outputs of each block's attention and MLP N(0, ``std / sqrt(2 * layers)``)."""
    init_normal_(model, std=std)
    with torch.no_grad():
        for block in blocks:
            for proj in (block.attn.out, block.mlp.fc2):
                proj.weight.normal_(std=std / math.sqrt(2 * layers))


def hf_gpt2_block_rules(src: str, dst: str) -> tuple[Rename, ...]:
    """Key rules of the GPT-2 blocks ``{src}.{i}`` (e.g. ``transformer.h``) -> our ``{dst}.{i}`` (a
    fused-qkv :func:`tatlas.nn.classic_block`); norms keep whatever parameters they have."""
    rules = [Rename(f"{src}.{{i}}.ln_1.{{path}}", f"{dst}.{{i}}.attn_norm.{{path}}"),
             Rename(f"{src}.{{i}}.ln_2.{{path}}", f"{dst}.{{i}}.mlp_norm.{{path}}")]
    for theirs, ours in (("attn.c_attn", "attn.qkv"), ("attn.c_proj", "attn.out"), ("mlp.c_fc", "mlp.fc1"),
                         ("mlp.c_proj", "mlp.fc2")):
        rules += [Rename(f"{src}.{{i}}.{theirs}.weight", f"{dst}.{{i}}.{ours}.weight", TRANSPOSE),
                  Rename(f"{src}.{{i}}.{theirs}.bias", f"{dst}.{{i}}.{ours}.bias")]
    return tuple(rules)


def hf_gpt2_activation(hf: Mapping[str, Any], what: str, default: str) -> str:
    """Our activation for a Hugging Face GPT-2-style config, after refusing the options our block
    does not implement; errors name ``what`` (e.g. "ImageGPT")."""
    unsupported = [
        name for name, bad in (
            ("add_cross_attention", bool(hf.get("add_cross_attention", False))),
            ("scale_attn_by_inverse_layer_idx", bool(hf.get("scale_attn_by_inverse_layer_idx", False))),
            ("scale_attn_weights=False", not hf.get("scale_attn_weights", True)),
        ) if bad
    ]
    if unsupported:
        raise CheckpointError(f"{what} options not supported: {', '.join(unsupported)}")
    act = hf.get("activation_function", default)
    if act not in HF_ACTIVATIONS:
        raise CheckpointError(f"{what} activation {act!r} is not supported ({sorted(HF_ACTIVATIONS)})")
    return HF_ACTIVATIONS[act]
