"""Positions, norms, MLPs, patch embeddings, chunking and initialisers against torch and
transformers' own implementations."""

import math

import pytest
import torch
from transformers import LlamaConfig
from transformers.models.deepseek_v3 import modeling_deepseek_v3 as hf_ds
from transformers.models.gemma3 import modeling_gemma3 as hf_gemma
from transformers.models.gptj import modeling_gptj as hf_gptj
from transformers.models.llama import modeling_llama as hf_llama

from tatlas.nn import (
    MLP, GatedMLP, LayerNorm, LearnedPositions, Llama3Scaling, PatchEmbed2d, PatchEmbed3d, RMSNorm,
    RotaryEmbedding, activation, apply_rotary, cache_chunk, chunked, initialise, quick_gelu, sinusoidal_positions,
)


def _llama_cfg(**rope):
    return LlamaConfig(hidden_size=64, num_attention_heads=4, head_dim=16, max_position_embeddings=4096,
                       rope_parameters={"rope_type": "default", "rope_theta": 10000.0, **rope})


@pytest.mark.parametrize("scaled", [False, True])
def test_rotary_half_split_matches_llama(scaled, gen):
    rope = dict(rope_theta=500000.0)
    scaling = None
    if scaled:
        rope.update(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                    original_max_position_embeddings=64)
        scaling = Llama3Scaling(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_positions=64)
    hf_rot = hf_llama.LlamaRotaryEmbedding(_llama_cfg(**rope))
    ours = RotaryEmbedding(dim=16, theta=500000.0, scaling=scaling)
    torch.testing.assert_close(ours.inv_freq, hf_rot.inv_freq, atol=0, rtol=1e-6)
    q, k = torch.randn(2, 4, 50, 16, generator=gen), torch.randn(2, 4, 50, 16, generator=gen)
    pos = torch.arange(100, 150)[None].expand(2, -1)
    cos, sin = hf_rot(q, pos)
    hq, hk = hf_llama.apply_rotary_pos_emb(q, k, cos, sin)
    r = ours(pos)
    torch.testing.assert_close(apply_rotary(q, r), hq, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(apply_rotary(k, r), hk, atol=1e-5, rtol=1e-5)
    if scaled:
        assert not torch.allclose(ours.inv_freq, RotaryEmbedding(dim=16, theta=500000.0).inv_freq)


def test_rotary_interleaved_matches_deepseek_v3_and_gptj(gen):
    q, k = torch.randn(2, 3, 9, 8, generator=gen), torch.randn(2, 3, 9, 8, generator=gen)
    pos = torch.arange(9)[None].expand(2, -1)
    ours = RotaryEmbedding(dim=8, theta=10000.0, interleaved=True)
    r = ours(pos)
    oq = apply_rotary(q, r)
    # DeepSeek-V3 returns the rotated pairs de-interleaved: [evens | odds]
    half = RotaryEmbedding(dim=8, theta=10000.0)(pos)
    hq, _ = hf_ds.apply_rotary_pos_emb_interleave(q, k, half.cos, half.sin)
    torch.testing.assert_close(torch.cat([oq[..., 0::2], oq[..., 1::2]], -1), hq, atol=1e-5, rtol=1e-5)
    # GPT-J rotates every two channels in place
    sincos = hf_gptj.create_sinusoidal_positions(9, 8)[pos]
    sin, cos = torch.split(sincos, 4, dim=-1)
    gq = hf_gptj.apply_rotary_pos_emb(q.transpose(1, 2), sin, cos).transpose(1, 2)
    torch.testing.assert_close(oq, gq, atol=1e-5, rtol=1e-5)


def test_partial_rotary_leaves_tail(gen):
    x = torch.randn(1, 2, 5, 16, generator=gen)
    r = RotaryEmbedding(dim=8)(torch.arange(5))
    y = apply_rotary(x, r)
    torch.testing.assert_close(y[..., 8:], x[..., 8:])
    assert not torch.allclose(y[..., :8], x[..., :8])
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5, rtol=1e-5)  # a rotation


def test_sinusoids_whisper_layout():
    pe = sinusoidal_positions(10, 8)
    assert pe.shape == (10, 8)
    torch.testing.assert_close(pe[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    inc = math.log(10000) / 3
    torch.testing.assert_close(pe[3, 1], torch.tensor(math.sin(3 * math.exp(-inc))))
    torch.testing.assert_close(pe[3, 5], torch.tensor(math.cos(3 * math.exp(-inc))))


def test_learned_positions_bounds():
    lp = LearnedPositions(4, 8)
    assert lp(torch.arange(4)).shape == (4, 8)
    with pytest.raises(ValueError, match="beyond the 4 learned positions"):
        lp(torch.arange(5))


def test_layernorm_matches_torch_in_bf16(gen):
    x = torch.randn(3, 5, 32, generator=gen)
    ours, ref = LayerNorm(32, eps=1e-5), torch.nn.LayerNorm(32, eps=1e-5)
    with torch.no_grad():
        for p in (ours.weight, ours.bias):
            p.normal_(generator=gen)
        ref.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)
    y = ours(x.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ref(x.bfloat16().float()), atol=2e-2, rtol=2e-2)
    assert LayerNorm(8, bias=False).bias is None


def test_rmsnorm_matches_llama_and_gemma(gen):
    x = torch.randn(2, 7, 32, generator=gen)
    ours, ref = RMSNorm(32, eps=1e-6), hf_llama.LlamaRMSNorm(32, eps=1e-6)
    with torch.no_grad():
        ref.weight.normal_(generator=gen)
        ours.weight.copy_(ref.weight)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-6, rtol=1e-6)
    g_ours, g_ref = RMSNorm(32, eps=1e-6, offset=1.0), hf_gemma.Gemma3RMSNorm(32, eps=1e-6)
    torch.testing.assert_close(g_ours.weight, g_ref.weight)  # both start at zero: scale (1 + 0)
    with torch.no_grad():
        g_ref.weight.normal_(generator=gen)
        g_ours.weight.copy_(g_ref.weight)
    torch.testing.assert_close(g_ours(x), g_ref(x), atol=1e-6, rtol=1e-6)


def test_gated_mlp_matches_llama(gen):
    cfg = LlamaConfig(hidden_size=32, intermediate_size=48, hidden_act="silu")
    ref = hf_llama.LlamaMLP(cfg)
    ours = GatedMLP(dim=32, hidden=48, act="silu")
    with torch.no_grad():
        for name in ("gate", "up", "down"):
            getattr(ref, f"{name}_proj").weight.normal_(std=0.2, generator=gen)
            getattr(ours, name).weight.copy_(getattr(ref, f"{name}_proj").weight)
    x = torch.randn(4, 32, generator=gen)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-6, rtol=1e-5)


def test_mlp_and_activations(gen):
    from transformers.activations import ACT2FN

    x = torch.randn(100, generator=gen)
    torch.testing.assert_close(quick_gelu(x), ACT2FN["quick_gelu"](x))
    torch.testing.assert_close(activation("gelu_tanh")(x), ACT2FN["gelu_pytorch_tanh"](x))
    with pytest.raises(ValueError, match="unknown activation 'swish2'"):
        activation("swish2")
    m = MLP(dim=8, hidden=16, act="quick_gelu")
    x = torch.randn(2, 8, generator=gen)
    torch.testing.assert_close(m(x), m.fc2(quick_gelu(m.fc1(x))))


def test_patch_embed_2d_matches_unfold(gen):
    pe = PatchEmbed2d(in_channels=3, dim=10, patch=4)
    img = torch.randn(2, 3, 8, 12, generator=gen)
    out = pe(img)
    patches = img.unfold(2, 4, 4).unfold(3, 4, 4)  # [B, 3, 2, 3, 4, 4]
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(2, 6, 48)
    ref = patches @ pe.proj.weight.reshape(10, 48).T + pe.proj.bias
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="multiple of the patch"):
        pe(torch.randn(1, 3, 9, 8))
    with pytest.raises(ValueError, match=r"expected \[B, 3, H, W\]"):
        pe(torch.randn(1, 1, 8, 8))


def test_patch_embed_3d_tubelets(gen):
    pe = PatchEmbed3d(in_channels=3, dim=6, patch=4, tubelet=2)
    assert pe(torch.randn(1, 3, 4, 8, 8, generator=gen)).shape == (1, 2 * 2 * 2, 6)
    with pytest.raises(ValueError, match="tubelet"):
        pe(torch.randn(1, 3, 3, 8, 8))


@pytest.mark.parametrize("size", [1, 3, 10, 100])
def test_chunked_equals_unchunked(size, gen):
    w = torch.randn(6, 6, generator=gen)
    x, y = torch.randn(10, 4, 6, generator=gen), torch.randn(10, 4, 6, generator=gen)

    def fn(a, b, *, scale):
        return (a @ w).softmax(-1) * b * scale

    torch.testing.assert_close(chunked(fn, size, dim=0)(x, y, scale=2.0), fn(x, y, scale=2.0))
    torch.testing.assert_close(chunked(fn, size, dim=1)(x, y, scale=2.0), fn(x, y, scale=2.0))
    assert chunked(fn, None) is fn
    with pytest.raises(ValueError, match="disagree"):
        chunked(fn, 2)(x, y[:5], scale=1.0)
    assert chunked(fn, size, dim=0)(x[:0], y[:0], scale=1.0).shape == (0, 4, 6)  # an empty MSA stack


def test_cache_chunk_sizes_a_slice_to_the_cache(monkeypatch):
    monkeypatch.setattr("tatlas.nn.chunk.CACHE_BYTES", 1000)
    assert cache_chunk(64, 200) == 5
    assert cache_chunk(64, 400) == 2
    assert cache_chunk(64, 10**9) == 1  # at least one index
    assert cache_chunk(64, 10) is None  # the whole fits: no chunking
    assert cache_chunk(0, 200) is None  # an empty dimension


@pytest.mark.parametrize("bias", [True, False])
def test_relu_mlp_in_cache_sized_slices_with_gradients_matches_autograd(bias, gen, monkeypatch):
    """``relu_mlp`` with gradients (the slices' autograd function): the forward result of the plain
    composition and its gradients, for the input and every parameter, whether slices are many, one, or
    only some of the tensors need gradients; ``MLP(act="relu")`` trains through it."""
    from tatlas.nn import relu_mlp

    fc1, fc2, norm = torch.nn.Linear(12, 40, bias=bias), torch.nn.Linear(40, 9, bias=bias), LayerNorm(12)
    x, g = torch.randn(3, 17, 12, generator=gen), torch.randn(3, 17, 9, generator=gen)
    params = [*fc1.parameters(), *fc2.parameters(), *norm.parameters()]
    for rows in (7, 51, 10**6):  # 51 rows in all: several slices, a short last one, one slice
        monkeypatch.setattr("tatlas.nn.chunk.CACHE_BYTES", 40 * 4 * rows)
        for frozen in ([], [fc1.weight, fc2.bias] if bias else [fc1.weight]):
            for p in params:
                p.requires_grad_(all(p is not q for q in frozen))
            xi = x.clone().requires_grad_(not frozen)  # with weights frozen, no gradient for x either
            wrt = [t for t in (xi, *params) if t.requires_grad]
            want = fc2(torch.relu(fc1(norm(xi))))
            got = relu_mlp(xi, fc1, fc2, norm=norm)
            assert type(got.grad_fn).__name__ == "_ReluMLPBackward"
            torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
            for a, b in zip(torch.autograd.grad((got * g).sum(), wrt), torch.autograd.grad((want * g).sum(), wrt)):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    mlp = MLP(dim=12, hidden=40, act="relu")
    assert type(mlp(x.requires_grad_()).grad_fn).__name__ == "_ReluMLPBackward"


def test_initialisers():
    lin = torch.nn.Linear(64, 32)
    initialise(lin, "gating")
    assert lin.weight.abs().sum() == 0 and torch.all(lin.bias == 1)
    initialise(lin, "final")
    assert lin.weight.abs().sum() == 0 and lin.bias.abs().sum() == 0
    torch.manual_seed(0)
    big = torch.nn.Linear(1000, 1000)
    initialise(big, "lecun")
    assert abs(big.weight.std().item() - (1 / 1000) ** 0.5) < 2e-3
    initialise(big, "relu")
    assert abs(big.weight.std().item() - (2 / 1000) ** 0.5) < 2e-3
    with pytest.raises(ValueError, match="unknown initialiser"):
        initialise(lin, "zeros!")


def _spy_onednn(monkeypatch) -> list[str]:
    """Record the post-op attribute of every oneDNN linear call (oneDNN pinned: no race with BLAS)."""
    from tatlas.nn import fastpath

    monkeypatch.setattr(fastpath, "GEMM", "onednn")
    calls = []
    real = torch.ops.mkldnn._linear_pointwise

    def spy(*args):
        calls.append(args[3])
        return real(*args)

    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", spy)
    return calls


@pytest.mark.parametrize("act", ["gelu", "gelu_tanh", "relu"])
def test_mlp_fuses_its_activation_into_the_onednn_matmul(act, gen, monkeypatch):
    """After ``optimize_`` the MLP's first projection and a GELU run as one oneDNN call (the
    activation as the matmul's post-op), equal to the two steps; before it nothing is routed."""
    from tatlas.nn import MLP
    from tatlas.nn.fastpath import FastMLP, optimize_

    mlp = MLP(dim=128, hidden=512, act=act).eval()
    x = torch.randn(4, 64, 128, generator=gen)  # 256 x 128 x 512 multiply-adds: oneDNN pays
    calls = _spy_onednn(monkeypatch)
    with torch.no_grad():
        ref = mlp.fc2(mlp.act(mlp.fc1(x)))
        mlp(x)
        assert calls == []  # not optimised: F.linear
        optimize_(mlp)
        assert type(mlp) is FastMLP
        out = mlp(x)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)
    if act.startswith("gelu"):  # fc1 with its GELU post-op, fc2 plain: no unfused fc1
        assert "gelu" in calls and calls.count("none") == 1, calls
    else:
        assert calls == ["none", "none"]


def test_fast_linear_only_without_gradients_and_for_large_products(gen, monkeypatch):
    """``optimize_`` swaps classes in place (same parameters, state-dict keys, hooks): oneDNN serves
    calls without gradients whose product is large enough; with gradients it is F.linear and they
    flow; small products, other dtypes, subclasses and layers too small to pay stay on F.linear."""
    import torch.nn.functional as F

    from tatlas.nn import Int8Linear
    from tatlas.nn.fastpath import MIN_MACS, FastLinear, optimize_

    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.GELU(), torch.nn.Linear(512, 8))
    model.append(Int8Linear.from_linear(torch.nn.Linear(8, 8)))
    weights, keys = [p for p in model.parameters()], list(model.state_dict())
    hooked = []
    model[0].register_forward_hook(lambda *a: hooked.append(True))
    optimize_(model)
    # the 512 -> 8 layer stays nn.Linear: oneDNN would not pay for it below 4 rows a call
    assert [type(m) for m in model] == [FastLinear, torch.nn.GELU, torch.nn.Linear, Int8Linear]
    assert list(model.parameters()) == weights and list(model.state_dict()) == keys
    x = torch.randn(16, 256, generator=gen)  # 16 x 256 x 512 >= MIN_MACS; 16 x 512 x 8 is not
    assert 16 * 256 * 512 >= MIN_MACS > 16 * 512 * 8
    calls = _spy_onednn(monkeypatch)
    with torch.no_grad():
        fast = model[0](x)
        model[2](torch.randn(16, 512))
        model[0](x.double().float().bfloat16().float())  # float32 again: routed
        model.double()
        model[0](x.double())  # float64: F.linear
        model.float()
    assert calls == ["none", "none"] and hooked == [True] * 3
    torch.testing.assert_close(fast, F.linear(x, model[0].weight, model[0].bias))
    model[0](x).sum().backward()  # gradients wanted: F.linear, and they flow
    assert model[0].weight.grad is not None and calls == ["none", "none"]

def test_bfloat16_without_onednn_bfloat16_takes_the_kernel_or_f_linear(gen, monkeypatch):
    """On a CPU where oneDNN has no bfloat16 (AVX2 only: it refuses to build the primitive), a
    bfloat16 model optimised for inference still runs: one row by the matvec kernel (where it is
    built), several rows by F.linear, and oneDNN is never called."""
    import torch.nn.functional as F

    from tatlas.nn import GatedMLP, fastpath, matvec
    from tatlas.nn.fastpath import optimize_

    monkeypatch.setattr(fastpath, "onednn_bf16", lambda: False)
    calls = _spy_onednn(monkeypatch)
    lin = optimize_(torch.nn.Linear(2048, 512).bfloat16().eval())
    mlp = optimize_(GatedMLP(dim=256, hidden=512).bfloat16().eval())
    with torch.no_grad():
        for rows in (1, 5):
            x = torch.randn(rows, 2048, generator=gen).bfloat16()
            torch.testing.assert_close(lin(x).float(), F.linear(x.float(), lin.weight.float(), lin.bias.float()),
                                       atol=0.05, rtol=0.02)
            h = torch.randn(rows, 256, generator=gen).bfloat16()
            ref = mlp.down(F.silu(F.linear(h, mlp.gate.weight)) * F.linear(h, mlp.up.weight))
            torch.testing.assert_close(mlp(h).float(), ref.float(), atol=0.05, rtol=0.05)
    assert calls == []
    if matvec.kernel() is not None:  # the one-row products took the kernel
        monkeypatch.setattr(matvec, "matvec", lambda *a: (_ for _ in ()).throw(AssertionError("kernel")))
        with pytest.raises(AssertionError, match="kernel"), torch.no_grad():
            lin(torch.randn(1, 2048).bfloat16())


def test_bfloat16_weights_are_packed_once_and_repacked_when_they_change(gen, monkeypatch):
    """A bfloat16 FastLinear / FastMLP / FastTiedLinear reads oneDNN's packed copy of its weight
    (made on the first call, kept across calls, bit-identical to the plain product); writing the
    weight in place or giving it another tensor makes a new copy; float32 is never packed."""
    import torch.nn.functional as F

    from tatlas.nn import MLP, TiedLinear
    from tatlas.nn import fastpath
    from tatlas.nn.fastpath import optimize_

    if not fastpath.onednn_bf16():
        pytest.skip("oneDNN has no bfloat16 on this CPU (AVX2 only)")
    monkeypatch.setattr(fastpath, "GEMM", "onednn")

    packs = []
    real = torch.ops.mkldnn._reorder_linear_weight

    def spy(w, batch):
        packs.append(tuple(w.shape))
        return real(w, batch)

    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", spy)
    lin = torch.nn.Linear(256, 512).bfloat16().eval()
    mlp = MLP(dim=256, hidden=512, act="gelu").bfloat16().eval()
    tied, table = TiedLinear(), torch.randn(1000, 256, generator=gen).bfloat16()
    optimize_(lin), optimize_(mlp), optimize_(tied)
    x = torch.randn(3, 256, generator=gen).bfloat16()
    with torch.no_grad():
        for _ in range(3):
            torch.testing.assert_close(lin(x), F.linear(x, lin.weight, lin.bias), atol=0, rtol=0)
            torch.testing.assert_close(tied(x, table), F.linear(x, table), atol=0, rtol=0)
            mlp(x)
        assert packs == [(512, 256), (1000, 256), (512, 256), (256, 512)]  # once each
        lin.weight.mul_(2)  # in place: a new version
        torch.testing.assert_close(lin(x), F.linear(x, lin.weight, lin.bias), atol=0, rtol=0)
        lin.weight = torch.nn.Parameter(torch.randn(512, 256, generator=gen).bfloat16())  # another tensor
        torch.testing.assert_close(lin(x), F.linear(x, lin.weight, lin.bias), atol=0, rtol=0)
        assert len(packs) == 6
        lin.float()(x.float())  # float32: plain layout
        assert len(packs) == 6
    assert lin in fastpath._PACKED


def test_gemm_race_times_both_and_keeps_the_faster_per_shape(gen, monkeypatch):
    """With ``TATLAS_GEMM=auto`` a product's first calls alternate between oneDNN and BLAS, timed;
    after RACE_TRIALS timed calls of each (the first of each not counted) the faster serves every
    later call of that shape for good, and every call, racing or not, returns the right product.
    ``onednn`` / ``blas`` skip the race."""
    import time

    import torch.nn.functional as F

    from tatlas.nn import fastpath
    from tatlas.nn.fastpath import optimize_

    monkeypatch.setattr(fastpath, "GEMM", "auto")
    monkeypatch.setattr(fastpath, "RACE_CACHE", False)
    monkeypatch.setattr(fastpath, "_CHOSEN", {})
    monkeypatch.setattr(fastpath, "_RACES", {})
    real = torch.ops.mkldnn._linear_pointwise
    slow = []

    def slow_onednn(*args):  # oneDNN made clearly slower: BLAS must win
        slow.append(1)
        time.sleep(0.003)
        return real(*args)

    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", slow_onednn)
    lin = optimize_(torch.nn.Linear(256, 512).eval())
    x = torch.randn(40, 256, generator=gen)  # (more rows than our few-rows kernel takes)
    with torch.no_grad():
        want = F.linear(x, lin.weight, lin.bias)
        for _ in range(2 * (fastpath.RACE_TRIALS + 1)):
            torch.testing.assert_close(lin(x), want)
        assert len(slow) == fastpath.RACE_TRIALS + 1 and list(fastpath._CHOSEN.values()) == [1]  # BLAS
        for _ in range(5):
            torch.testing.assert_close(lin(x), want)
        assert len(slow) == fastpath.RACE_TRIALS + 1  # no more oneDNN calls for this shape
        lin(torch.randn(300, 256, generator=gen))  # another row-count octave: a race of its own
        assert len(slow) == fastpath.RACE_TRIALS + 2 and len(fastpath._RACES) == 1
        monkeypatch.setattr(fastpath, "GEMM", "onednn")
        lin(torch.randn(300, 256, generator=gen))
        assert len(slow) == fastpath.RACE_TRIALS + 3 and len(fastpath._RACES[next(iter(fastpath._RACES))][0]) == 1


def test_gemm_race_outcome_is_kept_for_the_next_process(gen, monkeypatch, tmp_path):
    """A finished race is written to ``$TATLAS_CACHE/gemm-race.json`` under this host (CPU, torch,
    thread count); a later process (here: the in-process state cleared) serves that shape by the
    saved winner from its first call, without running the loser. Another thread count races anew;
    an unreadable file, or none, means racing again; an unwritable cache costs nothing but the file."""
    import json
    import time

    import torch.nn.functional as F

    from tatlas.nn import fastpath
    from tatlas.nn.fastpath import optimize_

    monkeypatch.setenv("TATLAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fastpath, "GEMM", "auto")
    monkeypatch.setattr(fastpath, "RACE_CACHE", True)
    real = torch.ops.mkldnn._linear_pointwise
    onednn_calls = []

    def slow_onednn(*args):
        onednn_calls.append(1)
        time.sleep(0.003)
        return real(*args)

    def new_process():
        monkeypatch.setattr(fastpath, "_CHOSEN", {})
        monkeypatch.setattr(fastpath, "_RACES", {})
        monkeypatch.setattr(fastpath, "_SAVED", {})
        onednn_calls.clear()

    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", slow_onednn)
    lin = optimize_(torch.nn.Linear(256, 512).eval())
    x = torch.randn(40, 256, generator=gen)  # (more rows than our few-rows kernel takes)
    want = F.linear(x, lin.weight, lin.bias)
    new_process()
    with torch.no_grad():
        for _ in range(2 * (fastpath.RACE_TRIALS + 1)):
            lin(x)
        assert len(onednn_calls) == fastpath.RACE_TRIALS + 1
        saved = json.loads(fastpath.race_file().read_text())
        (host, entries), = saved.items()
        assert host == fastpath._host() and f"threads-{torch.get_num_threads()}" in host
        (shape, entry), = entries.items()
        assert shape == "torch.float32|6|512|256|none" and entry["choice"] == 1 and len(entry["best_s"]) == 2

        new_process()  # the next process: BLAS from the first call, oneDNN never runs
        for _ in range(3):
            torch.testing.assert_close(lin(x), want)
        assert onednn_calls == []

        new_process()  # another thread count is another host: it races
        threads = torch.get_num_threads()
        torch.set_num_threads(1 if threads > 1 else 2)
        try:
            lin(x)
            lin(x)
            assert onednn_calls == [1] and len(fastpath._RACES) == 1  # one call of each, racing
        finally:
            torch.set_num_threads(threads)

        fastpath.race_file().write_text("{not json")  # damaged: race again, and write it whole
        new_process()
        for _ in range(2 * (fastpath.RACE_TRIALS + 1)):
            torch.testing.assert_close(lin(x), want)
        assert len(onednn_calls) == fastpath.RACE_TRIALS + 1
        assert json.loads(fastpath.race_file().read_text())[fastpath._host()][shape]["choice"] == 1

        blocked = tmp_path / "file-not-dir"
        blocked.write_text("")
        monkeypatch.setenv("TATLAS_CACHE", str(blocked / "cache"))  # cannot be created
        new_process()
        for _ in range(2 * (fastpath.RACE_TRIALS + 1)):
            torch.testing.assert_close(lin(x), want)
        assert list(fastpath._CHOSEN.values()) == [1]



@pytest.mark.skipif(not __import__("tatlas").nn.matvec.serves_rows(torch.ones(2, 8), torch.ones(4, 8), None),
                    reason="the few-rows kernel needs an x86-64 host with AVX-512 and a compiler")
def test_a_few_rows_race_our_kernel_too(gen, monkeypatch):
    """A product of 2 to matvec.MAX_ROWS rows (a decode step of several sequences) races three
    ways: oneDNN, BLAS and our kernel, which reads each weight row once for all rows; every call
    returns the right product (float32 and bfloat16), and the winner serves the shape after."""
    import time

    import torch.nn.functional as F

    from tatlas.nn import fastpath, matvec
    from tatlas.nn.fastpath import optimize_

    monkeypatch.setattr(fastpath, "GEMM", "auto")
    monkeypatch.setattr(fastpath, "RACE_CACHE", False)
    monkeypatch.setattr(fastpath, "_CHOSEN", {})
    monkeypatch.setattr(fastpath, "_RACES", {})
    calls = {"onednn": 0, "blas": 0, "ours": 0}

    def slowed(name, fn):
        def run(*args, **kwargs):
            calls[name] += 1
            if name != "ours":
                time.sleep(0.003)  # the GEMMs made clearly slower: ours must win
            return fn(*args, **kwargs)
        return run

    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", slowed("onednn", torch.ops.mkldnn._linear_pointwise))
    monkeypatch.setattr(fastpath.F, "linear", slowed("blas", F.linear))
    monkeypatch.setattr(matvec, "matmat", slowed("ours", matvec.matmat))
    for dtype, tol in ((torch.float32, dict(atol=1e-5, rtol=1e-5)), (torch.bfloat16, dict(atol=2e-2, rtol=2e-2))):
        lin = optimize_(torch.nn.Linear(256, 512).eval().to(dtype))
        for rows in (3, 11):
            x = torch.randn(rows, 256, generator=gen).to(dtype)
            with torch.no_grad():
                want = x.float() @ lin.weight.float().T + lin.bias.float()  # (F.linear is counted)
                for _ in range(3 * (fastpath.RACE_TRIALS + 1) + 4):
                    torch.testing.assert_close(lin(x).float(), want, **tol)
    assert set(fastpath._CHOSEN.values()) == {2} and len(fastpath._CHOSEN) == 4  # ours, per dtype and row octave
    assert all(key[-1] == "rows" for key in fastpath._CHOSEN)
    assert calls["onednn"] == calls["blas"] == 4 * (fastpath.RACE_TRIALS + 1)  # (the race's calls only)

def test_gated_mlp_and_attention_join_their_projections_into_one_matmul(gen, monkeypatch):
    """After ``optimize_``, gate+up and q+k+v each run as one oneDNN call over one joined weight: the
    same numbers, the same Parameter objects and state dict (their storage now row blocks of one
    matrix, no copy kept), joined again after ``.to()`` separated them; with gradients nothing joins."""
    from tatlas.nn import Attention, GatedMLP
    from tatlas.nn.fastpath import FastAttention, FastGatedMLP, optimize_

    mlp = GatedMLP(dim=128, hidden=384).eval()
    attn = Attention(dim=128, heads=4, kv_heads=2, qkv_bias=True).eval()
    x = torch.randn(2, 16, 128, generator=gen)
    with torch.no_grad():
        ref_mlp, ref_attn = mlp(x), attn(x, causal=True)
    params = [*mlp.parameters(), *attn.parameters()]
    state = {k: v.clone() for k, v in {**mlp.state_dict(), **attn.state_dict()}.items()}
    optimize_(mlp), optimize_(attn)
    assert type(mlp) is FastGatedMLP and type(attn) is FastAttention
    calls = _spy_onednn(monkeypatch)
    with torch.no_grad():
        torch.testing.assert_close(mlp(x), ref_mlp, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(attn(x, causal=True), ref_attn, atol=1e-5, rtol=1e-5)
    assert len(calls) == 3  # gate+up, down; q+k+v (the output projection is F.linear: not swapped here)
    assert [*mlp.parameters(), *attn.parameters()] == params  # the same objects
    assert all(torch.equal(v, state[k]) for k, v in {**mlp.state_dict(), **attn.state_dict()}.items())
    g, u = mlp.gate.weight, mlp.up.weight
    assert u.data_ptr() == g.data_ptr() + g.numel() * g.element_size()  # adjacent rows of one matrix
    q, k, v = attn.q.bias, attn.k.bias, attn.v.bias
    assert k.data_ptr() == q.data_ptr() + q.numel() * 4 and v.data_ptr() == k.data_ptr() + k.numel() * 4
    mlp.double().float()  # separate tensors again
    assert mlp.up.weight.data_ptr() != mlp.gate.weight.data_ptr() + g.numel() * 4
    with torch.no_grad():
        torch.testing.assert_close(mlp(x), ref_mlp, atol=1e-5, rtol=1e-5)
    assert mlp.up.weight.data_ptr() == mlp.gate.weight.data_ptr() + g.numel() * 4  # joined again
    calls.clear()
    mlp(x).sum().backward()  # gradients: the plain path, and they reach each parameter
    assert calls == [] and mlp.gate.weight.grad is not None and mlp.up.weight.grad is not None


def test_fast_gated_mlp_with_a_weightless_gate():
    """A gate replaced by a module without ``weight`` (a quantised linear such as Int4Linear) is
    computed by the plain path, not an AttributeError (bench_gguf crashed on it)."""
    from tatlas.nn import GatedMLP
    from tatlas.nn.fastpath import optimize_

    class NoWeight(torch.nn.Module):
        def __init__(self, inner: torch.nn.Linear) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    mlp = GatedMLP(dim=64, hidden=128).eval()
    optimize_(mlp)
    mlp.gate = NoWeight(mlp.gate)
    x = torch.randn(1, 3, 64)
    with torch.inference_mode():
        want = mlp.down(mlp.act(mlp.gate(x)) * mlp.up(x))
        torch.testing.assert_close(mlp(x), want)
