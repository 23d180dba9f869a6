"""tatlas.nn.moe: parity with transformers' MoE blocks (Switch, Mixtral, Qwen2-MoE, DeepSeek-V3; every
parameter and buffer re-randomised, weights copied through the documented key maps), routing
invariants, dispatch paths that must agree, bad input, a router that sends everything to one
expert, and routings collected through a list (nothing kept on the modules)."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
import torch.nn.functional as F
from transformers import DeepseekV3Config, MixtralConfig, Qwen2MoeConfig, SwitchTransformersConfig
from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MoE
from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock
from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func as mixtral_balance
from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeSparseMoeBlock
from transformers.models.qwen2_moe.modeling_qwen2_moe import load_balancing_loss_func as qwen2_balance
from transformers.models.switch_transformers.modeling_switch_transformers import (
    SwitchTransformersSparseMLP,
    router_z_loss_func,
)
from transformers.models.switch_transformers.modeling_switch_transformers import (
    load_balancing_loss_func as switch_balance,
)

from parity import assert_close, max_abs_diff, perturb_
from tatlas.models.llm import PRESETS
from tatlas.models.llm.convert import hf_moe_keymap, switch_from_hf
from tatlas.models.llm.model import LLM
from tatlas.models.llm.task import lm_loss
from tatlas.nn import GatedMLP
from tatlas.nn.moe import (
    CapacityExperts,
    DeepSeekRouter,
    ExpertChoiceRouter,
    Experts,
    MoE,
    Router,
    Routing,
    SwitchRouter,
    TopKRouter,
    grouped_mm_supported,
    pooled_balance_loss,
    shard_range,
)

H, I, E, K = 32, 24, 8, 2
B, T = 2, 12


def _hf_switch(capacity: int):
    cfg = SwitchTransformersConfig(d_model=H, d_ff=I, num_experts=4, expert_capacity=capacity,
                                   experts_implementation="eager")
    ref = perturb_(SwitchTransformersSparseMLP(cfg), seed=1).eval()
    ours = MoE(router=SwitchRouter(dim=H, experts=4, capacity=capacity),
               experts=Experts(dim=H, hidden=I, experts=4, gated=False, act="relu"))
    ours.load_state_dict(switch_from_hf(ref.state_dict()))
    return ref, ours


def _hf_mixtral():
    cfg = MixtralConfig(hidden_size=H, intermediate_size=I, num_local_experts=E, num_experts_per_tok=K,
                        experts_implementation="eager")
    ref = perturb_(MixtralSparseMoeBlock(cfg), seed=2).eval()
    ours = MoE(router=TopKRouter(dim=H, experts=E, k=K), experts=Experts(dim=H, hidden=I, experts=E))
    ours.load_state_dict(hf_moe_keymap("mixtral").convert(ref.state_dict()))
    return ref, ours


def _hf_qwen2(normalize: bool):
    cfg = Qwen2MoeConfig(hidden_size=H, moe_intermediate_size=I, shared_expert_intermediate_size=40,
                         num_experts=E, num_experts_per_tok=K, norm_topk_prob=normalize,
                         experts_implementation="eager")
    ref = perturb_(Qwen2MoeSparseMoeBlock(cfg), seed=3).eval()
    ours = MoE(router=TopKRouter(dim=H, experts=E, k=K, normalize=normalize),
               experts=Experts(dim=H, hidden=I, experts=E), shared=GatedMLP(dim=H, hidden=40),
               shared_gate=torch.nn.Linear(H, 1, bias=False))
    ours.load_state_dict(hf_moe_keymap("qwen2_moe").convert(ref.state_dict()))
    return ref, ours


def _hf_deepseek():
    cfg = DeepseekV3Config(hidden_size=H, moe_intermediate_size=I, n_routed_experts=E, num_experts_per_tok=K,
                           n_group=2, topk_group=1, n_shared_experts=1, experts_implementation="eager")
    ref = perturb_(DeepseekV3MoE(cfg), seed=4).eval()
    with torch.no_grad():  # zero-initialised buffer: randomise it so that it changes the selection
        ref.gate.e_score_correction_bias.copy_(torch.randn(E, generator=torch.Generator().manual_seed(5)) * 0.3)
    router = DeepSeekRouter(dim=H, experts=E, k=K, groups=2, topk_groups=1, scaling=cfg.routed_scaling_factor)
    ours = MoE(router=router, experts=Experts(dim=H, hidden=I, experts=E), shared=GatedMLP(dim=H, hidden=I))
    ours.load_state_dict(hf_moe_keymap("deepseek_v3").convert(ref.state_dict()))
    return ref, ours


def _grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.grad for k, p in module.named_parameters()}


def _check_outputs_and_grads(ref, ours, x, convert, what, backend):
    ours.experts.backend = backend
    xr, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
    g = torch.randn_like(x)
    y_ref, (y, routing) = ref(xr), ours.forward_routed(xo)
    (y_ref * g).sum().backward()
    (y * g).sum().backward()
    diff = assert_close(y, y_ref, atol=1e-5, what=f"{what} output")
    assert_close(xo.grad, xr.grad, atol=1e-5, what=f"{what} input gradient")
    ref_grads = convert(_grads(ref))
    for name, grad in _grads(ours).items():
        assert max_abs_diff(grad, ref_grads[name]) <= 1e-5, f"{what}: gradient of {name}"
    return diff, routing


@pytest.mark.parametrize("backend", ["loop", "grouped_mm"])
def test_switch_parity_with_capacity_drops(backend, gen):
    ref, ours = _hf_switch(capacity=2)  # 12 tokens per sequence over 4 experts: some overflow
    x = torch.randn(B, T, H, generator=gen)
    diff, routing = _check_outputs_and_grads(ref, ours, x, lambda s: switch_from_hf(s), "switch", backend)
    with torch.no_grad():
        hf_dispatch, hf_prob, hf_logits = ref.router(x)
    assert_close(routing.logits, hf_logits.reshape(-1, 4), atol=1e-6, what="switch router logits")
    assert torch.equal(routing.kept.view(B, T), hf_dispatch.any(-1))
    assert torch.equal(routing.weights.view(B, T), hf_prob.view(B, T))
    assert 0 < routing.dropped.item() < 1 and routing.load.max().item() <= 2 * B
    dropped = ~routing.kept.view(B, T)
    assert ours(x)[dropped].abs().max().item() == 0.0  # dropped tokens output 0 (the residual carries them)
    torch.testing.assert_close(routing.aux_losses["z"], router_z_loss_func(hf_logits), rtol=1e-6, atol=1e-7)
    hf_bal = switch_balance(hf_logits.softmax(-1), hf_logits.argmax(-1))
    torch.testing.assert_close(routing.aux_losses["balance"], hf_bal, rtol=1e-6, atol=1e-7)
    print(f"switch ({backend}): max abs diff {diff:.2e}")


@pytest.mark.parametrize("backend", ["loop", "grouped_mm"])
def test_mixtral_parity(backend, gen):
    ref, ours = _hf_mixtral()
    x = torch.randn(B, T, H, generator=gen)
    convert = hf_moe_keymap("mixtral").convert
    diff, routing = _check_outputs_and_grads(ref, ours, x, convert, "mixtral", backend)
    with torch.no_grad():
        hf_logits, hf_w, hf_idx = ref.gate(x)
    assert_close(routing.logits, hf_logits, atol=1e-6, what="mixtral router logits")
    assert torch.equal(routing.experts, hf_idx)
    assert_close(routing.weights, hf_w, atol=1e-6, what="mixtral routing weights")
    torch.testing.assert_close(routing.aux_losses["balance"], mixtral_balance((hf_logits,), E, K))
    assert routing.load.sum().item() == B * T * K and routing.dropped.item() == 0
    print(f"mixtral ({backend}): max abs diff {diff:.2e}")


def test_pooled_balance_loss_over_layers_equals_the_model_level_aux_loss(gen):
    _, ours = _hf_mixtral()
    layers = [ours.forward_routed(torch.randn(B, T, H, generator=gen))[1] for _ in range(3)]
    want = mixtral_balance(tuple(r.logits for r in layers), E, K)
    torch.testing.assert_close(pooled_balance_loss(layers), want)
    assert not torch.allclose(torch.stack([r.aux_losses["balance"] for r in layers]).mean(), want)


@pytest.mark.parametrize("normalize", [False, True])
def test_qwen2_moe_parity_with_gated_shared_expert(normalize, gen):
    ref, ours = _hf_qwen2(normalize)
    x = torch.randn(B, T, H, generator=gen)
    diff, routing = _check_outputs_and_grads(ref, ours, x, hf_moe_keymap("qwen2_moe").convert, "qwen2-moe", "auto")
    with torch.no_grad():
        hf_logits, hf_w, hf_idx = ref.gate(x)
    assert_close(routing.logits, hf_logits, atol=1e-6, what="qwen2-moe router logits")
    assert torch.equal(routing.experts, hf_idx)
    assert_close(routing.weights, hf_w, atol=1e-6, what="qwen2-moe routing weights")
    torch.testing.assert_close(routing.aux_losses["balance"], qwen2_balance((hf_logits,), E, K))
    print(f"qwen2-moe (norm_topk_prob={normalize}): max abs diff {diff:.2e}")


def test_deepseek_v3_parity_with_bias_groups_and_shared_expert(gen):
    ref, ours = _hf_deepseek()
    x = torch.randn(B, T, H, generator=gen)
    diff, routing = _check_outputs_and_grads(ref, ours, x, hf_moe_keymap("deepseek_v3").convert, "deepseek-v3",
                                             "auto")
    with torch.no_grad():
        hf_logits, hf_w, hf_idx = ref.gate(x)
    assert_close(routing.logits, hf_logits, atol=1e-6, what="deepseek-v3 router logits")
    ours_sorted, order = routing.experts.sort(-1)
    hf_sorted, hf_order = hf_idx.sort(-1)
    assert torch.equal(ours_sorted, hf_sorted)
    assert_close(routing.weights.gather(1, order), hf_w.gather(1, hf_order), atol=1e-6, what="deepseek weights")
    # the bias changes the selection but not the weights: without it some choices differ
    bias = ours.router.correction_bias.clone()
    ours.router.correction_bias.zero_()
    assert not torch.equal(ours.router(x).experts.sort(-1).values, ours_sorted)
    ours.router.correction_bias.copy_(bias)
    # group-limited: all k experts of a token lie in one group of 4 (n_group=2, topk_group=1)
    assert (routing.experts // (E // 2)).unique(dim=1).shape[1] == 1
    # sequence-wise balance loss, DeepSeek-V3 eq. 17-20, computed here from its definition
    s = hf_logits.sigmoid().view(B, T, E)
    chosen = F.one_hot(hf_idx.view(B, T, K), E).sum(2).float()  # [B, T, E]
    f = E / (K * T) * chosen.sum(1)
    p = (s / s.sum(-1, keepdim=True)).mean(1)
    torch.testing.assert_close(routing.aux_losses["balance"], (f * p).sum(-1).mean())
    print(f"deepseek-v3: max abs diff {diff:.2e}")


def test_deepseek_bias_update_rule():
    router = DeepSeekRouter(dim=H, experts=4, k=1)
    router.update_bias(torch.tensor([10, 2, 4, 4]), rate=0.01)  # mean 5
    torch.testing.assert_close(router.correction_bias, torch.tensor([-0.01, 0.01, 0.01, 0.01]))
    # repeated updates pull a router that prefers one expert towards balance
    torch.manual_seed(0)
    router = DeepSeekRouter(dim=H, experts=4, k=1)
    with torch.no_grad():
        router.weight[0] += 0.5
    x = torch.randn(512, H)
    before = router(x).load.max().item()
    for _ in range(200):
        router.update_bias(router(x).load, rate=0.01)
    after = router(x).load
    assert after.max().item() < before and after.min().item() > 0


def test_expert_choice_each_expert_takes_its_capacity(gen):
    router = ExpertChoiceRouter(dim=H, experts=4, capacity_factor=1.0)
    moe = MoE(router=router, experts=Experts(dim=H, hidden=I, experts=4))
    x = torch.randn(B, T, H, generator=gen)
    y, routing = moe.forward_routed(x)
    c = router.capacity_for(T)  # 3
    assert routing.k == 4 and routing.load.tolist() == [B * c] * 4
    assert routing.kept.view(B, T, 4).sum(1).eq(c).all()  # per sequence, each expert picked c tokens
    probs = routing.logits.softmax(-1).view(B, T, 4)
    for b in range(B):
        for e in range(4):  # each expert picked its top-c tokens by score
            top = probs[b, :, e].topk(c).indices.sort().values
            assert torch.equal(routing.kept.view(B, T, 4)[b, :, e].nonzero().squeeze(1), top)
    # reference: sum over the picking experts of score * expert(x)
    flat = x.reshape(-1, H)
    ref = torch.zeros_like(flat)
    ex = moe.experts
    for n in range(flat.shape[0]):
        for e in routing.kept[n].nonzero().squeeze(1).tolist():
            gate, up = F.linear(flat[n], ex.gate_up[e]).chunk(2)
            ref[n] += routing.weights[n, e] * F.linear(F.silu(gate) * up, ex.down[e])
    assert_close(y.reshape(-1, H), ref, atol=1e-5, what="expert choice output")
    unpicked = ~routing.kept.any(-1)
    assert routing.dropped.item() == pytest.approx(unpicked.float().mean().item())
    assert y.reshape(-1, H)[unpicked].abs().sum().item() == 0


@pytest.mark.parametrize("hidden", [I, 2 * H])  # the routing weight scales [S, I] or [S, C], the narrower
def test_grouped_mm_and_loop_and_ample_capacity_agree(hidden, gen):
    torch.manual_seed(0)
    moe = MoE(router=TopKRouter(dim=H, experts=E, k=K), experts=Experts(dim=H, hidden=hidden, experts=E))
    capacity = MoE(router=moe.router,
                   experts=CapacityExperts(dim=H, hidden=hidden, experts=E, capacity_factor=float(E)))
    capacity.experts.load_state_dict(moe.experts.state_dict())  # same router, same expert weights
    x = torch.randn(B, T, H, generator=gen)
    assert grouped_mm_supported(x.reshape(-1, H), moe.experts.gate_up, moe.experts.down)
    assert not grouped_mm_supported(torch.randn(4, 30), torch.randn(2, 8, 30))  # 120-byte rows
    results = {}
    for name, layer, backend in [("loop", moe, "loop"), ("grouped_mm", moe, "grouped_mm"),
                                 ("capacity", capacity, "auto")]:
        layer.experts.backend = backend
        layer.zero_grad()
        xi = x.clone().requires_grad_()
        y, routing = layer.forward_routed(xi)
        y.pow(2).sum().backward()
        results[name] = (y, xi.grad, *[p.grad.clone() for p in layer.parameters()])
        assert routing.dropped.item() == 0 and routing.load.sum().item() == B * T * K
    for name in ("grouped_mm", "capacity"):
        for a, b in zip(results[name], results["loop"], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("act,hidden", [("silu", 3), ("gelu", 3), ("silu", 6)])
def test_dispatch_and_swiglu_gradients_pass_gradcheck(act, hidden):
    """float64 (loop backend): the custom backward passes (dispatch/combine adjoints, fused SwiGLU)."""
    torch.manual_seed(0)
    experts = Experts(dim=4, hidden=hidden, experts=3, act=act, backend="loop").double()
    n, k = 5, 2
    ids = torch.tensor([[0, 2], [1, 0], [2, 1], [0, 1], [2, 0]])
    x = torch.randn(n, 4, dtype=torch.float64, requires_grad=True)
    w = torch.rand(n, k, dtype=torch.float64, requires_grad=True)
    params = {name: p.detach().clone().requires_grad_() for name, p in experts.named_parameters()}

    def f(x, w, gate_up, down):
        routing = Routing(experts=ids, weights=w, logits=torch.zeros(n, 3), load=torch.zeros(3),
                          dropped=torch.zeros(()))
        return torch.func.functional_call(experts, {"gate_up": gate_up, "down": down}, (x, routing))[0]

    assert torch.autograd.gradcheck(f, (x, w, params["gate_up"], params["down"]))


def test_capacity_bounded_dispatch_drops_overflow_and_counts_it(gen):
    torch.manual_seed(0)
    moe = MoE(router=TopKRouter(dim=H, experts=E, k=K),
              experts=CapacityExperts(dim=H, hidden=I, experts=E, capacity_factor=0.5))
    x = torch.randn(B, T, H, generator=gen)
    y, routing = moe.forward_routed(x)
    capacity = 3  # ceil(0.5 * 24 tokens * 2 / 8)
    assert routing.load.max().item() <= capacity and routing.load.sum().item() == routing.kept.sum().item()
    assert routing.dropped.item() == pytest.approx(1 - routing.kept.float().mean().item()) and routing.dropped > 0
    # first choices are served before second choices
    first = routing.kept[:, 0].float().mean()
    assert first >= routing.kept[:, 1].float().mean()
    # the output is the dropless output with the dropped assignments' weights zeroed
    masked = Routing(experts=routing.experts, weights=routing.weights * routing.kept, logits=routing.logits,
                     load=routing.load, dropped=routing.dropped)
    dropless = Experts(dim=H, hidden=I, experts=E)
    dropless.load_state_dict(moe.experts.state_dict())
    assert_close(y.reshape(-1, H), dropless(x.reshape(-1, H), masked)[0], atol=1e-6, what="capacity output")


class _AllToOne(Router):
    """A rigged router: every token to expert 0 (and expert 1 as its second choice), weight 1."""

    def forward(self, x):
        n = x.reshape(-1, self.dim).shape[0]
        experts = torch.arange(self.k).expand(n, self.k)
        weights = torch.ones(n, self.k)
        return Routing(experts=experts, weights=weights, logits=torch.zeros(n, self.experts),
                       load=torch.bincount(experts.reshape(-1), minlength=self.experts), dropped=torch.zeros(()))


@pytest.mark.parametrize("backend", ["loop", "grouped_mm"])
def test_router_sending_everything_to_one_expert(backend):
    torch.manual_seed(0)
    experts = 64
    moe = MoE(router=_AllToOne(dim=H, experts=experts, k=1),
              experts=Experts(dim=H, hidden=I, experts=experts, backend=backend))
    x = torch.randn(4, 8192, H, requires_grad=True)  # 32768 tokens on one expert, 63 idle
    y, routing = moe.forward_routed(x)
    y.sum().backward()
    gate, up = F.linear(x.detach(), moe.experts.gate_up[0]).chunk(2, dim=-1)
    dense = F.linear(F.silu(gate) * up, moe.experts.down[0])
    assert_close(y, dense, atol=1e-5, what="everything on expert 0")
    assert routing.load[0].item() == x.shape[0] * x.shape[1] and routing.load[1:].sum().item() == 0
    assert torch.isfinite(x.grad).all() and moe.experts.gate_up.grad[1:].abs().max().item() == 0
    # capacity-bounded: the buffer stays [E, capacity, C]; all but `capacity` tokens dropped
    capped = MoE(router=moe.router, experts=CapacityExperts(dim=H, hidden=I, experts=experts, capacity_factor=1.0))
    capped.experts.load_state_dict(moe.experts.state_dict())
    y, routing = capped.forward_routed(x[:1])
    assert routing.load.tolist() == [128] + [0] * 63  # capacity ceil(8192 / 64)
    assert routing.dropped.item() == pytest.approx(1 - 128 / 8192)


def test_bad_configurations_fail_at_construction():
    with pytest.raises(ValueError, match="top_k"):
        TopKRouter(dim=H, experts=4, k=5)
    with pytest.raises(ValueError, match="top_k"):
        DeepSeekRouter(dim=H, experts=8, k=9)
    with pytest.raises(ValueError, match="capacity_factor"):
        SwitchRouter(dim=H, experts=4, capacity_factor=0)
    with pytest.raises(ValueError, match="capacity_factor"):
        ExpertChoiceRouter(dim=H, experts=4, capacity_factor=-1.0)
    with pytest.raises(ValueError, match="capacity_factor"):
        CapacityExperts(dim=H, hidden=I, experts=4, capacity_factor=0.0)
    with pytest.raises(ValueError, match="capacity"):
        SwitchRouter(dim=H, experts=4, capacity=0)
    with pytest.raises(ValueError, match="groups"):
        DeepSeekRouter(dim=H, experts=8, k=2, groups=3)
    with pytest.raises(ValueError, match="router"):
        MoE(router=TopKRouter(dim=H, experts=4, k=2), experts=Experts(dim=H, hidden=I, experts=8))
    with pytest.raises(ValueError, match="backend"):
        Experts(dim=H, hidden=I, experts=4, backend="triton")
    with pytest.raises(ValueError, match="multiple of the expert-parallel world size 4"):
        shard_range(6, 4, 0)
    assert shard_range(8, 4, 3) == (6, 2)


def test_keymap_prefixes_with_layer_placeholders():
    ref, ours = _hf_qwen2(normalize=False)
    state = {f"model.layers.{i}.mlp.{k}": v for i in (0, 3) for k, v in ref.state_dict().items()}
    out = hf_moe_keymap("qwen2_moe", src="model.layers.{i}.mlp.", dst="layers.{i}.moe.").convert(state)
    assert set(out) == {f"layers.{i}.moe.{k}" for i in (0, 3) for k in ours.state_dict()}


def test_builds_on_meta_and_switch_mapping_is_strict():
    with torch.device("meta"):
        moe = MoE(router=DeepSeekRouter(dim=H, experts=E, k=K, groups=2), experts=Experts(dim=H, hidden=I, experts=E),
                  shared=GatedMLP(dim=H, hidden=I))
    assert moe.experts.gate_up.is_meta and moe.experts.gate_up.shape == (E, 2 * I, H)
    ref, _ = _hf_switch(capacity=4)
    state = {f"mlp.{k}": v for k, v in ref.state_dict().items()} | {"mlp.extra.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match="mlp.extra.weight"):
        switch_from_hf(state, src="mlp.")


def test_moe_checks_that_its_parts_fit():
    experts = Experts(dim=H, hidden=I, experts=4)
    with pytest.raises(ValueError, match=f"router: expected dim {H}"):
        MoE(router=TopKRouter(dim=H + 1, experts=4, k=2), experts=experts)
    with pytest.raises(ValueError, match="shared_gate: expected a shared expert"):
        MoE(router=TopKRouter(dim=H, experts=4, k=2), experts=experts, shared_gate=torch.nn.Linear(H, 1, bias=False))
    with pytest.raises(ValueError, match=rf"shared_gate: expected Linear\({H}, 1\)"):
        MoE(router=TopKRouter(dim=H, experts=4, k=2), experts=experts, shared=GatedMLP(dim=H, hidden=8),
            shared_gate=torch.nn.Linear(H, 2, bias=False))
    with pytest.raises(ValueError, match=f"shared: expected {H} -> {H} features"):
        MoE(router=TopKRouter(dim=H, experts=4, k=2), experts=experts, shared=GatedMLP(dim=H + 1, hidden=8))
    with pytest.raises(ValueError, match="expert choice"):
        MoE(router=ExpertChoiceRouter(dim=H, experts=4),
            experts=CapacityExperts(dim=H, hidden=I, experts=4, capacity_factor=1.0))


def _kept_on(module: torch.nn.Module) -> list[str]:
    """Plain attributes of ``module`` and its children (not parameters, buffers or submodules) that
    hold a routing record or a tensor with an autograd graph."""
    found = []
    for name, m in module.named_modules():
        for attr, value in vars(m).items():
            if attr in ("_parameters", "_buffers", "_modules"):
                continue
            values = value if isinstance(value, (list, tuple)) else (value,)
            if any(isinstance(v, Routing) or (isinstance(v, torch.Tensor) and v.grad_fn is not None) for v in values):
                found.append(f"{name or '<root>'}.{attr}")
    return found


@pytest.mark.parametrize("preset", ["tiny-moe", "tiny-deepseek"])
def test_llm_routings_come_through_the_list_and_nothing_stays_on_the_modules(preset):
    """Every MoE layer of the model appends its Routing to the list given to ``LLM.forward`` (in layer
    order; tiny-deepseek's first layer is dense and appends nothing); after the forward no module
    holds a routing or a graph: once the caller drops its references the graph is freed."""
    torch.manual_seed(0)
    config = PRESETS[preset]
    model = LLM(config).train()
    moe_layers = [i for i, layer in enumerate(model.layers) if isinstance(layer.mlp, MoE)]
    assert moe_layers == [i for i in range(config.layers) if config.moe.is_moe(i)] and moe_layers
    if preset == "tiny-deepseek":
        assert moe_layers[0] > 0  # a dense first layer
    tokens = torch.randint(0, config.vocab_size, (2, 9))
    decided = {}  # what each layer's router returned (dropless experts serve it unchanged)
    hooks = [model.layers[i].mlp.router.register_forward_hook(lambda m, args, out, i=i: decided.update({i: out}))
             for i in moe_layers]
    routings: list[Routing] = []
    logits = model(tokens, routings=routings)
    for hook in hooks:
        hook.remove()
    assert len(routings) == len(moe_layers)
    for routing, i in zip(routings, moe_layers, strict=True):
        assert routing is decided[i]  # layer order
        assert routing.logits.shape == (2 * 9, config.moe.experts)
        assert routing.load.sum().item() == 2 * 9 * config.moe.k
        assert routing.aux_losses["balance"].requires_grad
    decided.clear()
    del routing
    assert _kept_on(model) == []
    torch.testing.assert_close(model(tokens), logits)  # no list: the same output, nothing collected
    freed = weakref.ref(routings[0].aux_losses["balance"])
    del routings, logits
    gc.collect()
    assert freed() is None, "a module kept the routing's graph alive"

    # the training loss pools the balance loss over the routings of this forward, and hands them out too
    out_routings: list[Routing] = []
    out = lm_loss(model, {"tokens": tokens}, routings=out_routings)
    assert len(out_routings) == len(moe_layers) and _kept_on(model) == []
    if config.moe.aux_loss_weight:
        torch.testing.assert_close(out["balance"], pooled_balance_loss(out_routings))
        out["loss"].backward()
        assert all(model.layers[i].mlp.router.weight.grad is not None for i in moe_layers)
