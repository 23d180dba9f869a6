"""Sparse Mixture-of-Experts (Shazeer et al. 2017; Switch, GShard, Mixtral, Qwen2-MoE, DeepSeek-V3,
expert choice), composed from parts:

- :mod:`.routing`: the :class:`Routing` record, the routers, balance and z losses, count helpers;
- :mod:`.experts`: :class:`Experts` (dropless dispatch) and :class:`CapacityExperts` (GShard capacity);
- :mod:`.experts_parallel`: :class:`ParallelExperts` (experts sharded over ranks, all-to-all);
- :mod:`.layer`: :class:`MoE`, which takes a built router, experts and optional shared expert.

Imports point one way: routing <- experts <- experts_parallel, layer.

Example (Qwen2-MoE's block)::

    MoE(router=TopKRouter(dim=C, experts=E, k=k, normalize=False),
        experts=Experts(dim=C, hidden=I, experts=E),
        shared=GatedMLP(dim=C, hidden=I_shared), shared_gate=nn.Linear(C, 1, bias=False))
"""

from .experts import BACKENDS, CapacityExperts, Experts, grouped_mm_supported
from .experts_parallel import ParallelExperts, all_to_all, expert_shard, shard_range
from .layer import MoE
from .routing import (
    DeepSeekRouter,
    ExpertChoiceRouter,
    Router,
    Routing,
    SwitchRouter,
    TopKRouter,
    counts_per_expert,
    expert_load,
    load_balancing_loss,
    pooled_balance_loss,
    router_z_loss,
    sort_by_expert,
)

__all__ = [
    "BACKENDS", "CapacityExperts", "DeepSeekRouter", "ExpertChoiceRouter", "Experts", "MoE", "ParallelExperts",
    "Router", "Routing", "SwitchRouter", "TopKRouter", "all_to_all", "counts_per_expert", "expert_load",
    "expert_shard", "grouped_mm_supported", "load_balancing_loss", "pooled_balance_loss", "router_z_loss",
    "shard_range", "sort_by_expert",
]
