"""Sparse Mixture-of-Experts layers: routers, stacked experts, dropless and capacity-bounded dispatch.

A token is sent to a few of ``E`` feed-forward experts chosen by a learned router, and their
outputs are combined with the router's weights (Shazeer et al. 2017, "Outrageously Large Neural
Networks: The Sparsely-Gated Mixture-of-Experts Layer").

Routers (each returns one :class:`Routing` record):

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

Experts (:class:`Experts`) are stacked weights, gate half first as in transformers' fused experts:
``gate_up [E, 2I, C]`` and ``down [E, C, I]`` (SwiGLU experts), or ``up [E, I, C]`` and ``down [E, C, I]``
for plain two-layer experts (``gated=False``, Switch). Dispatch is dropless by default: the (token,
expert) assignments are sorted by expert and every expert runs on its contiguous segment, through
``torch._grouped_mm`` where the device and shapes allow, else through a loop over the segments. The
routing weight scales the narrower of the expert's hidden ``[S, I]`` and output ``[S, C]`` (the down
projection is linear), and the rows are summed back per token by a sequential ``index_add_`` on CPU
or a gather-and-sum on CUDA (deterministic both); the two permutations are each other's adjoint
(:class:`_Dispatch`, :class:`_Combine`) and serve as each other's backward. ``capacity_factor=`` gives
the static-shape capacity-bounded dispatch of GShard (Lepikhin et al. 2020, §2.2): per-expert buffers
``[E, capacity, C]``, first choices before second choices, overflow dropped.

:class:`MoE` composes a router, experts and optional shared experts (DeepSeek-V3's always-on experts;
Qwen2-MoE's sigmoid-gated shared expert), and shards its experts across ranks with ``ep_group=``
(see :mod:`.moe_parallel`).

Conversion from transformers (block-relative keys; see :func:`hf_moe_keymap` and
:func:`switch_from_hf`): ``gate.weight -> router.weight``, ``gate.e_score_correction_bias ->
router.correction_bias``, ``experts.gate_up_proj -> experts.gate_up``, ``experts.down_proj ->
experts.down`` (no transform: our layout is theirs), ``shared_expert(s).{gate,up,down}_proj.weight ->
shared.{gate,up,down}.weight``, ``shared_expert_gate.weight -> shared_gate.weight``; Switch's per-expert
``experts.expert_{j}.wi.weight [I, C]`` / ``wo.weight [C, I]`` are stacked over ``j`` into
``experts.up`` / ``experts.down``.

Shapes: ``N`` tokens (all leading dims flattened), ``T`` tokens of one sequence (the routing group),
``E`` experts, ``k`` experts per token, ``C`` width, ``I`` expert width, ``S`` assignments kept.
Router logits and weights are float32 whatever the input dtype ("selective precision", Switch §2.4).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..io.convert import KeyMap, Rename, Stack
from .mlp import GatedMLP, activation

# --------------------------------------------------------------------------- the routing record


@dataclass(frozen=True, kw_only=True)
class Routing:
    """What a router decided for ``N`` tokens.

    - ``experts [N, k]`` int64 expert ids; ``weights [N, k]`` float32 combine weights.
    - ``logits [N, E]`` float32 router logits (before any bias or masking).
    - ``kept [N, k]`` bool, ``False`` where capacity dropped the assignment; ``None``: all kept.
    - ``aux_losses``: unweighted auxiliary losses by name (``"balance"``, ``"z"``); coefficients are
      applied by the caller.
    - ``load [E]`` int64: assignments each expert received (after dropping).
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


def _load(experts: Tensor, kept: Tensor | None, num_experts: int) -> Tensor:
    """``[E]`` int64 counts of the (kept) assignments (a scatter-add: no host synchronisation)."""
    ids = experts.reshape(-1)
    ones = torch.ones_like(ids) if kept is None else kept.reshape(-1).long()
    return ids.new_zeros(num_experts).scatter_add_(0, ids, ones)


def counts_per_expert(sorted_ids: Tensor, num_experts: int) -> Tensor:
    """Rows per expert of ascending expert ids ``[S]`` -> ``[E]`` (no host synchronisation)."""
    ends = torch.searchsorted(sorted_ids, torch.arange(num_experts, device=sorted_ids.device), right=True)
    return torch.diff(ends, prepend=ends.new_zeros(1))


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
    routing's ``load`` (its top-k choices) and softmaxed ``logits``."""
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
                       kept=kept, aux_losses=aux, load=_load(experts, kept, self.experts),
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
        load = _load(experts, None, self.experts)
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
        load = _load(experts, None, self.experts)
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
                       load=_load(experts, kept, e), dropped=1.0 - kept.any(-1).float().mean())


# --------------------------------------------------------------------------- experts and dispatch


def grouped_mm_supported(x: Tensor, *weights: Tensor) -> bool:
    """Whether ``torch._grouped_mm`` runs ``x [S, K] @ w[e].T`` here. torch 2.13: CPU takes float32,
    bfloat16 and float16 with 16-byte aligned pointers and row strides (so ``C`` and ``I`` multiples of
    4 in float32, of 8 in 16-bit types); CUDA needs compute capability >= 8.0 and bfloat16."""
    if not hasattr(torch, "_grouped_mm"):
        return False
    if x.device.type == "cuda":
        return x.dtype == torch.bfloat16 and torch.cuda.get_device_capability(x.device) >= (8, 0)
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return False
    if torch.compiler.is_compiling():  # inductor lowers grouped_mm for bfloat16 only; no data pointers here
        return x.dtype == torch.bfloat16 and x.shape[-1] % 8 == 0 and all(w.shape[-1] % 8 == 0 for w in weights)
    size = x.element_size()
    return all(t.data_ptr() % 16 == 0 and all(s * size % 16 == 0 for s in t.stride()[:-1] if s != 1)
               for t in (x, *weights)) and all(w.shape[-1] * size % 16 == 0 for w in weights)


def _grouped_linear(x: Tensor, weight: Tensor, offsets: Tensor) -> Tensor:
    """``x [S, in]`` with rows grouped by expert (ends at ``offsets [E]`` int32), ``weight [E, out, in]``
    -> ``[S, out]``: row block ``e`` times ``weight[e].T``."""
    return torch._grouped_mm(x, weight.transpose(-2, -1), offs=offsets)


class _SwiGLU(torch.autograd.Function):
    """``silu(gate) * up`` of the fused ``[S, 2I]`` projection (gate half first) -> ``[S, I]``, whose
    backward writes both halves' gradients into one ``[S, 2I]`` tensor instead of concatenating them."""

    @staticmethod
    def forward(ctx, h: Tensor) -> Tensor:
        ctx.save_for_backward(h)
        gate, up = h.chunk(2, dim=-1)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (h,) = ctx.saved_tensors
        gate, up = h.chunk(2, dim=-1)
        dh = torch.empty_like(h)
        i = gate.shape[-1]
        torch.ops.aten.silu_backward.grad_input(grad * up, gate, grad_input=dh[..., :i])
        torch.mul(grad, F.silu(gate), out=dh[..., i:])
        return dh


class _Dispatch(torch.autograd.Function):
    """Each row of ``x [N, C]`` copied to its ``k`` assignments in expert order: ``x[token]`` with
    ``token = order // k`` ``-> [N k, C]``. Its backward is its adjoint :func:`_combine` (a sum over
    the k copies), not autograd's generic scatter-add for indexing."""

    @staticmethod
    def forward(ctx, x: Tensor, token: Tensor, inverse: Tensor, k: int) -> Tensor:
        ctx.save_for_backward(token, inverse)
        ctx.k = k
        return x.index_select(0, token)

    @staticmethod
    def backward(ctx, grad: Tensor):
        token, inverse = ctx.saved_tensors
        return _combine(grad, token, inverse, ctx.k), None, None, None


class _Combine(torch.autograd.Function):
    """The adjoint of :class:`_Dispatch`: ``[N k, C]`` rows in expert order summed back per token
    ``-> [N, C]``."""

    @staticmethod
    def forward(ctx, y: Tensor, token: Tensor, inverse: Tensor, k: int) -> Tensor:
        ctx.save_for_backward(token, inverse)
        ctx.k = k
        return _combine(y, token, inverse, k)

    @staticmethod
    def backward(ctx, grad: Tensor):
        token, inverse = ctx.saved_tensors
        return grad.index_select(0, token), None, None, None


def _combine(y: Tensor, token: Tensor, inverse: Tensor, k: int) -> Tensor:
    """``y [N k, C]`` in expert order summed per token -> ``[N, C]``. On CUDA a gather by ``inverse``
    (where (token n, slot j) sits in ``y``) and a sum over the k slots: deterministic, unlike a
    scatter-add with atomics. On CPU a sequential ``index_add_`` by ``token``: deterministic too, and it
    allocates no ``[N k, C]`` temporary (fresh pages of large temporaries cost more than the adds)."""
    if y.device.type == "cpu":
        return y.new_zeros(inverse.shape[0] // k, y.shape[-1]).index_add_(0, token, y)
    return y.index_select(0, inverse).view(-1, k, y.shape[-1]).sum(1)


BACKENDS = ("auto", "grouped_mm", "loop")


class Experts(nn.Module):
    """``E`` feed-forward experts as stacked weights: SwiGLU-style ``down(act(gate x) * up x)`` from
    ``gate_up [E, 2I, C]`` (gate rows first) and ``down [E, C, I]``, or with ``gated=False`` the
    two-layer ``down(act(up x))`` from ``up [E, I, C]`` and ``down [E, C, I]`` (Switch's experts).

    ``backend``: ``"grouped_mm"`` runs all experts in one ``torch._grouped_mm`` per projection,
    ``"loop"`` loops over the experts' contiguous segments, ``"auto"`` takes the first where
    :func:`grouped_mm_supported` says it runs. ``offset`` is the global id of the first expert held here
    (expert parallelism: this module then holds ``experts`` of ``total`` experts)."""

    def __init__(self, *, dim: int, hidden: int, experts: int, act: str = "silu", gated: bool = True,
                 backend: str = "auto", offset: int = 0, total: int | None = None) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {list(BACKENDS)}, got {backend!r}")
        if experts < 1 or dim < 1 or hidden < 1:
            raise ValueError(f"Experts: expected experts, dim, hidden >= 1, got {experts}, {dim}, {hidden}")
        self.dim, self.hidden, self.num_experts, self.gated, self.backend = dim, hidden, experts, gated, backend
        self.offset, self.total = offset, experts if total is None else total
        self.act_name, self.act = act, activation(act)
        if gated:
            self.gate_up = nn.Parameter(torch.empty(experts, 2 * hidden, dim))
        else:
            self.up = nn.Parameter(torch.empty(experts, hidden, dim))
        self.down = nn.Parameter(torch.empty(experts, dim, hidden))
        self.reset_parameters()

    @property
    def w_in(self) -> Tensor:
        """``[E, 2I, C]`` (gated) or ``[E, I, C]``."""
        return self.gate_up if self.gated else self.up

    def reset_parameters(self) -> None:
        """Each expert as ``nn.Linear`` would be: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``."""
        nn.init.uniform_(self.w_in, -1 / math.sqrt(self.dim), 1 / math.sqrt(self.dim))
        nn.init.uniform_(self.down, -1 / math.sqrt(self.hidden), 1 / math.sqrt(self.hidden))

    def _inner(self, h: Tensor) -> Tensor:
        """``[S, 2I] -> [S, I]`` (gated) or ``[S, I] -> [S, I]``."""
        if not self.gated:
            return self.act(h)
        if self.act_name == "silu" and torch.is_grad_enabled():
            return _SwiGLU.apply(h)
        gate, up = h.chunk(2, dim=-1)
        return self.act(gate) * up

    def use_grouped_mm(self, x: Tensor) -> bool:
        if self.backend == "loop":
            return False
        if self.backend == "grouped_mm":
            return True
        return grouped_mm_supported(x, self.w_in, self.down)

    def run_sorted(self, xs: Tensor, counts: Tensor, scale: Tensor | None = None) -> Tensor:
        """Every expert on its rows: ``xs [S, C]`` grouped by local expert, ``counts [E]`` rows per
        expert (summing to S) -> ``[S, C]``, each row times ``scale [S]`` if given (applied to the
        narrower of the expert's hidden ``[S, I]`` and its output ``[S, C]``: the down projection is
        linear)."""
        early = scale is not None and self.hidden < self.dim
        late = scale is not None and not early
        if self.use_grouped_mm(xs):
            offsets = counts.cumsum(0).to(torch.int32)
            h = self._inner(_grouped_linear(xs, self.w_in, offsets))  # [S, I]
            y = _grouped_linear(h * scale[:, None] if early else h, self.down, offsets)  # [S, C]
            return y * scale[:, None] if late else y
        ys, start = [], 0
        for e, n in enumerate(counts.tolist()):
            if n:
                rows = slice(start, start + n)
                h = self._inner(F.linear(xs[rows], self.w_in[e]))  # [n, I]
                y = F.linear(h * scale[rows, None] if early else h, self.down[e])  # [n, C]
                ys.append(y * scale[rows, None] if late else y)
                start += n
        if not ys:  # no rows at all: an empty product keeps the weights in the graph (zero gradients)
            return F.linear(self._inner(F.linear(xs, self.w_in[0])), self.down[0])
        return torch.cat(ys)

    def forward(self, x: Tensor, routing: Routing) -> Tensor:
        """Dropless dispatch: ``x [N, C]``, ``routing`` over all ``E`` experts -> ``[N, C]``, the
        weighted sum of each token's kept experts (0 for a token with none)."""
        if routing.kept is not None:  # some assignments dropped: gather the kept ones, scatter-add back
            token, weight, expert = sort_by_expert(routing)
            counts = counts_per_expert(expert, self.num_experts)
            y = self.run_sorted(x.index_select(0, token), counts, weight.to(x.dtype))  # [S, C]
            return x.new_zeros(x.shape).index_add_(0, token, y)
        k = routing.k
        expert = routing.experts.reshape(-1)  # [N k]
        order = torch.argsort(expert, stable=True)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        token = order // k
        counts = counts_per_expert(expert[order], self.num_experts)
        weight = routing.weights.reshape(-1)[order].to(x.dtype)
        y = self.run_sorted(_Dispatch.apply(x, token, inverse, k), counts, weight)  # [N k, C]
        return _Combine.apply(y, token, inverse, k)

    def forward_capacity(self, x: Tensor, routing: Routing, capacity: int) -> tuple[Tensor, Tensor]:
        """Capacity-bounded dispatch (GShard, Lepikhin et al. 2020 §2.2) with static shapes: each expert
        fills ``capacity`` slots, all first choices before any second choice, tokens in order; the
        overflow is dropped. ``x [N, C]`` -> (``[N, C]``, ``kept [N, k]``); batched matmuls over
        ``[E, capacity, C]`` buffers, no host synchronisation."""
        n, k = routing.experts.shape
        e = self.num_experts
        ids = routing.experts.t().reshape(-1)  # [k N] slot-major: first choices first
        valid = torch.ones_like(ids, dtype=torch.bool) if routing.kept is None else routing.kept.t().reshape(-1)
        ids = torch.where(valid, ids, e)  # already dropped -> a virtual expert E
        order = torch.argsort(ids, stable=True)
        counts = counts_per_expert(ids[order], e + 1)
        starts = counts.cumsum(0) - counts
        position = torch.empty_like(ids)
        position[order] = torch.arange(ids.numel(), device=ids.device) - starts[ids[order]]
        keep = valid & (position < capacity)
        slot = torch.where(keep, ids * capacity + position, e * capacity)  # the dropped share a trash slot
        token = torch.arange(n, device=x.device).repeat(k)
        buf = x.new_zeros(e * capacity + 1, self.dim).index_copy(0, slot, x[token])
        h = torch.bmm(buf[:-1].view(e, capacity, self.dim), self.w_in.transpose(1, 2))  # [E, cap, 2I]
        y = torch.bmm(self._inner(h), self.down.transpose(1, 2)).reshape(e * capacity, self.dim)  # [E cap, C]
        y = torch.cat([y, y.new_zeros(1, self.dim)])[slot]  # [k N, C]
        w = (routing.weights.t().reshape(-1) * keep).to(x.dtype)
        out = x.new_zeros(x.shape).index_add_(0, token, y * w[:, None])
        return out, keep.view(k, n).t()

    def extra_repr(self) -> str:
        held = f"experts={self.num_experts}" + (f" [{self.offset}:{self.offset + self.num_experts}] of {self.total}"
                                                 if self.num_experts != self.total else "")
        return f"dim={self.dim}, hidden={self.hidden}, {held}, act={self.act_name}, gated={self.gated}"


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


# --------------------------------------------------------------------------- the layer


class MoE(nn.Module):
    """A sparse MoE feed-forward layer: ``y = sum_{e in router(x)} w_e expert_e(x) [+ shared(x)]``.
    ``x: [*, T, C] -> [*, T, C]`` (``[N, C]`` works: one routing group).

    - ``router``: a :class:`Router` over ``experts`` experts (its ``dim`` must be ``dim``).
    - ``hidden``: expert width ``I``; ``act``, ``gated``: the experts' activation and form (SwiGLU by
      default; ``gated=False, act="relu"`` for Switch).
    - ``shared_hidden``: width of an always-on shared SwiGLU expert (DeepSeek-V3: ``n_shared *
      moe_intermediate_size``; 0 = none); ``shared_gate``: multiply it by ``sigmoid(x w)`` (Qwen2-MoE).
    - ``capacity_factor``: ``None`` for dropless dispatch; a float for capacity-bounded dispatch with
      ``ceil(capacity_factor * N k / E)`` slots per expert (GShard §2.2).
    - ``ep_group``: a process group to shard the experts over (expert parallelism, see
      :mod:`.moe_parallel`); ``experts`` must be divisible by its size. Each rank then holds experts
      ``[r E/W, (r+1) E/W)`` and routes its own tokens; the router and shared expert are replicated.
    - ``backend``: :class:`Experts`' matmul backend.

    :meth:`forward` returns the output and keeps the :class:`Routing` in ``last_routing`` (to collect
    auxiliary losses and loads after a forward; it holds the autograd graph of its losses until the
    next forward); :meth:`forward_routed` returns both.
    """

    def __init__(self, *, dim: int, hidden: int, experts: int, router: Router, act: str = "silu",
                 gated: bool = True, shared_hidden: int = 0, shared_gate: bool = False,
                 capacity_factor: float | None = None, ep_group=None, backend: str = "auto") -> None:
        super().__init__()
        if router.experts != experts or router.dim != dim:
            raise ValueError(f"router: expected one over {experts} experts of width {dim}, "
                             f"got experts={router.experts}, dim={router.dim}")
        if capacity_factor is not None and capacity_factor <= 0:
            raise ValueError(f"capacity_factor: expected > 0 or None (dropless), got {capacity_factor}")
        if shared_gate and not shared_hidden:
            raise ValueError("shared_gate: needs a shared expert (shared_hidden > 0)")
        if capacity_factor is not None and isinstance(router, ExpertChoiceRouter):
            raise ValueError("capacity_factor: expert choice is capacity-bounded by construction; use None")
        if ep_group is not None and capacity_factor is not None:
            raise ValueError("capacity_factor: capacity-bounded dispatch is single-process; expert parallelism "
                             "(ep_group) is dropless")
        self.dim, self.num_experts, self.capacity_factor, self.ep_group = dim, experts, capacity_factor, ep_group
        self.router = router
        offset, local = 0, experts
        if ep_group is not None:
            from .moe_parallel import expert_shard

            offset, local = expert_shard(experts, ep_group)
        self.experts = Experts(dim=dim, hidden=hidden, experts=local, act=act, gated=gated, backend=backend,
                               offset=offset, total=experts)
        self.shared = GatedMLP(dim=dim, hidden=shared_hidden, act=act) if shared_hidden else None
        self.shared_gate = nn.Linear(dim, 1, bias=False) if shared_gate else None
        self.last_routing: Routing | None = None

    @property
    def expert_slice(self) -> slice:
        """The global expert ids held here (all of them without expert parallelism)."""
        return slice(self.experts.offset, self.experts.offset + self.experts.num_experts)

    def forward_routed(self, x: Tensor) -> tuple[Tensor, Routing]:
        """``x: [*, T, C]`` -> (``[*, T, C]``, the ``Routing`` of the ``N`` flattened tokens)."""
        routing = self.router(x)
        flat = x.reshape(-1, self.dim)  # [N, C]
        if self.ep_group is not None:
            from .moe_parallel import expert_parallel_forward

            y = expert_parallel_forward(self.experts, flat, routing, self.ep_group)
        elif self.capacity_factor is not None:
            capacity = max(1, math.ceil(self.capacity_factor * flat.shape[0] * routing.k / self.num_experts))
            y, kept = self.experts.forward_capacity(flat, routing, capacity)
            routing = replace(routing, kept=kept, load=_load(routing.experts, kept, self.num_experts),
                              dropped=1.0 - kept.float().mean())
        else:
            y = self.experts(flat, routing)
        if self.shared is not None:
            s = self.shared(flat)
            if self.shared_gate is not None:
                s = torch.sigmoid(self.shared_gate(flat)) * s
            y = y + s
        return y.view(x.shape), routing

    def forward(self, x: Tensor) -> Tensor:
        """``x: [*, T, C] -> [*, T, C]``; the routing record is kept in ``last_routing``."""
        y, self.last_routing = self.forward_routed(x)
        return y


# --------------------------------------------------------------------------- conversion from transformers


def hf_moe_keymap(kind: str, *, src: str = "", dst: str = "") -> KeyMap:
    """The key map from a transformers MoE block's state to :class:`MoE`'s, for ``kind`` in
    ``"mixtral"`` (``MixtralSparseMoeBlock``), ``"qwen2_moe"`` (``Qwen2MoeSparseMoeBlock``) and
    ``"deepseek_v3"`` (``DeepseekV3MoE``). ``src``/``dst`` prefix the keys on either side and may hold
    placeholders, e.g. ``src="model.layers.{i}.mlp.", dst="layers.{i}.mlp."``. No tensor is transformed:
    the stacked expert layout is transformers' own. Build the matching layer with
    ``TopKRouter(normalize=True)`` (Mixtral), ``TopKRouter(normalize=config.norm_topk_prob)`` +
    ``shared_hidden=shared_expert_intermediate_size, shared_gate=True`` (Qwen2-MoE),
    ``DeepSeekRouter(groups=n_group, topk_groups=topk_group, scaling=routed_scaling_factor,
    normalize=norm_topk_prob)`` + ``shared_hidden=n_shared_experts * moe_intermediate_size`` (DeepSeek-V3)."""
    if kind not in ("mixtral", "qwen2_moe", "deepseek_v3"):
        raise ValueError(f"kind: expected 'mixtral', 'qwen2_moe' or 'deepseek_v3', got {kind!r}")
    pairs = [("gate.weight", "router.weight"), ("experts.gate_up_proj", "experts.gate_up"),
             ("experts.down_proj", "experts.down")]
    shared = {"qwen2_moe": "shared_expert", "deepseek_v3": "shared_experts"}.get(kind)
    if shared:
        pairs += [(f"{shared}.{p}_proj.weight", f"shared.{p}.weight") for p in ("gate", "up", "down")]
    if kind == "qwen2_moe":
        pairs.append(("shared_expert_gate.weight", "shared_gate.weight"))
    if kind == "deepseek_v3":
        pairs.append(("gate.e_score_correction_bias", "router.correction_bias"))
    return KeyMap(tuple(Rename(src + a, dst + b) for a, b in pairs))


def switch_from_hf(state: Mapping[str, Tensor], *, src: str = "", dst: str = "") -> dict[str, Tensor]:
    """A transformers ``SwitchTransformersSparseMLP`` state (keys under ``src``) -> :class:`MoE`'s
    (keys under ``dst``; build it with ``SwitchRouter(capacity=expert_capacity, bias=router_bias)``,
    ``gated=False, act=dense_act_fn``): ``router.classifier.{weight,bias} -> router.{weight,bias}``;
    per-expert ``experts.expert_{j}.wi.weight [I, C]`` / ``wo.weight [C, I]`` stacked over ``j`` into
    ``experts.up [E, I, C]`` / ``experts.down [E, C, I]``. Strict: any other key under ``src`` is an error."""
    keymap = KeyMap((
        Rename(f"{src}router.classifier.weight", f"{dst}router.weight"),
        Rename(f"{src}router.classifier.bias", f"{dst}router.bias"),
        Stack((f"{src}experts.expert_{{j}}.wi.weight",), f"{dst}experts.up"),
        Stack((f"{src}experts.expert_{{j}}.wo.weight",), f"{dst}experts.down"),
    ))
    return keymap.convert({k: v for k, v in state.items() if k.startswith(src)})
