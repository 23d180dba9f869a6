"""AlphaFold2's Haiku parameters of the structure module -> ours: a declarative key map (renames with
the transpose Haiku's ``[in, out]`` linear weights need) per module, for
:class:`~tatlas.nn.ipa.InvariantPointAttention`, :class:`.structure.FoldIteration` and
:class:`.structure.StructureModule`.

Haiku keys are ``<scope>//<name>``; ``scope`` is where the module sits: ``invariant_point_attention``
or ``structure_module`` when the module ran alone (the golden files), or
``alphafold/alphafold_iteration/structure_module`` in the published ``params_model_*.npz``. A module
Haiku builds several times under one name is numbered from the second on (``transition``,
``transition_1``, ...; ``resblock1``, ``resblock1_1``, ...). Conversion is strict both ways: a
Haiku parameter under the scope that no rule reads, or a tensor of ours no rule writes, is an error.

| Haiku (under ``fold_iteration``)               | ours (under ``iteration``)          |
|------------------------------------------------|-------------------------------------|
| ``invariant_point_attention/q_scalar``          | ``ipa.q``                           |
| ``invariant_point_attention/kv_scalar``         | ``ipa.kv``                          |
| ``invariant_point_attention/q_point_local``     | ``ipa.q_points``                    |
| ``invariant_point_attention/kv_point_local``    | ``ipa.kv_points``                   |
| ``invariant_point_attention/attention_2d``      | ``ipa.pair_bias``                   |
| ``invariant_point_attention//trainable_point_weights`` | ``ipa.point_weights``        |
| ``invariant_point_attention/output_projection`` | ``ipa.out``                         |
| ``attention_layer_norm``                        | ``ipa_norm``                        |
| ``transition``, ``transition_{i}``              | ``transition.{i}``                  |
| ``transition_layer_norm``                       | ``transition_norm``                 |
| ``affine_update``                               | ``backbone_update``                 |
| ``rigid_sidechain/input_projection``            | ``angles.input``                    |
| ``rigid_sidechain/input_projection_1``          | ``angles.input_initial``            |
| ``rigid_sidechain/resblock1[_{i}]``, ``resblock2[_{i}]`` | ``angles.blocks.{i}.fc1``, ``.fc2`` |
| ``rigid_sidechain/unnormalized_angles``         | ``angles.out``                      |

and, of the structure module itself: ``single_layer_norm`` -> ``single_norm``, ``initial_projection``
-> ``initial_projection``, ``pair_layer_norm`` -> ``pair_norm``, ``fold_iteration`` -> ``iteration``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ...io import TRANSPOSE, CheckpointError, KeyMap, Rename, check_state_dict
from ...nn.ipa import InvariantPointAttention
from .haiku import flatten_params
from .structure import FoldIteration, StructureModule

IPA_LINEARS = {"q_scalar": "q", "kv_scalar": "kv", "q_point_local": "q_points", "kv_point_local": "kv_points",
               "attention_2d": "pair_bias", "output_projection": "out"}


def _linear(src: str, dst: str) -> tuple[Rename, ...]:
    return Rename(f"{src}//weights", f"{dst}.weight", TRANSPOSE), Rename(f"{src}//bias", f"{dst}.bias")


def _norm(src: str, dst: str) -> tuple[Rename, ...]:
    return Rename(f"{src}//scale", f"{dst}.weight"), Rename(f"{src}//offset", f"{dst}.bias")


def _nth(name: str, i: int) -> str:
    """Haiku's name for the ``i``-th module built under ``name`` in one scope."""
    return name if i == 0 else f"{name}_{i}"


def ipa_rules(scope: str, prefix: str = "") -> tuple[Rename, ...]:
    """Invariant point attention at Haiku ``scope`` -> ours at ``prefix`` (``""`` or ``"...ipa."``)."""
    rules = [r for haiku, ours in IPA_LINEARS.items() for r in _linear(f"{scope}/{haiku}", prefix + ours)]
    return (*rules, Rename(f"{scope}//trainable_point_weights", prefix + "point_weights"))


def fold_iteration_rules(scope: str, prefix: str = "", *, transition_layers: int,
                         angle_blocks: int) -> tuple[Rename, ...]:
    """``FoldIteration`` at Haiku ``scope`` -> ours at ``prefix``."""
    side = f"{scope}/rigid_sidechain"
    return (
        *ipa_rules(f"{scope}/invariant_point_attention", prefix + "ipa."),
        *_norm(f"{scope}/attention_layer_norm", prefix + "ipa_norm"),
        *(r for i in range(transition_layers) for r in _linear(f"{scope}/{_nth('transition', i)}",
                                                               f"{prefix}transition.{i}")),
        *_norm(f"{scope}/transition_layer_norm", prefix + "transition_norm"),
        *_linear(f"{scope}/affine_update", prefix + "backbone_update"),
        *_linear(f"{side}/input_projection", prefix + "angles.input"),
        *_linear(f"{side}/input_projection_1", prefix + "angles.input_initial"),
        *(r for i in range(angle_blocks) for n in (1, 2)
          for r in _linear(f"{side}/{_nth(f'resblock{n}', i)}", f"{prefix}angles.blocks.{i}.fc{n}")),
        *_linear(f"{side}/unnormalized_angles", prefix + "angles.out"),
    )


def structure_module_rules(scope: str, *, transition_layers: int, angle_blocks: int) -> tuple[Rename, ...]:
    """``generate_affines`` (inside ``StructureModule``) at Haiku ``scope`` -> our :class:`StructureModule`."""
    return (
        *_norm(f"{scope}/single_layer_norm", "single_norm"),
        *_linear(f"{scope}/initial_projection", "initial_projection"),
        *_norm(f"{scope}/pair_layer_norm", "pair_norm"),
        *fold_iteration_rules(f"{scope}/fold_iteration", "iteration.", transition_layers=transition_layers,
                              angle_blocks=angle_blocks),
    )


def key_map(module: nn.Module, scope: str) -> KeyMap:
    """The Haiku -> ours key map of ``module`` (sizes read from it) at Haiku ``scope``."""
    if isinstance(module, InvariantPointAttention):
        return KeyMap(ipa_rules(scope))
    if isinstance(module, StructureModule):
        it = module.iteration
        return KeyMap(structure_module_rules(scope, transition_layers=len(it.transition),
                                             angle_blocks=len(it.angles.blocks)))
    if isinstance(module, FoldIteration):
        return KeyMap(fold_iteration_rules(scope, transition_layers=len(module.transition),
                                           angle_blocks=len(module.angles.blocks)))
    raise CheckpointError(f"no AlphaFold2 structure-module map for {type(module).__name__}; expected "
                          "InvariantPointAttention, FoldIteration or StructureModule")


def convert_structure(module: nn.Module, params: Mapping[str, Any], scope: str) -> dict[str, Tensor]:
    """``module``'s state dict from Haiku ``params`` (flat ``scope//name`` keys or Haiku's nested
    dict): every parameter under ``scope`` is read, every tensor of ``module`` written."""
    flat = flatten_params(params)
    under = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in flat.items()
             if k.startswith(scope + "/")}
    if not under:
        raise CheckpointError(f"AlphaFold2 parameters: nothing under {scope!r}")
    state = key_map(module, scope).convert(under)
    check_state_dict(module, state)
    return state


def load_structure(module: nn.Module, params: Mapping[str, Any], scope: str) -> nn.Module:
    """Load Haiku ``params`` under ``scope`` into ``module`` strictly (see :func:`convert_structure`)."""
    module.load_state_dict(convert_structure(module, params, scope), strict=True)
    return module
