"""Hugging Face ImageGPT folders (``config.json`` with ``model_type: "imagegpt"``) <-> ours.

GPT-2's ``Conv1D`` stores weights ``[in, out]``: every projection is transposed. The colour
clusters are not in the weights but in the image processor's ``preprocessor_config.json``
(``clusters [K, 3]`` in [-1, 1]); when present they become our palette, else the model keeps its
default palette (:func:`.palette.default_colours`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ...io import CheckpointError, KeyMap, Rename, read_tensors, write_hf_folder
from ...io.checkpoint import read_json
from ..gpt2 import hf_gpt2_activation, hf_gpt2_block_rules
from .config import ImageGPTConfig
from .palette import default_colours, from_signed, to_signed

HF_IMAGEGPT = KeyMap(
    rules=(
        Rename("transformer.wte.weight", "embed.weight"),
        Rename("transformer.wpe.weight", "positions.weight"),
        *hf_gpt2_block_rules("transformer.h", "layers"),
        Rename("transformer.ln_f.weight", "norm.weight"),
        Rename("lm_head.weight", "lm_head.weight"),
    ),
    # older checkpoints saved the causal-mask buffers
    ignore=("transformer.h.{i}.attn.bias", "transformer.h.{i}.attn.masked_bias"),
)

def config_from_hf(hf: dict[str, Any]) -> ImageGPTConfig:
    if hf.get("model_type") != "imagegpt":
        raise CheckpointError(f"model_type {hf.get('model_type')!r} is not an ImageGPT model")
    act = hf_gpt2_activation(hf, "ImageGPT", "quick_gelu")
    n = int(hf.get("n_positions", 1024))
    side = math.isqrt(n)
    if side * side != n:
        raise CheckpointError(f"n_positions={n} is not a square image (ImageGPT images are S x S pixels)")
    return ImageGPTConfig(
        clusters=int(hf.get("vocab_size", 513)) - 1, image_size=side, dim=int(hf.get("n_embd", 512)),
        layers=int(hf.get("n_layer", 24)), heads=int(hf.get("n_head", 8)), mlp_hidden=hf.get("n_inner"),
        norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)), act=act,
    )


def read_clusters(folder: Path, config: ImageGPTConfig) -> Tensor | None:
    """The palette from ``preprocessor_config.json`` (``[K, 3]`` in [0, 1]), or ``None`` if the
    folder has none. A palette whose size is not the model's vocabulary - 1 is an error. The
    processor's own ``size`` is not used: images are resized to the model's ``image_size``."""
    path = Path(folder) / "preprocessor_config.json"
    if not path.is_file():
        return None
    try:
        pre = json.loads(path.read_text())
    except (json.JSONDecodeError, OSError) as e:
        raise CheckpointError(f"{path}: not readable JSON ({e})") from None
    if pre.get("clusters") is None:
        return None
    clusters = torch.tensor(pre["clusters"], dtype=torch.float32)
    if clusters.dim() != 2 or clusters.shape[1] != 3 or clusters.shape[0] != config.clusters:
        raise CheckpointError(
            f"{path}: clusters of shape {list(clusters.shape)} do not fit the model: expected "
            f"[{config.clusters}, 3] (vocab_size {config.vocab_size} = clusters + 1 SOS token)"
        )
    return from_signed(clusters)


def from_hf(folder: Path) -> tuple[ImageGPTConfig, dict[str, Tensor]]:
    """A Hugging Face ``ImageGPTForCausalImageModeling`` folder -> (config, state dict)."""
    folder = Path(folder)
    config = config_from_hf(read_json(folder / "config.json"))
    state = HF_IMAGEGPT.convert(read_tensors(folder))
    clusters = read_clusters(folder, config)
    state["palette.clusters"] = clusters if clusters is not None else default_colours(config.clusters)
    return config, state


def to_hf(model, folder: str | Path) -> Path:
    """Write ``model`` as a Hugging Face ImageGPT folder: ``config.json``, ``model.safetensors``
    and ``preprocessor_config.json`` holding the palette (in [-1, 1], as the image processor has it)."""
    c: ImageGPTConfig = model.config
    state = {k: v for k, v in model.state_dict().items() if k != "palette.clusters"}
    hf_state = HF_IMAGEGPT.inverted().convert(state)
    act = {"gelu_tanh": "gelu_new"}.get(c.act, c.act)
    hf_config = {
        "architectures": ["ImageGPTForCausalImageModeling"], "model_type": "imagegpt",
        "vocab_size": c.vocab_size, "n_positions": c.max_positions, "n_embd": c.dim, "n_layer": c.layers,
        "n_head": c.heads, "n_inner": c.mlp_hidden, "activation_function": act,
        "layer_norm_epsilon": c.norm_eps, "tie_word_embeddings": False, "scale_attn_weights": True,
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "torch_dtype": "float32",
    }
    clusters = to_signed(model.palette.clusters.detach().float().cpu())
    pre = {
        "image_processor_type": "ImageGPTImageProcessor", "clusters": clusters.tolist(), "do_color_quantize": True,
        "do_normalize": True, "do_resize": True, "resample": 2, "size": {"height": c.image_size, "width": c.image_size},
    }
    return write_hf_folder(folder, hf_config, hf_state, extra_json={"preprocessor_config.json": pre})
