"""Routing for sparse Mixture-of-Experts layers: the :class:`Routing` record, the routers, and their
auxiliary losses.

A token is sent to a few of ``E`` feed-forward experts chosen by a learned router, and their
outputs are combined with the router's weights (Shazeer et al. 2017, "Outrageously Large Neural
Networks: The Sparsely-Gated Mixture-of-Experts Layer"). Each router returns one :class:`Routing`:

- :class:`SwitchRouter`: top-1 with a per-sequence expert capacity; overflow tokens are dropped
  (their layer output is 0, the residual carries them), multiplicative jitter on the router input in
  training, load-balancing loss (Fedus et al. 2021, "Switch Transformers", §2.1-2.2, eq. 4-6), router
  z-loss (Zoph et al. 2022, "ST-MoE", §3.1, eq. 5).
- :class:`TopKRouter`: softmax, top-k, optionally renormalised over the chosen k (Mixtral: Jiang et al.
  2024, "Mixtral of Experts", §2.1; Qwen2-MoE with ``normalize=False``), the Switch balance loss pooled
  over all tokens as transformers' ``load_balancing_loss_func`` computes it.
- :class:`DeepSeekRouter`: sigmoid affinities, a bias buffer used only to select experts, group-limited
  top-k, weights renormalised and scaled, and the auxiliary-loss-free bias update
  (DeepSeek-AI 2024, "DeepSeek-V3 Technical Report", §2.1.2, eq. 12-16; sequence-wise balance loss
  eq. 17-20).
- :class:`ExpertChoiceRouter`: each expert picks its top-``C`` tokens (Zhou et al. 2022,
  "Mixture-of-Experts with Expert Choice Routing", §3.1).

Shapes: ``N`` tokens (all leading dims flattened), ``T`` tokens of one sequence (the routing group),
``G`` groups (sequences), ``E`` experts, ``k`` experts per token, ``C`` width.
Router logits and weights are float32 whatever the input dtype ("selective precision", Switch §2.4).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# --------------------------------------------------------------------------- the routing record


@dataclass(frozen=True, kw_only=True)
class Routing:
    """What a router decided for ``N`` tokens.

    - ``experts [N, k]`` int64 expert ids; ``weights [N, k]`` float32 combine weights.
    - ``logits [N, E]`` float32 router logits (before any bias or masking).
    - ``kept [N, k]`` bool, ``False`` where capacity dropped the assignment; ``None``: all kept.
    - ``aux_losses``: unweighted auxiliary losses by name (``"balance"``, ``"z"``); coefficients are
      applied by the caller.
    - ``load [E]`` int64: assignments each expert received (after dropping; a capacity-bounded
      dispatch returns the routing it served, :meth:`with_kept`).
    - ``dropped``: scalar fraction of assignments dropped (for expert choice: of tokens that no expert
      picked).

    Expert choice has ``k = E``: ``experts`` is ``arange(E)`` per token and ``kept`` marks the experts
    that picked the token.
    """

    experts: Tensor
    weights: Tensor
    logits: Tensor
    kept: Tensor | None = None
    aux_losses: dict[str, Tensor] = field(default_factory=dict)
    load: Tensor
    dropped: Tensor

    @property
    def k(self) -> int:
        return self.experts.shape[-1]

    @property
    def num_experts(self) -> int:
        return self.logits.shape[-1]

    def with_kept(self, kept: Tensor) -> Routing:
        """This routing after a dispatch served only the assignments ``kept [N, k]``: ``load`` and
        ``dropped`` recounted over them."""
        return replace(self, kept=kept, load=expert_load(self.experts, kept, self.num_experts),
                       dropped=1.0 - kept.float().mean())


def expert_load(experts: Tensor, kept: Tensor | None, num_experts: int) -> Tensor:
    """``experts [N, k]`` (with ``kept [N, k]`` or ``None``: all kept) -> ``[E]`` int64 counts of the kept
    assignments (a scatter-add: no host synchronisation)."""
    ids = experts.reshape(-1)
    ones = torch.ones_like(ids) if kept is None else kept.reshape(-1).long()
    return ids.new_zeros(num_experts).scatter_add_(0, ids, ones)


def counts_per_expert(sorted_ids: Tensor, num_experts: int) -> Tensor:
    """Rows per expert of ascending expert ids ``[S]`` -> ``[E]`` (no host synchronisation)."""
    ends = torch.searchsorted(sorted_ids, torch.arange(num_experts, device=sorted_ids.device), right=True)
    return torch.diff(ends, prepend=ends.new_zeros(1))


def sort_by_expert(routing: Routing) -> tuple[Tensor, Tensor, Tensor]:
    """The kept assignments ordered by expert (stable: in token order within an expert):
    (``token [S]``, ``weight [S]``, ``expert [S]``)."""
    n, k = routing.experts.shape
    expert = routing.experts.reshape(-1)
    weight = routing.weights.reshape(-1)
    index = torch.arange(n * k, device=expert.device)
    if routing.kept is not None:
        index = index[routing.kept.reshape(-1)]
        expert = expert[index]
    order = torch.argsort(expert, stable=True)
    index = index[order]
    return index // k, weight[index], expert[order]


def load_balancing_loss(probs: Tensor, counts: Tensor) -> Tensor:
    """Switch Transformers' auxiliary loss (Fedus et al. 2021, eq. 4-6), averaged over groups:
    ``E * mean_g sum_e f_ge P_ge`` with ``f_ge = counts_ge / T`` (the fraction of the group's tokens sent
    to expert ``e``; with top-k it sums to k) and ``P_ge`` the mean router probability.
    ``probs: [G, T, E]``, ``counts: [G, E]`` -> scalar. 1 (times k) when perfectly balanced."""
    e, t = probs.shape[-1], probs.shape[-2]
    f = counts.to(probs.dtype) / t
    return e * (f * probs.mean(dim=-2)).sum(-1).mean()


def pooled_balance_loss(routings: Sequence[Routing]) -> Tensor:
    """The balance loss of several layers pooled as transformers' Mixtral / Qwen2-MoE models compute
    their ``aux_loss`` (``load_balancing_loss_func`` over all layers' logits): ``E sum_e f_e P_e`` with
    ``f`` and ``P`` averaged over every layer's tokens, not the mean of per-layer losses. Uses each
    routing's ``load`` (its top-k choices) and softmaxed ``logits``; the routings of a model's layers are
    collected by passing a list as ``routings=`` to its forward (:meth:`~tatlas.nn.moe.MoE.forward`)."""
    rows = sum(r.logits.shape[0] for r in routings)
    f = sum(r.load.float() for r in routings) / rows
    p = sum(r.logits.float().softmax(-1).sum(0) for r in routings) / rows
    return routings[0].num_experts * (f * p).sum()


def router_z_loss(logits: Tensor) -> Tensor:
    """Mean squared log-partition of the router logits (Zoph et al. 2022, ST-MoE eq. 5).
    ``logits: [*, E]`` -> scalar."""
    return torch.logsumexp(logits, dim=-1).pow(2).mean()


def _as_groups(x: Tensor) -> Tensor:
    """``[*, T, C] -> [G, T, C]``: each sequence is a routing group; ``[N, C]`` is one group."""
    return x.reshape(1, *x.shape) if x.dim() == 2 else x.reshape(-1, *x.shape[-2:])


def _one_hot_counts(experts: Tensor, num_experts: int) -> Tensor:
    """``experts [G, T, k]`` -> ``[G, E]`` selection counts per group."""
    ones = torch.ones_like(experts, dtype=torch.float32).flatten(1)
    return torch.zeros(experts.shape[0], num_experts, device=experts.device).scatter_add_(1, experts.flatten(1), ones)


# --------------------------------------------------------------------------- routers


class Router(nn.Module):
    """Base router: a linear map ``[*, C] -> [*, E]`` computed in float32, with optional multiplicative
    jitter ``U(1 - jitter, 1 + jitter)`` on its input in training (Switch §2.4).
    Subclasses implement ``forward(x: [*, T, C] or [N, C]) -> Routing``."""

    def __init__(self, *, dim: int, experts: int, k: int, bias: bool = False, jitter: float = 0.0) -> None:
        super().__init__()
        if experts < 1:
            raise ValueError(f"experts: expected >= 1, got {experts}")
        if not 1 <= k <= experts:
            raise ValueError(f"top_k: expected 1 <= top_k <= experts ({experts}), got {k}")
        if jitter < 0:
            raise ValueError(f"jitter: expected >= 0, got {jitter}")
        self.dim, self.experts, self.k, self.jitter = dim, experts, k, jitter
        self.weight = nn.Parameter(torch.empty(experts, dim))
        self.bias = nn.Parameter(torch.empty(experts)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """As ``nn.Linear``: ``U(-1/sqrt(C), 1/sqrt(C))`` for the weight (and bias)."""
        bound = 1 / math.sqrt(self.dim)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def logits(self, x: Tensor) -> Tensor:
        """``[*, C] -> [*, E]`` float32."""
        x = x.float()
        if self.training and self.jitter > 0:
            x = x * torch.empty_like(x).uniform_(1.0 - self.jitter, 1.0 + self.jitter)
        return F.linear(x, self.weight.float(), None if self.bias is None else self.bias.float())

    def extra_repr(self) -> str:
        return f"dim={self.dim}, experts={self.experts}, k={self.k}"


class SwitchRouter(Router):
    """Top-1 routing with a per-sequence expert capacity (Fedus et al. 2021, §2.1-2.2).

    Each token goes to its argmax expert with weight ``p_max``; an expert takes at most ``capacity``
    tokens of each sequence, in position order, and the rest are dropped (``kept=False``; their output
    is 0). ``capacity`` is given outright, or as ``ceil(T * capacity_factor / E)``.
    Auxiliary losses: ``"balance"`` (eq. 4-6, per sequence then averaged, on the choices before
    dropping, as transformers' ``load_balancing_loss_func``) and ``"z"`` (ST-MoE eq. 5).
    Matches transformers' ``SwitchTransformersTop1Router`` (whose ``expert_capacity`` is ``capacity``).
    """

    def __init__(self, *, dim: int, experts: int, capacity_factor: float = 1.25, capacity: int | None = None,
                 jitter: float = 0.0, bias: bool = False) -> None:
        if capacity_factor <= 0:
            raise ValueError(f"capacity_factor: expected > 0, got {capacity_factor}")
        if capacity is not None and capacity < 1:
            raise ValueError(f"capacity: expected >= 1 tokens per expert, got {capacity}")
        super().__init__(dim=dim, experts=experts, k=1, bias=bias, jitter=jitter)
        self.capacity_factor, self.capacity = capacity_factor, capacity

    def capacity_for(self, tokens: int) -> int:
        """Slots per expert for a sequence of ``tokens``."""
        if self.capacity is not None:
            return self.capacity
        return max(1, math.ceil(tokens * self.capacity_factor / self.experts))

    def forward(self, x: Tensor) -> Routing:
        """``x: [*, T, C]`` (capacity per sequence) or ``[N, C]`` (one group) -> ``Routing`` with ``k = 1``."""
        logits = self.logits(_as_groups(x))  # [G, T, E]
        probs = logits.softmax(-1)
        weight, expert = probs.max(dim=-1)  # [G, T]
        chosen = F.one_hot(expert, self.experts)  # [G, T, E]
        priority = (chosen.cumsum(dim=1) * chosen).sum(-1)  # [G, T] position of the token in its expert's queue
        kept = priority <= self.capacity_for(logits.shape[1])
        experts, kept = expert.reshape(-1, 1), kept.reshape(-1, 1)
        aux = {"balance": load_balancing_loss(probs, chosen.sum(1)), "z": router_z_loss(logits)}
        return Routing(experts=experts, weights=weight.reshape(-1, 1), logits=logits.reshape(-1, self.experts),
                       kept=kept, aux_losses=aux, load=expert_load(experts, kept, self.experts),
                       dropped=1.0 - kept.float().mean())


class TopKRouter(Router):
    """Softmax over ``E`` experts, keep the top ``k``; with ``normalize`` the k weights are renormalised
    to sum to 1 (Mixtral, Jiang et al. 2024 §2.1: ``softmax(top_k(x W))``); without, they are the raw
    probabilities (Qwen2-MoE's ``norm_topk_prob=False``).
    Auxiliary loss ``"balance"``: Switch's eq. 4-6 pooled over all ``N`` tokens, ``f`` counting the k
    choices (so it is ``k`` when balanced), as transformers' Mixtral ``load_balancing_loss_func``.
    Matches ``MixtralTopKRouter`` and ``Qwen2MoeTopKRouter``. ``jitter`` multiplies the router's input
    only (transformers' Mixtral block jitters the experts' input too); model-level losses over several
    layers: :func:`pooled_balance_loss`."""

    def __init__(self, *, dim: int, experts: int, k: int, normalize: bool = True, jitter: float = 0.0) -> None:
        super().__init__(dim=dim, experts=experts, k=k, jitter=jitter)
        self.normalize = normalize

    def forward(self, x: Tensor) -> Routing:
        """``x: [*, C]`` -> ``Routing`` over the ``N`` flattened tokens."""
        logits = self.logits(x.reshape(-1, self.dim))  # [N, E]
        probs = logits.softmax(-1)
        weights, experts = probs.topk(self.k, dim=-1)  # [N, k]
        if self.normalize:
            weights = weights / weights.sum(-1, keepdim=True)
        load = expert_load(experts, None, self.experts)
        aux = {"balance": load_balancing_loss(probs[None], load[None])}
        return Routing(experts=experts, weights=weights, logits=logits, aux_losses=aux, load=load,
                       dropped=logits.new_zeros(()))


class DeepSeekRouter(Router):
    """DeepSeek-V3 routing (§2.1.2): sigmoid affinities ``s = sigmoid(x W)``; a bias ``b`` (buffer
    ``correction_bias``) is added only to choose experts; experts are split into ``groups``, each group
    scored by the sum of its top-2 biased affinities, the best ``topk_groups`` groups kept, and the top
    ``k`` experts chosen within them; the weights are the unbiased affinities, renormalised over the k
    (``normalize``) and multiplied by ``scaling`` (``routed_scaling_factor``).

    Auxiliary-loss-free balancing (eq. 16): after a step, :meth:`update_bias` moves ``b_i`` by
    ``rate * sign(mean_load - load_i)``. Auxiliary loss ``"balance"``: the complementary sequence-wise
    loss (eq. 17-20, without its ``alpha``), ``sum_i f_i P_i`` with ``f_i = E / (k T) * count_i`` and
    ``P_i`` the mean of ``s / sum(s)`` over the sequence; 1 when balanced.
    Matches transformers' ``DeepseekV3TopkRouter``."""

    def __init__(self, *, dim: int, experts: int, k: int, groups: int = 1, topk_groups: int = 1,
                 scaling: float = 1.0, normalize: bool = True) -> None:
        if groups < 1 or experts % groups:
            raise ValueError(f"groups: expected a divisor of experts ({experts}), got {groups}")
        if not 1 <= topk_groups <= groups:
            raise ValueError(f"topk_groups: expected 1 <= topk_groups <= groups ({groups}), got {topk_groups}")
        if k > topk_groups * (experts // groups):
            raise ValueError(f"top_k: expected <= topk_groups * experts per group "
                             f"({topk_groups} * {experts // groups}), got {k}")
        super().__init__(dim=dim, experts=experts, k=k)
        self.groups, self.topk_groups, self.scaling, self.normalize = groups, topk_groups, scaling, normalize
        self.register_buffer("correction_bias", torch.zeros(experts, dtype=torch.float32))

    def forward(self, x: Tensor) -> Routing:
        """``x: [*, T, C]`` (balance loss per sequence) or ``[N, C]`` -> ``Routing``."""
        grouped = _as_groups(x)
        logits = self.logits(grouped.reshape(-1, self.dim))  # [N, E]
        scores = logits.sigmoid()
        choice = scores + self.correction_bias.float()
        if self.groups > 1:
            per_group = choice.view(-1, self.groups, self.experts // self.groups)  # [N, groups, E / groups]
            group_scores = per_group.topk(min(2, per_group.shape[-1]), dim=-1).values.sum(-1)  # [N, groups]
            best = group_scores.topk(self.topk_groups, dim=-1, sorted=False).indices
            allowed = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, best, True)
            allowed = allowed[:, :, None].expand_as(per_group).reshape(-1, self.experts)  # [N, E]
            choice = choice.masked_fill(~allowed, float("-inf"))
        experts = choice.topk(self.k, dim=-1, sorted=False).indices  # [N, k]
        weights = scores.gather(1, experts)
        if self.normalize:
            weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
        weights = weights * self.scaling
        g, t = grouped.shape[:2]
        counts = _one_hot_counts(experts.view(g, t, self.k), self.experts)  # [G, E]
        f = counts * (self.experts / (self.k * t))
        p = (scores / scores.sum(-1, keepdim=True)).view(g, t, self.experts).mean(1)
        load = expert_load(experts, None, self.experts)
        return Routing(experts=experts, weights=weights, logits=logits, aux_losses={"balance": (f * p).sum(-1).mean()},
                       load=load, dropped=logits.new_zeros(()))

    @torch.no_grad()
    def update_bias(self, load: Tensor, rate: float) -> None:
        """Auxiliary-loss-free balancing (§2.1.2): ``b_i += rate * sign(mean(load) - load_i)``: overloaded
        experts become less likely to be chosen, underloaded ones more. ``load: [E]`` assignments per
        expert over the step (summed over micro-batches, and all-reduced over data-parallel ranks)."""
        load = load.to(self.correction_bias.device, torch.float32)
        self.correction_bias.add_(rate * torch.sign(load.mean() - load))


class ExpertChoiceRouter(Router):
    """Expert choice (Zhou et al. 2022, §3.1): ``S = softmax(x W)`` over experts; each expert takes the
    ``C = round(T * capacity_factor / E)`` tokens of the sequence with the highest score for it, with
    that score as weight. Loads are balanced by construction (no auxiliary loss); a token may get
    0..E experts. Choosing over a sequence sees future tokens: not causal, so not for decoders.
    ``Routing`` has ``k = E``, ``kept`` marking the experts that picked each token."""

    def __init__(self, *, dim: int, experts: int, capacity_factor: float = 2.0) -> None:
        if capacity_factor <= 0:
            raise ValueError(f"capacity_factor: expected > 0, got {capacity_factor}")
        super().__init__(dim=dim, experts=experts, k=experts)
        self.capacity_factor = capacity_factor

    def capacity_for(self, tokens: int) -> int:
        return min(tokens, max(1, round(tokens * self.capacity_factor / self.experts)))

    def forward(self, x: Tensor) -> Routing:
        """``x: [*, T, C]`` (experts choose within each sequence) or ``[N, C]`` -> ``Routing`` with ``k = E``."""
        logits = self.logits(_as_groups(x))  # [G, T, E]
        g, t, e = logits.shape
        probs = logits.softmax(-1)
        picked = probs.transpose(1, 2).topk(self.capacity_for(t), dim=-1).indices  # [G, E, C]
        kept = torch.zeros(g, e, t, dtype=torch.bool, device=x.device).scatter_(2, picked, True).transpose(1, 2)
        kept = kept.reshape(-1, e)  # [N, E]
        weights = probs.reshape(-1, e) * kept
        experts = torch.arange(e, device=x.device).expand(g * t, e)
        return Routing(experts=experts, weights=weights, logits=logits.reshape(-1, e), kept=kept,
                       load=expert_load(experts, kept, e), dropped=1.0 - kept.any(-1).float().mean())
