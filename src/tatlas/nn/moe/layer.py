"""The sparse Mixture-of-Experts feed-forward layer, composed from built parts: a router, experts and
an optional shared expert (Shazeer et al. 2017, "Outrageously Large Neural Networks: The Sparsely-Gated
Mixture-of-Experts Layer", §2; shared experts: DeepSeek-AI 2024, "DeepSeek-V3 Technical Report",
§2.1.2, eq. 12; Qwen2-MoE's shared expert, Yang et al. 2024, "Qwen2 Technical Report", whose
sigmoid gate is that of transformers' ``Qwen2MoeSparseMoeBlock``).

``y = sum_{e in router(x)} w_e expert_e(x) [+ g(x) shared(x)]``. The variants are the parts passed in:
:class:`~.routing.SwitchRouter` / :class:`~.routing.TopKRouter` / :class:`~.routing.DeepSeekRouter` /
:class:`~.routing.ExpertChoiceRouter`; :class:`~.experts.Experts` (dropless),
:class:`~.experts.CapacityExperts` (GShard capacity), :class:`~.experts_parallel.ParallelExperts`
(sharded over ranks).

The :class:`~.routing.Routing` of a forward (auxiliary losses, expert loads) is not kept on the
module: :meth:`MoE.forward` appends it to a ``routings`` list when one is given (blocks and models
pass such a list down; see :attr:`MoE.routed`), and :meth:`MoE.forward_routed` returns it.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from .experts import CapacityExperts, Experts
from .routing import ExpertChoiceRouter, Router, Routing


class MoE(nn.Module):
    """A sparse MoE feed-forward layer. ``x: [*, T, C] -> [*, T, C]`` (``[N, C]`` works: one routing group).

    - ``router``: a :class:`~.routing.Router` over all the layer's experts (``router.experts ==
      experts.total``, ``router.dim == experts.dim``).
    - ``experts``: an :class:`~.experts.Experts` or a subclass (capacity-bounded, expert-parallel).
    - ``shared``: an always-on expert applied to every token, ``[*, C] -> [*, C]`` (DeepSeek-V3's shared
      experts as one :class:`~tatlas.nn.mlp.GatedMLP` of width ``n_shared * I``; Qwen2-MoE's shared expert).
    - ``shared_gate``: ``nn.Linear(C, 1, bias=False)``; the shared output is multiplied by
      ``sigmoid(shared_gate(x))`` (Qwen2-MoE). Needs ``shared``.

    Parameter names: ``router.weight`` (``router.bias``, ``router.correction_bias``), ``experts.gate_up``
    (or ``experts.up``), ``experts.down``, ``shared.{gate,up,down}.weight``, ``shared_gate.weight``.
    """

    routed: ClassVar[bool] = True
    """Blocks pass a ``routings`` list only to MLPs whose class says ``routed = True``."""

    def __init__(self, *, router: Router, experts: Experts, shared: nn.Module | None = None,
                 shared_gate: nn.Linear | None = None) -> None:
        super().__init__()
        if router.dim != experts.dim:
            raise ValueError(f"router: expected dim {experts.dim} (the experts'), got {router.dim}")
        if router.experts != experts.total:
            raise ValueError(f"router: expected one over the experts' {experts.total} experts, got {router.experts}")
        if isinstance(router, ExpertChoiceRouter) and isinstance(experts, CapacityExperts):
            raise ValueError("experts: expected dropless Experts for expert choice (capacity-bounded by "
                             "construction), got CapacityExperts")
        if shared_gate is not None and shared is None:
            raise ValueError("shared_gate: expected a shared expert to gate, got shared=None")
        if shared_gate is not None and (shared_gate.in_features, shared_gate.out_features) != (experts.dim, 1):
            raise ValueError(f"shared_gate: expected Linear({experts.dim}, 1), "
                             f"got Linear({shared_gate.in_features}, {shared_gate.out_features})")
        shared_dims = _io_dims(shared)
        if shared_dims is not None and shared_dims != (experts.dim, experts.dim):
            raise ValueError(f"shared: expected {experts.dim} -> {experts.dim} features, "
                             f"got {shared_dims[0]} -> {shared_dims[1]}")
        self.dim, self.num_experts = experts.dim, experts.total
        self.router, self.experts, self.shared, self.shared_gate = router, experts, shared, shared_gate

    @property
    def expert_slice(self) -> slice:
        """The global expert ids held here (all of them without expert parallelism)."""
        return self.experts.expert_slice

    def forward_routed(self, x: Tensor) -> tuple[Tensor, Routing]:
        """``x: [*, T, C]`` -> (``[*, T, C]``, the ``Routing`` of the ``N`` flattened tokens as served)."""
        flat = x.reshape(-1, self.dim)  # [N, C]
        y, routing = self.experts(flat, self.router(x))  # [N, C]
        if self.shared is not None:
            s = self.shared(flat)
            if self.shared_gate is not None:
                s = torch.sigmoid(self.shared_gate(flat)) * s
            y = y + s
        return y.view(x.shape), routing

    def forward(self, x: Tensor, routings: list[Routing] | None = None) -> Tensor:
        """``x: [*, T, C] -> [*, T, C]``; this call's ``Routing`` is appended to ``routings`` if given."""
        y, routing = self.forward_routed(x)
        if routings is not None:
            routings.append(routing)
        return y


def _io_dims(module: nn.Module | None) -> tuple[int, int] | None:
    """(input, output) features of a shared expert whose first and last projections are visible
    (``GatedMLP``'s ``gate``/``down``, ``MLP``'s ``fc1``/``fc2``); ``None`` when they are not."""
    first = getattr(module, "gate", None) or getattr(module, "fc1", None)
    last = getattr(module, "down", None) or getattr(module, "fc2", None)
    if not (isinstance(first, nn.Linear) and isinstance(last, nn.Linear)):
        return None
    return first.in_features, last.out_features
