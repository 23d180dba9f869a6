"""AlphaFold2's Haiku parameters -> ours, module by module (as openfold's weight import does).

Haiku names a parameter ``<scope>//<name>`` (the flat keys of the published ``params_model_*.npz``,
e.g. ``alphafold/alphafold_iteration/evoformer/evoformer_iteration/msa_row_attention_with_pair_bias/
query_norm//scale``); the nested dict ``hk.transform(...).init`` returns (``{scope: {name: array}}``)
is flattened to the same keys. The map is declarative: :data:`CHILDREN` says, for each of our
container modules, which Haiku sub-scope each child reads; the leaves (``LayerNorm``, ``Linear``,
``Attention``, ``GlobalAttention``) have fixed rules with named transforms (Haiku's ``Linear``
weights are ``[in, out]``, its attention weights ``[in, heads, head_dim]``). Stacked layers (Haiku's
``layer_stack``) carry a leading block axis, which :func:`convert` slices for our ``ModuleList``.
Conversion is strict: a Haiku parameter no rule reads, or a tensor of ours no rule writes, is an error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ...io import CheckpointError
from ...io.arrays import load_numpy
from ...io.convert import KeyMap
from ...nn import Attention, GlobalAttention, LayerNorm
from . import embed, heads, model, templates, trunk
from .config import BlockConfig, EvoformerConfig, StructureConfig, TemplateConfig, TARGET_FEAT
from .convert_structure import structure_module_rules
from .haiku import Params, flatten_params
from .structure import StructureModule

# our container class -> {our child attribute: Haiku sub-scope}; "//name" reads a raw parameter of
# the container's own scope (a projection Haiku keeps as a bare weight)
CHILDREN: dict[type, dict[str, str]] = {
    trunk.MSARowAttentionWithPairBias: {"query_norm": "query_norm", "pair_norm": "feat_2d_norm",
                                        "pair_bias": "//feat_2d_weights", "attn": "attention"},
    trunk.MSAColumnAttention: {"query_norm": "query_norm", "attn": "attention"},
    trunk.MSAColumnGlobalAttention: {"query_norm": "query_norm", "attn": "attention"},
    trunk.Transition: {"norm": "input_layer_norm", "fc1": "transition1", "fc2": "transition2"},
    trunk.OuterProductMean: {"norm": "layer_norm_input", "left": "left_projection", "right": "right_projection",
                             "out": "//output"},
    trunk.TriangleMultiplication: {"norm_in": "layer_norm_input", "left": "left_projection",
                                   "right": "right_projection", "left_gate": "left_gate", "right_gate": "right_gate",
                                   "norm_out": "center_layer_norm", "out": "output_projection",
                                   "gate": "gating_linear"},
    trunk.TriangleAttentionStartingNode: {"norm": "query_norm", "pair_bias": "//feat_2d_weights",
                                          "attn": "attention"},
    trunk.PairStack: {"tri_mul_out": "triangle_multiplication_outgoing", "tri_mul_in": "triangle_multiplication_incoming",
                      "tri_att_start": "triangle_attention_starting_node",
                      "tri_att_end": "triangle_attention_ending_node", "transition": "pair_transition"},
    trunk.EvoformerBlock: {"row_attn": "msa_row_attention_with_pair_bias", "col_attn": "msa_column_attention",
                           "msa_transition": "msa_transition", "outer": "outer_product_mean", "pair_stack": ""},
    embed.InputEmbedder: {"target_msa": "preprocess_1d", "msa": "preprocess_msa", "left": "left_single",
                          "right": "right_single", "relpos": "pair_activiations"},
    embed.RecyclingEmbedder: {"positions": "prev_pos_linear", "msa_norm": "prev_msa_first_row_norm",
                              "pair_norm": "prev_pair_norm"},
    embed.ExtraMsaEmbedder: {"proj": "extra_msa_activations"},
    templates.TemplateEmbedder: {"embed": "single_template_embedding/embedding2d",
                                 "blocks": "single_template_embedding/template_pair_stack/__layer_stack_no_state",
                                 "norm": "single_template_embedding/output_layer_norm", "attn": "attention"},
    heads.DistogramHead: {"proj": "half_logits"},
    heads.MaskedMsaHead: {"proj": "logits"},
    # the whole network under AlphaFoldIteration's scope (``alphafold/alphafold_iteration`` in the
    # published files): the trunk in ``evoformer``, the heads beside it
    model.Evoformer: {"input_embedder": "evoformer", "recycling": "evoformer", "templates": "evoformer/template_embedding",
                      "extra_embedder": "evoformer", "extra_blocks": "evoformer/extra_msa_stack",
                      "blocks": "evoformer/evoformer_iteration", "single": "evoformer/single_activations",
                      "distogram": "distogram_head", "masked_msa": "masked_msa_head", "structure": "structure_module"},
}


def _children(module: nn.Module) -> dict[str, str]:
    for cls in type(module).__mro__:
        if cls in CHILDREN:
            table = dict(CHILDREN[cls])
            if isinstance(module, trunk.EvoformerBlock) and isinstance(module.col_attn, trunk.MSAColumnGlobalAttention):
                table["col_attn"] = "msa_column_global_attention"
            return table
    raise CheckpointError(f"no AlphaFold2 parameter map for {type(module).__name__}")


def _t(a: np.ndarray) -> Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float32).copy())


def _leaf(module: nn.Module, get: Callable[[str], np.ndarray]) -> dict[str, Tensor] | None:
    """The fixed rules of the leaves; ``get(name)`` reads ``<scope>//name``."""
    if isinstance(module, LayerNorm):
        return {"weight": _t(get("scale")), "bias": _t(get("offset"))}
    if isinstance(module, Attention):
        out = {"q.weight": _t(get("query_w")).flatten(1).t(), "k.weight": _t(get("key_w")).flatten(1).t(),
               "v.weight": _t(get("value_w")).flatten(1).t(), "out.weight": _t(get("output_w")).flatten(0, 1).t(),
               "out.bias": _t(get("output_b"))}
        if module.gate is not None:
            out |= {"gate.weight": _t(get("gating_w")).flatten(1).t(), "gate.bias": _t(get("gating_b")).flatten()}
        return out
    if isinstance(module, GlobalAttention):
        return {"q.weight": _t(get("query_w")).flatten(1).t(), "k.weight": _t(get("key_w")).t(),
                "v.weight": _t(get("value_w")).t(), "gate.weight": _t(get("gating_w")).flatten(1).t(),
                "gate.bias": _t(get("gating_b")).flatten(), "out.weight": _t(get("output_w")).flatten(0, 1).t(),
                "out.bias": _t(get("output_b"))}
    if isinstance(module, nn.Linear):
        out = {"weight": _t(get("weights")).t()}
        if module.bias is not None:
            out["bias"] = _t(get("bias"))
        return out
    return None


def _raw(module: nn.Module, get: Callable[[str], np.ndarray], name: str) -> dict[str, Tensor]:
    """A projection Haiku keeps as bare parameters of its parent's scope (``feat_2d_weights``
    ``[C, H]``; the outer product mean's ``output_w [c, c, c_z]`` and ``output_b``)."""
    if name == "feat_2d_weights":
        return {"weight": _t(get(name)).t()}
    return {"weight": _t(get(name + "_w")).flatten(0, 1).t(), "bias": _t(get(name + "_b"))}


def convert(module: nn.Module, params: Mapping[str, Any], scope: str) -> dict[str, Tensor]:
    """``module``'s state dict from the Haiku ``params`` under ``scope``; the consumed keys are
    removed from ``params`` (a mutable dict), so that what remains at the end was read by no rule."""

    def get(name: str, at: str = scope) -> np.ndarray:
        key = f"{at}//{name}"
        if key not in params:
            raise CheckpointError(f"AlphaFold2 parameters: missing {key!r} (for {type(module).__name__})")
        return params.pop(key)

    leaf = _leaf(module, get)
    if leaf is not None:
        return leaf
    if isinstance(module, StructureModule):  # its own declarative key map (convert_structure.py)
        c = module.config
        under = {k: torch.from_numpy(np.asarray(params.pop(k), dtype=np.float32))
                 for k in [k for k in params if k.startswith(scope + "/")]}
        rules = structure_module_rules(scope, transition_layers=c.transition_layers, angle_blocks=c.angle_blocks)
        return KeyMap(rules).convert(under)
    if isinstance(module, nn.ModuleList):  # Haiku's layer_stack: one stacked array per parameter
        stacked = {k: params.pop(k) for k in [k for k in params if k.startswith(scope + "/")]}
        if not stacked:
            raise CheckpointError(f"AlphaFold2 parameters: nothing under {scope!r} for a stack of {len(module)}")
        out = {}
        for i, block in enumerate(module):
            sliced = {k: v[i] for k, v in stacked.items()}
            out |= {f"{i}.{k}": v for k, v in convert(block, sliced, scope).items()}
            if sliced:
                raise CheckpointError(f"AlphaFold2 parameters not read: {sorted(sliced)[:5]}")
        return out
    out = {}
    for child, sub in _children(module).items():
        target = getattr(module, child)
        if target is None:
            continue
        if sub.startswith("//"):
            part = _raw(target, get, sub[2:])
        else:
            part = convert(target, params, "/".join(p for p in (scope, sub) if p))
        out |= {f"{child}.{k}": v for k, v in part.items()}
    return out


def load_module(module: nn.Module, params: Mapping[str, Any], scope: str) -> nn.Module:
    """Load the Haiku ``params`` under ``scope`` into ``module`` strictly (every parameter of ours
    written, every Haiku parameter under the scope read)."""
    flat = flatten_params(params)
    under = {k: v for k, v in flat.items() if not scope or k.startswith(scope + "/")}
    state = convert(module, under, scope)
    if under:
        raise CheckpointError(f"AlphaFold2 parameters under {scope!r} that no rule reads: {sorted(under)[:8]}")
    missing = set(module.state_dict()) - set(state)
    if missing:
        raise CheckpointError(f"{type(module).__name__}: not written by the AlphaFold2 map: {sorted(missing)[:8]}")
    module.load_state_dict(state, strict=True)
    return module


# ------------------------------------------------------------------------------ published parameter files

PUBLISHED = "alphafold/alphafold_iteration"
# parts of the published network this port does not build: the template rows of the MSA (from
# torsion angles) and the confidence heads
NOT_PORTED = ("evoformer/template_single_embedding", "evoformer/template_projection", "predicted_lddt_head",
              "experimentally_resolved_head", "predicted_aligned_error_head")


def config_from_params(flat: Params, scope: str = PUBLISHED) -> EvoformerConfig:
    """The :class:`EvoformerConfig` a parameter set was trained with, read from its shapes (the
    files carry no config). Settings no shape shows keep their ``model_1`` values (dropout rates,
    ``use_unit_vector=False``, distance ranges)."""

    def shape(key: str) -> tuple[int, ...]:
        full = f"{scope}/{key}"
        if full not in flat:
            raise CheckpointError(f"AlphaFold2 parameters: missing {full!r}; is this an AlphaFold2 parameter file?")
        return tuple(flat[full].shape)

    def count(name: str) -> int:  # Haiku numbers a module built n times name, name_1, ..., name_{n-1}
        paths = {k.split("//")[0] for k in flat}
        return sum(1 for i in range(64) if f"{scope}/{name}{f'_{i}' if i else ''}" in paths)

    it = "evoformer/evoformer_iteration/"
    blocks, c_m, factor_c = shape(it + "msa_transition/transition1//weights")
    c_z = shape("evoformer/left_single//weights")[1]
    block = BlockConfig(msa_heads=shape(it + "msa_row_attention_with_pair_bias//feat_2d_weights")[-1],
                        pair_heads=shape(it + "triangle_attention_starting_node//feat_2d_weights")[-1],
                        transition_factor=factor_c // c_m,
                        outer_channels=shape(it + "outer_product_mean/left_projection//weights")[-1],
                        triangle_channels=shape(it + "triangle_multiplication_outgoing/left_projection//weights")[-1])
    template = None
    if f"{scope}/evoformer/template_embedding/attention//query_w" in flat:
        t = "evoformer/template_embedding/single_template_embedding/"
        ts = t + "template_pair_stack/__layer_stack_no_state/"
        feat, c_t = shape(t + "embedding2d//weights")
        n_t, _, tri = shape(ts + "triangle_multiplication_outgoing/left_projection//weights")
        _, heads, head_dim = shape("evoformer/template_embedding/attention//query_w")
        template = TemplateConfig(pair_dim=c_t, blocks=n_t, heads=shape(ts + "triangle_attention_starting_node//feat_2d_weights")[-1],
                                  triangle_channels=tri,
                                  transition_factor=shape(ts + "pair_transition/transition1//weights")[-1] // c_t,
                                  attention_heads=heads, attention_dim=heads * head_dim,
                                  dgram_bins=feat - (1 + 2 * TARGET_FEAT + 3 + 1))
    structure = None
    if f"{scope}/structure_module/initial_projection//weights" in flat:
        ipa = "structure_module/fold_iteration/invariant_point_attention"
        (h,) = shape(ipa + "//trainable_point_weights")
        sqk = shape(ipa + "/q_scalar//weights")[-1] // h
        pqk = shape(ipa + "/q_point_local//weights")[-1] // (3 * h)
        structure = StructureConfig(
            dim=shape("structure_module/initial_projection//weights")[-1], heads=h, scalar_qk=sqk,
            scalar_v=shape(ipa + "/kv_scalar//weights")[-1] // h - sqk, point_qk=pqk,
            point_v=shape(ipa + "/kv_point_local//weights")[-1] // (3 * h) - pqk,
            transition_layers=count("structure_module/fold_iteration/transition"),
            angle_dim=shape("structure_module/fold_iteration/rigid_sidechain/input_projection//weights")[-1],
            angle_blocks=count("structure_module/fold_iteration/rigid_sidechain/resblock1"))
    return EvoformerConfig(
        msa_dim=c_m, pair_dim=c_z, extra_msa_dim=shape("evoformer/extra_msa_activations//weights")[-1],
        single_dim=shape("evoformer/single_activations//weights")[-1], blocks=blocks,
        extra_blocks=shape("evoformer/extra_msa_stack/msa_transition/transition1//weights")[0], block=block,
        max_relative=(shape("evoformer/pair_activiations//weights")[0] - 1) // 2,
        recycle_bins=shape("evoformer/prev_pos_linear//weights")[0], template=template,
        distogram_bins=shape("distogram_head/half_logits//weights")[-1], structure=structure)


def from_alphafold_params(path: str | Path) -> tuple[EvoformerConfig, dict[str, Tensor]]:
    """A published AlphaFold2 parameter file (``params_model_*.npz``: flat ``scope//name`` arrays,
    read without pickle) -> our config and state dict. Parameters of parts this port does not build
    (:data:`NOT_PORTED`) are left out; every other one must be read."""
    path = Path(path)
    archive = load_numpy(path, CheckpointError)
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise CheckpointError(f"{path}: holds one bare array, not the named AlphaFold2 parameters of a .npz")
    with archive as z:
        flat = {k: z[k] for k in z.files}
    config = config_from_params(flat)
    flat = {k: v for k, v in flat.items() if not k.startswith(tuple(f"{PUBLISHED}/{p}" for p in NOT_PORTED))}
    with torch.device("meta"):
        shell = model.Evoformer(config)
    under = {k: v for k, v in flat.items() if k.startswith(PUBLISHED + "/")}
    state = convert(shell, under, PUBLISHED)
    if under or len(flat) != len({k for k in flat if k.startswith(PUBLISHED + "/")}):
        left = sorted(under) + sorted(k for k in flat if not k.startswith(PUBLISHED + "/"))
        raise CheckpointError(f"{path}: AlphaFold2 parameters that no rule reads: {left[:8]}")
    return config, state
