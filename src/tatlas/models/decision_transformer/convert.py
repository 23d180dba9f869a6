"""Hugging Face ``DecisionTransformerModel`` folders (``config.json`` with ``model_type:
"decision_transformer"``) <-> ours.

Its quirks, and what the converter does with them:

- GPT-2's ``Conv1D`` stores weights ``[in, out]``: every decoder projection is transposed.
- The decoder's GPT-2 position embedding ``encoder.wpe`` is called with position ids of zeros: it
  adds the one vector ``wpe[0]`` to every token right after ``embed_ln``. Positions enter only
  through the timestep embedding. ``wpe[0]`` is folded into ``embed_norm.bias``; the other rows
  and the unused token embedding ``encoder.wte`` are dropped.
- It has no input normalisation: our ``state_mean``/``state_std``/``return_scale`` buffers come out
  as the identity. Exporting (:func:`to_hf`) folds ours into ``embed_state`` and ``embed_return``,
  so the exported model takes environment units as ours does.
- The context length K is a training setting, not in its config: ``n_positions // 3`` (the tokens
  its position table spans) becomes our ``context``, which only sizes the acting window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ...io import CheckpointError, KeyMap, Rename, read_tensors, write_hf_folder
from ...io.checkpoint import read_json
from ..gpt2 import hf_gpt2_activation, hf_gpt2_block_rules
from .config import DecisionTransformerConfig

HF_DECISION_TRANSFORMER = KeyMap(
    rules=(
        Rename("embed_timestep.weight", "embed_timestep.weight"),
        Rename("embed_return.{path}", "embed_return.{path}"),
        Rename("embed_state.{path}", "embed_state.{path}"),
        Rename("embed_action.{path}", "embed_action.{path}"),
        Rename("embed_ln.{path}", "embed_norm.{path}"),
        *hf_gpt2_block_rules("encoder.h", "layers"),
        Rename("encoder.ln_f.{path}", "norm.{path}"),
        Rename("predict_state.{path}", "predict_state.{path}"),
        Rename("predict_action.0.{path}", "predict_action.{path}"),
        Rename("predict_return.{path}", "predict_return.{path}"),
    ),
    # wpe is folded by hand (below); wte is never used; older checkpoints saved the causal-mask buffers
    ignore=("encoder.wpe.weight", "encoder.wte.weight", "encoder.h.{i}.attn.bias", "encoder.h.{i}.attn.masked_bias"),
)

def config_from_hf(hf: dict[str, Any]) -> DecisionTransformerConfig:
    if hf.get("model_type") != "decision_transformer":
        raise CheckpointError(f"model_type {hf.get('model_type')!r} is not a Decision Transformer")
    act = hf_gpt2_activation(hf, "Decision Transformer", "relu")
    n_positions = int(hf.get("n_positions", 1024))
    if n_positions < 3:
        raise CheckpointError(f"n_positions={n_positions}: fewer than one (return, state, action) step")
    return DecisionTransformerConfig(
        state_dim=int(hf.get("state_dim", 17)), act_dim=int(hf.get("act_dim", 4)),
        action_head="tanh" if hf.get("action_tanh", True) else "linear", context=n_positions // 3,
        max_ep_len=int(hf.get("max_ep_len", 4096)), dim=int(hf.get("hidden_size", 128)),
        layers=int(hf.get("n_layer", 3)), heads=int(hf.get("n_head", 1)), mlp_hidden=hf.get("n_inner"),
        act=act, norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
    )


def from_hf(folder: Path) -> tuple[DecisionTransformerConfig, dict[str, Tensor]]:
    """A Hugging Face ``DecisionTransformerModel`` folder -> (config, state dict)."""
    folder = Path(folder)
    config = config_from_hf(read_json(folder / "config.json"))
    tensors = read_tensors(folder)
    if "encoder.wpe.weight" not in tensors:
        raise CheckpointError(f"{folder}: missing encoder.wpe.weight (its row 0 is added to every token)")
    state = HF_DECISION_TRANSFORMER.convert(tensors)
    if "embed_norm.bias" not in state:
        raise CheckpointError(f"{folder}: missing embed_ln.bias")
    state["embed_norm.bias"] = state["embed_norm.bias"] + tensors["encoder.wpe.weight"][0]  # the constant "position"
    given = state.get("embed_state.weight")
    if given is None or given.dim() != 2 or given.shape[1] != config.state_dim:  # before state_dim floats are made
        raise CheckpointError(f"{folder}: config.json state_dim = {config.state_dim} does not fit embed_state.weight "
                              f"of shape {list(given.shape) if given is not None else None}")
    state["state_mean"] = torch.zeros(config.state_dim)
    state["state_std"] = torch.ones(config.state_dim)
    state["return_scale"] = torch.ones(1)
    return config, state


@torch.no_grad()
def to_hf(model, folder: str | Path) -> Path:
    """Write ``model`` as a Hugging Face ``DecisionTransformerModel`` folder. Our input normalisation
    is folded into the state and return embeddings (``W((s - m) / σ) + b = (W / σ) s + (b - W m / σ)``)."""
    c: DecisionTransformerConfig = model.config
    if c.discrete:
        raise ValueError("Hugging Face's DecisionTransformerModel has continuous actions only; this model's "
                         "action_head is 'discrete'")
    state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    mean, std, scale = state.pop("state_mean"), state.pop("state_std"), state.pop("return_scale")
    w = state["embed_state.weight"]
    state["embed_state.weight"] = w / std[None, :]
    state["embed_state.bias"] = state["embed_state.bias"] - (w / std[None, :]) @ mean
    state["embed_return.weight"] = state["embed_return.weight"] / scale
    hf_state = HF_DECISION_TRANSFORMER.inverted().convert(state)
    n_positions = c.max_tokens
    hf_state["encoder.wpe.weight"] = torch.zeros(n_positions, c.dim)
    hf_state["encoder.wte.weight"] = torch.zeros(1, c.dim)
    act = {"gelu_tanh": "gelu_new"}.get(c.act, c.act)
    hf_config = {
        "architectures": ["DecisionTransformerModel"], "model_type": "decision_transformer",
        "state_dim": c.state_dim, "act_dim": c.act_dim, "hidden_size": c.dim, "max_ep_len": c.max_ep_len,
        "action_tanh": c.action_head == "tanh", "vocab_size": 1, "n_positions": n_positions, "n_layer": c.layers,
        "n_head": c.heads, "n_inner": c.mlp_hidden, "activation_function": act, "layer_norm_epsilon": c.norm_eps,
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "scale_attn_weights": True,
        "bos_token_id": None, "eos_token_id": None, "torch_dtype": "float32",
    }
    return write_hf_folder(folder, hf_config, hf_state)
