"""Quantised inference of a GGUF ``llm``: every linear layer whose tensor the file stores as ``Q4_0``,
``Q4_1`` or ``Q8_0`` replaced by a module over the file's own blocks
(:mod:`tatlas.nn.quant_blocks`), the tied output projection included; embeddings, norms and layers
of other types (``Q4_K``, ``Q5_0``, ``Q6_K`` ... in the Gemma 3 file) keep their de-quantised
float32 weights. The blocks are taken from the file, not re-quantised from float32; llama.cpp's
query/key row permutation (arch ``llama``) is undone on the blocks' rows, which is exact.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from ...io.convert import interleaved_to_half
from ...io.gguf import GGUFFile, read_gguf
from ...nn.memory import release_free_heap
from ...nn.quant_blocks import INT4_TYPES, INT8_TYPES, gguf_linear, swap_modules_
from .gguf import _hf_name, hf_config

# the GGUF types whose matrices run on their own blocks (:func:`~tatlas.nn.quant_blocks.gguf_linear`)
BLOCK_TYPES = frozenset(INT4_TYPES + INT8_TYPES)

__all__ = ["BLOCK_TYPES", "block_matrices", "fill_deferred_", "gguf_module_names", "load_quantized", "quantize_gguf_"]


def gguf_module_names(f: GGUFFile) -> list[tuple[str, str]]:
    """``(GGUF matrix name, the llm module it feeds)`` pairs (``blk.3.attn_q.weight`` -> ``layers.3.attn.q``;
    ``token_embd.weight`` -> ``lm_head`` as well when the output projection is tied), through the
    same key map as the float32 loader."""
    from .convert import convert_hf

    hf = hf_config(f)
    names = [n for n, t in f.tensors.items() if len(t.shape) == 2]
    markers = {_hf_name(n, f.architecture): torch.tensor([float(i)]) for i, n in enumerate(names)}
    _, state = convert_hf(hf, markers)
    return [(names[int(marker.item())], ours.removesuffix(".weight")) for ours, marker in state.items()
            if ours.endswith(".weight") and marker.numel() == 1]


def quantize_gguf_(model: nn.Module, gguf: str | Path | GGUFFile, *,
                   compute_dtype: torch.dtype = torch.bfloat16, int8: str = "pair", head_int8: str = "groups") -> nn.Module:
    """Swap, in place, each ``nn.Linear`` of ``model`` (an ``llm`` loaded from ``gguf``) whose GGUF
    tensor is ``Q4_0``/``Q4_1``/``Q8_0`` for an int4/int8 module built from that tensor's blocks;
    ``compute_dtype``: see :mod:`tatlas.nn.quant_blocks` (bfloat16: fast; float32: exact, slow);
    ``int8``: how 8-bit types run (:func:`~tatlas.nn.quant_blocks.gguf_linear`), ``head_int8`` the same
    for the output projection: there the int4 kernel's bfloat16 output (steps of 0.125 at a logit of
    25) ties the top logits and changes greedy tokens, so by default it sums 32-wide groups in float32."""
    f = gguf if isinstance(gguf, GGUFFile) else read_gguf(gguf)
    hf = hf_config(f)
    perms = {"attn_q": interleaved_to_half(hf["num_attention_heads"]),
             "attn_k": interleaved_to_half(hf["num_key_value_heads"])}
    new: dict[str, nn.Module] = {}
    for name, path in gguf_module_names(f):
        old = model.get_submodule(path)
        t = f.tensors[name]
        if not isinstance(old, nn.Linear) or tuple(old.weight.shape) != tuple(t.shape):
            continue  # the embedding (kept float32: a row gather reads one row per token)
        rows: Tensor | None = None
        kind = name.split(".")[2] if name.startswith("blk.") else ""
        if f.architecture == "llama" and kind in perms:
            rows = perms[kind].forward(torch.arange(t.shape[0]))
        module = gguf_linear(t, rows=rows, bias=old.bias, compute_dtype=compute_dtype, int8=head_int8 if path == "lm_head" else int8)
        if module is not None:
            new[path] = module
            if len(new) % 64 == 0:  # each layer's int32 and repacked temporaries, freed but kept by the C heap:
                release_free_heap()  # SmolLM2's whole-process peak RSS 920-945 -> 762-782 MB, the time within noise
    return swap_modules_(model, new)


def block_matrices(f: GGUFFile) -> frozenset[str]:
    """The GGUF names of the matrices :func:`quantize_gguf_` replaces by modules over their blocks (of
    :data:`BLOCK_TYPES`, each feeding one layer; not the token embedding, which a row gather reads
    as float32): what loading may leave unformed (:func:`~tatlas.models.llm.gguf.deferred_matrices`)."""
    return frozenset(name for name, path in gguf_module_names(f)
                     if f.tensors[name].type in BLOCK_TYPES and name != "token_embd.weight")


def fill_deferred_(model: nn.Module, gguf: str | Path | GGUFFile, placeholders: dict[str, Tensor]) -> list[str]:
    """Give each placeholder of :func:`~tatlas.models.llm.gguf.deferred_matrices` that ``model`` still
    holds (a layer :func:`quantize_gguf_` did not replace) its de-quantised values, in place, through
    the same conversion as loading. Returns our names of the tensors filled."""
    from .convert import convert_hf
    from .gguf import gguf_to_hf

    pointers = {t.data_ptr() for t in placeholders.values()}
    held = {key: t for key, t in model.state_dict(keep_vars=True).items() if t.data_ptr() in pointers}
    if held:
        f = gguf if isinstance(gguf, GGUFFile) else read_gguf(gguf)
        _, state = convert_hf(*gguf_to_hf(f))
        with torch.no_grad():
            for key, t in held.items():
                t.copy_(state[key])
    return sorted(held)


def load_quantized(path: str | Path, load: Callable[[str | Path], nn.Module], *,
                   compute_dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """An ``llm`` from a GGUF file, loaded by ``load`` (e.g. ``tatlas.load``), with its quantised layers
    running on their blocks (:func:`quantize_gguf_`): their matrices are left unformed while loading
    (:func:`~tatlas.models.llm.gguf.deferred_matrices`), never de-quantised to float32, and a layer
    the swap leaves gets its float32 values (:func:`fill_deferred_`)."""
    from .gguf import deferred_matrices

    f = read_gguf(path)
    with deferred_matrices(block_matrices(f)) as placeholders:
        model = load(path)
    quantize_gguf_(model, f, compute_dtype=compute_dtype)
    fill_deferred_(model, f, placeholders)
    return model
