"""One whole decode layer in one C call (nn/decode_layer.py, ``tatlas_decode_layer`` in matvec.c): a
batch-1 decode step of an optimised Llama-style decoder gives the torch path's logits (float32 to
rounding, bfloat16 with every intermediate rounded alike) for every variant it serves, and every
call it does not serve runs the blocks as torch ops."""

from __future__ import annotations

import platform
from functools import partial

import pytest
import torch

import tatlas
from tatlas.generate import GenerationConfig, generate
from tatlas.nn import LayerNorm, RMSNorm, TransformerBlock, classic_block, decode_layer, fastpath, matvec
from tatlas.nn.cache import CrossKVCache, StaticKVCache

pytestmark = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64") or matvec._compiler() is None
                                or matvec.kernel() is None, reason="the C layer is built on x86-64 hosts with a compiler")


def _model(dtype=torch.float32, **changes):
    torch.manual_seed(0)
    model = tatlas.create("llm", "tiny", **{"dim": 128, "mlp_hidden": 344, "vocab_size": 300, **changes}).eval()
    for p in model.parameters():  # larger than the init, so that every path's arithmetic shows in the logits
        p.data.normal_(0, 0.15)
    return tatlas.optimize(model.to(dtype))


def _steps(model, prompt, n=14, *, enabled=True, attention_mask=None, before_layer=None):
    """Prefill ``prompt [1, T]``, then ``n`` greedy decode steps; their logits ``[n, V]`` (float32)."""
    decode_layer.ENABLED = enabled
    try:
        with torch.inference_mode():
            t0 = prompt.shape[1]
            cache = model.new_cache(1, t0 + n)
            model.prefill(prompt, cache, attention_mask=attention_mask)
            tok, out = prompt[:, -1:], []
            for i in range(n):
                kwargs = {} if before_layer is None else {"before_layer": before_layer}
                logits = model(tok, cache=cache, input_pos=torch.tensor([t0 + i]), last_only=True, **kwargs)[:, -1]
                out.append(logits.float())
                tok = logits.argmax(-1, keepdim=True)
    finally:
        decode_layer.ENABLED = True
    return torch.cat(out)


def _spy(monkeypatch):
    """Counts of C calls: (whole decoders, single layers)."""
    lib, counts = matvec.kernel(), {"layers": 0, "layer": 0}

    class Lib:
        def __getattr__(self, name):
            return getattr(lib, name)

        def tatlas_decode_layers(self, *a):
            counts["layers"] += 1
            return lib.tatlas_decode_layers(*a)

        def tatlas_decode_layer(self, *a):
            counts["layer"] += 1
            return lib.tatlas_decode_layer(*a)

    monkeypatch.setattr(matvec, "kernel", lambda: Lib())
    return counts


VARIANTS = {
    "qwen2": dict(qkv_bias=True),  # q/k/v biases, grouped-query attention (4 heads, 2 groups)
    "llama": dict(),
    "multi-head": dict(kv_heads=4),
    "interleaved": dict(rope_interleaved=True),  # DeepSeek's rotary layout
    "gemma-norm": dict(norm_offset=1.0, query_scale=20.0),  # (1 + w) RMSNorm, a query scale of its own
    "mistral": dict(sliding_window=5),  # a sliding-window mask over the cache
}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_the_c_layers_equal_the_torch_blocks(variant, dtype, monkeypatch):
    model = _model(dtype, **VARIANTS[variant])
    prompt = torch.randint(0, 300, (1, 7), generator=torch.Generator().manual_seed(1))
    want = _steps(model, prompt, enabled=False)
    counts = _spy(monkeypatch)
    got = _steps(model, prompt)
    assert counts == {"layers": 14, "layer": 0}  # one call per step for every layer
    assert torch.equal(got.argmax(-1), want.argmax(-1))
    if dtype == torch.float32:
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)
    else:  # the same bfloat16 roundings; sums in another order may round a value to the next bfloat16
        torch.testing.assert_close(got, want, atol=8e-3, rtol=1e-2)  # logits ~1: a few bfloat16 steps


def test_left_padding_masks_the_padded_slots(monkeypatch):
    model = _model(qkv_bias=True)
    prompt = torch.randint(0, 300, (1, 8), generator=torch.Generator().manual_seed(2))
    mask = torch.tensor([[False, False, False] + [True] * 5])
    want = _steps(model, prompt, attention_mask=mask, enabled=False)
    counts = _spy(monkeypatch)
    got = _steps(model, prompt, attention_mask=mask)
    assert counts["layers"] == 14
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)
    unmasked = _steps(model, prompt)
    assert (unmasked - got).abs().max() > 1e-3  # the padded slots did count without the mask


def _rows_steps(model, prompts, mask, n=10, *, enabled=True, forced=None):
    """Prefill the left-padded ``prompts [B, T]`` (``mask``: their real tokens), then ``n`` steps of
    every row at once, greedy or fed the tokens ``forced [n, B]``; their logits ``[n, B, V]`` (float32)."""
    decode_layer.ENABLED = enabled
    try:
        with torch.inference_mode():
            rows, t0 = prompts.shape
            cache = model.new_cache(rows, t0 + n)
            tok, out = model.prefill(prompts, cache, attention_mask=mask)[:, -1:].argmax(-1), []
            for i in range(n):
                logits = model(tok, cache=cache, input_pos=torch.tensor([t0 + i]), last_only=True)[:, -1]
                out.append(logits.float())
                tok = logits.argmax(-1, keepdim=True) if forced is None else forced[i][:, None]
    finally:
        decode_layer.ENABLED = True
    return torch.stack(out)


@pytest.mark.parametrize("variant", ["qwen2", "interleaved", "mistral"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_several_rows_take_one_call_per_step(variant, dtype, monkeypatch):
    """A step of several sequences, left-padded to one length (each row its own positions and mask),
    is one C call for every layer, with the torch path's logits; each weight row is read once for
    all rows (three rows; eleven: a group of eight and one of three)."""
    model = _model(dtype, **VARIANTS[variant])
    g = torch.Generator().manual_seed(5)
    for rows in (3, 11):
        prompts = torch.randint(0, 300, (rows, 7), generator=g)
        mask = torch.arange(7)[None, :] >= torch.randint(0, 5, (rows, 1), generator=g)  # 0-4 padded slots a row
        want = _rows_steps(model, prompts, mask, enabled=False)
        counts = _spy(monkeypatch)
        # bfloat16: both fed the same tokens (a near tie may go the other way, and a row differ from there on)
        got = _rows_steps(model, prompts, mask, forced=None if dtype == torch.float32 else want.argmax(-1))
        monkeypatch.undo()
        assert counts == {"layers": 10, "layer": 0}
        if dtype == torch.float32:
            assert torch.equal(got.argmax(-1), want.argmax(-1))
            torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)
        else:
            torch.testing.assert_close(got, want, atol=8e-3, rtol=1e-2)


def test_a_hook_between_layers_takes_one_call_per_layer(monkeypatch):
    """With ``before_layer`` (Flamingo's cross-attention layers between the LM's own) each block is
    still one C call."""
    model = _model(qkv_bias=True)
    prompt = torch.randint(0, 300, (1, 5), generator=torch.Generator().manual_seed(3))
    seen = []
    hook = lambda i, x: seen.append(i) or x * 1.01  # noqa: E731
    want = _steps(model, prompt, n=4, enabled=False, before_layer=hook)
    counts = _spy(monkeypatch)
    got = _steps(model, prompt, n=4, before_layer=hook)
    assert counts == {"layers": 0, "layer": 4 * 2}
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)


def test_generate_is_unchanged_and_uses_it(monkeypatch):
    model = _model(qkv_bias=True)
    prompt = torch.randint(0, 300, (1, 6), generator=torch.Generator().manual_seed(4))
    cfg = GenerationConfig(max_new_tokens=10)
    decode_layer.ENABLED = False
    try:
        want = generate(model, prompt, cfg)
    finally:
        decode_layer.ENABLED = True
    counts = _spy(monkeypatch)
    got = generate(model, prompt, cfg)
    assert torch.equal(got.tokens, want.tokens) and counts["layers"] == 9  # the first token comes from the prefill


def test_what_it_does_not_serve_runs_as_torch_ops(monkeypatch):
    model = _model()
    counts = _spy(monkeypatch)
    with torch.inference_mode():
        # a prompt of several tokens: the GEMM path
        cache = model.new_cache(2, 8)
        model.prefill(torch.randint(0, 300, (2, 3)), cache)
        model(torch.randint(0, 300, (2, 2)), cache=cache, input_pos=torch.tensor([3, 4]))
        # two rows where the kernel reads the weights once per row (no AVX-512): the GEMM path
        monkeypatch.setattr(matvec, "rows_at_once", lambda: False)
        model(torch.randint(0, 300, (2, 1)), cache=cache, input_pos=torch.tensor([5]))
        monkeypatch.setattr(matvec, "rows_at_once", lambda: True)
        # a dynamic cache (grows by concatenation)
        cache = model.new_cache(1, 8, static=False)
        model.prefill(torch.randint(0, 300, (1, 3)), cache)
        model(torch.randint(0, 300, (1, 1)), cache=cache, input_pos=torch.tensor([3]))
    assert counts == {"layers": 0, "layer": 0}
    # a model that was not optimised: the fast path is opted into, never imposed
    plain = tatlas.create("llm", "tiny").eval()
    with torch.inference_mode():
        cache = plain.new_cache(1, 8)
        plain.prefill(torch.randint(0, 259, (1, 3)), cache)
        plain(torch.randint(0, 259, (1, 1)), cache=cache, input_pos=torch.tensor([3]))
    assert counts == {"layers": 0, "layer": 0}
    # a gradient wanted
    cache = model.new_cache(1, 8)
    with torch.no_grad():
        model.prefill(torch.randint(0, 300, (1, 3)), cache)
    x = torch.randn(1, 1, 128, requires_grad=True)
    assert decode_layer.run(model.layers[0], x, mask=None, rope=model.rotary(torch.tensor([[3]])),
                            cache=cache.layers[0], input_pos=torch.tensor([3])) is None


def test_blocks_it_does_not_compute_are_not_planned():
    torch_norm = fastpath.optimize_(classic_block(dim=64, heads=4, mlp_hidden=128, norm=torch.nn.LayerNorm).eval())
    assert type(torch_norm) is fastpath.FastTransformerBlock and decode_layer.plan(torch_norm) is None
    gelu = _model(act="gelu_tanh").layers[0]  # a GeGLU MLP
    assert decode_layer.plan(gelu) is None
    silu = classic_block(dim=64, heads=4, mlp_hidden=128, norm=LayerNorm, act="silu")  # no such classic MLP
    scaled = classic_block(dim=64, heads=4, mlp_hidden=128, norm=LayerNorm, layer_scale=0.1)  # CaiT's scales
    mixed = classic_block(dim=64, heads=4, mlp_hidden=128, norm=LayerNorm)
    mixed.mlp_norm = RMSNorm(64)  # norms of two kinds
    qk_norm = classic_block(dim=64, heads=4, mlp_hidden=128, norm=LayerNorm, qk_norm=LayerNorm)  # InternViT's
    int8 = classic_block(dim=64, heads=4, mlp_hidden=128, norm=LayerNorm)
    from tatlas.nn.quant import quantize_int8_

    quantize_int8_(int8.mlp)  # an int8 MLP: not a product the C layer reads
    for block in (silu, scaled, mixed, qk_norm, int8):
        assert decode_layer.plan(fastpath.optimize_(block.eval())) is None
    assert decode_layer.plan(_model().layers[0]) is not None
    assert decode_layer.plan(fastpath.optimize_(classic_block(dim=64, heads=4, mlp_hidden=128, norm=LayerNorm,
                                                              cross=True).eval())) is not None


# The classic block (GPT-2-style: biased projections, a two-layer MLP, no rotary), as the systems
# that decode with one build it: Whisper's decoder (LayerNorm, exact GELU, cross-attention over the
# audio), GPT-2 (tanh GELU), ImageGPT (RMSNorm, quick GELU), the Decision Transformer (ReLU), and one
# without any bias.
CLASSIC = {
    "whisper": dict(norm=LayerNorm, act="gelu", cross=True),
    "gpt2": dict(norm=LayerNorm, act="gelu_tanh"),
    "imagegpt": dict(norm=RMSNorm, act="quick_gelu"),
    "decision-transformer": dict(norm=LayerNorm, act="relu"),
    "no-bias": dict(norm=partial(LayerNorm, bias=False), act="gelu", qkv_bias=False, cross=True),
}


def _classic(variant: str, dtype: torch.dtype):
    torch.manual_seed(0)
    opts = dict(CLASSIC[variant])
    block = classic_block(dim=64, heads=4, mlp_hidden=256, fused_qkv=variant != "gpt2", **opts).eval()
    if variant == "no-bias":
        for lin in (block.attn.out, block.mlp.fc1, block.mlp.fc2, block.cross_attn.q, block.cross_attn.out):
            lin.bias = None
    for p in block.parameters():
        p.data.normal_(0, 0.15)
    return fastpath.optimize_(block.to(dtype))


@pytest.mark.parametrize("variant", list(CLASSIC))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("rows", [1, 3, 35])
def test_the_c_layer_equals_a_classic_block(variant, dtype, rows):
    """Step by step over a cache whose first slots are padding (two in row 0, 0-2 in the others;
    each row its own source for the cross-attention): the C layer's output and the keys/values it
    caches equal the torch block's (35 rows: more than the 32 whose products it takes at once)."""
    block = _classic(variant, dtype)
    g = torch.Generator().manual_seed(1)
    caches = [StaticKVCache(batch=rows, kv_heads=4, max_len=12, head_dim=16, dtype=dtype) for _ in range(2)]
    crosses = [None, None]
    if block.cross_attn is not None:
        context = torch.randn(rows, 37, 64, generator=g).to(dtype)
        crosses = [CrossKVCache(), CrossKVCache()]
        for c in crosses:
            c.store(*block.cross_attn.project_kv(context))
    pads = torch.cat([torch.tensor([2]), torch.randint(0, 3, (rows - 1,), generator=g)])
    valid = torch.arange(12)[None, :] >= pads[:, None]  # [rows, 12]
    tol = dict(atol=2e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=3e-2, rtol=2e-2)
    with torch.inference_mode():
        for pos in range(2, 10):
            x = torch.randn(rows, 1, 64, generator=g).to(dtype)
            mask, input_pos = valid[:, : pos + 1].reshape(rows, 1, 1, -1).contiguous(), torch.tensor([pos])
            want = TransformerBlock.forward(block, x, mask=mask, cache=caches[0], input_pos=input_pos,
                                            cross_cache=crosses[0])
            got = decode_layer.run(block, x, mask=mask, rope=None, cache=caches[1], input_pos=input_pos,
                                   cross_cache=crosses[1])
            assert got is not None
            torch.testing.assert_close(got.float(), want.float(), **tol)
            torch.testing.assert_close(caches[1].k.float(), caches[0].k.float(), **tol)
            torch.testing.assert_close(caches[1].v.float(), caches[0].v.float(), **tol)
    # a cross-attention block without its filled cache, or with another block's heads, is not served
    if block.cross_attn is not None:
        x = torch.randn(rows, 1, 64).to(dtype)
        step = dict(mask=None, rope=None, cache=caches[1], input_pos=torch.tensor([10]))
        assert decode_layer.run(block, x, cross_cache=CrossKVCache(), **step) is None
        assert decode_layer.run(block, x, cross_cache=None, **step) is None
        wrong = CrossKVCache()
        wrong.store(torch.zeros(rows, 2, 37, 32, dtype=dtype), torch.zeros(rows, 2, 37, 32, dtype=dtype))
        assert decode_layer.run(block, x, cross_cache=wrong, **step) is None
        if rows > 1:  # nor one whose source has another number of rows
            assert decode_layer.run(block, x[:1], cross_cache=crosses[1], **{**step, "cache": StaticKVCache(
                batch=1, kv_heads=4, max_len=12, head_dim=16, dtype=dtype)}) is None


def _whisper(dtype=torch.float32):
    torch.manual_seed(0)
    model = tatlas.create("whisper", "tiny").eval()
    for p in model.parameters():
        p.data.normal_(0, 0.15)
    return tatlas.optimize(model.to(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("rows", [1, 3])
def test_a_whisper_decode_step_is_one_call(dtype, rows, monkeypatch):
    """Whisper's decode step of one window or of several runs every decoder layer (self-attention,
    cross-attention over each window's audio, MLP) in one C call, with the torch path's logits and
    greedy tokens."""
    model = _whisper(dtype)
    c = model.config
    mel = torch.randn(rows, c.mels, c.n_frames, generator=torch.Generator().manual_seed(1)).to(dtype)

    def steps(enabled: bool, forced: torch.Tensor | None = None, n: int = 10) -> torch.Tensor:
        """``n`` steps' logits ``[n * rows, V]``: greedy, or fed the tokens ``forced [n * rows]``."""
        decode_layer.ENABLED = enabled
        try:
            with torch.inference_mode():
                cache = model.new_cache(rows, 16)
                model.fill_cross_cache(cache, model.embed_audio(mel))
                tok, out = torch.full((rows, 1), c.vocab_size - 1), []
                for i in range(n):
                    logits = model.decode_step(tok, cache, torch.tensor([i])).float()
                    out.append(logits)
                    tok = logits.argmax(-1, keepdim=True) if forced is None else forced.view(n, rows, 1)[i]
        finally:
            decode_layer.ENABLED = True
        return torch.cat(out)

    want = steps(False)
    counts = _spy(monkeypatch)
    got = steps(True)
    assert counts == {"layers": 10, "layer": 0}
    if dtype == torch.float32 or rows == 1:
        assert torch.equal(got.argmax(-1), want.argmax(-1))
    else:  # bfloat16 logits tie often; a sum in another order may break a tie the other way: both fed the same tokens
        got = steps(True, forced=want.argmax(-1))
        top = want.topk(2, dim=-1).values
        ties = top[:, 0] - top[:, 1] <= 2 * torch.finfo(torch.bfloat16).eps * top[:, 0].abs()
        assert (ties | (got.argmax(-1) == want.argmax(-1))).all()
    tol = dict(atol=2e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=3e-2, rtol=2e-2)
    torch.testing.assert_close(got, want, **tol)


def test_a_moved_or_replaced_parameter_is_planned_again(monkeypatch):
    model = _model(qkv_bias=True)
    prompt = torch.randint(0, 300, (1, 5), generator=torch.Generator().manual_seed(5))
    first = _steps(model, prompt, n=3)
    layer = decode_layer.plan(model.layers[0])
    assert decode_layer.plan(model.layers[0]) is layer  # unchanged: planned once
    with torch.no_grad():
        model.layers[0].mlp.down.weight.data = model.layers[0].mlp.down.weight.data * 0.5  # new storage
    assert decode_layer.plan(model.layers[0]) is not layer
    torch.testing.assert_close(_steps(model, prompt, n=3), _steps(model, prompt, n=3, enabled=False),
                               atol=2e-5, rtol=1e-5)
    model.layers[1].attn.q.weight = torch.nn.Parameter(model.layers[1].attn.q.weight.detach().clone() * 2)
    second = _steps(model, prompt, n=3)
    torch.testing.assert_close(second, _steps(model, prompt, n=3, enabled=False), atol=2e-5, rtol=1e-5)
    assert (second - first).abs().max() > 1e-3


def test_switched_off_by_the_environment(monkeypatch):
    model = _model()
    prompt = torch.randint(0, 300, (1, 4))
    counts = _spy(monkeypatch)
    _steps(model, prompt, n=2, enabled=False)
    assert counts == {"layers": 0, "layer": 0}
    monkeypatch.setattr(matvec, "kernel", lambda: None)  # no compiler / TATLAS_MATVEC=0
    _steps(model, prompt, n=2)
    assert counts == {"layers": 0, "layer": 0}


def test_a_plan_keeps_no_model_alive():
    import gc
    import weakref

    model = _model()
    _steps(model, torch.randint(0, 300, (1, 4)), n=2)
    assert decode_layer.plan(model.layers[0]) is not None
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None


def _blockwise(lin: torch.nn.Linear, kind: str, compute_dtype=torch.float32):
    """``lin`` quantised group-wise (32 columns) as GGUF blocks do, as ``kind`` (q4: Int4Linear, q8:
    Int4PairLinear, q8-groups: GroupInt8Linear), and the float32 weight those blocks stand for."""
    from tatlas.nn.quant_blocks import GroupInt8Linear, Int4Linear, Int4PairLinear

    w = lin.weight.detach().float()
    g = w.unflatten(1, (-1, 32))  # [N, K/32, 32]
    bias = None if lin.bias is None else lin.bias.detach()
    if kind == "q4":
        lo, hi = g.amin(-1), g.amax(-1)
        scale = (hi - lo).clamp(min=1e-6) / 15
        q = torch.round((g - lo[..., None]) / scale[..., None]).clamp(0, 15).flatten(1)
        zero = lo + 8 * scale
        out = Int4Linear(q.to(torch.uint8), scale, zero, bias=bias, compute_dtype=compute_dtype)
        return out, ((q - 8) * scale.repeat_interleave(32, 1) + zero.repeat_interleave(32, 1))
    scale = g.abs().amax(-1).clamp(min=1e-6) / 127
    q = torch.round(g / scale[..., None]).clamp(-127, 127).flatten(1).to(torch.int8)
    cls = Int4PairLinear if kind == "q8" else GroupInt8Linear
    return cls(q, scale, bias=bias, compute_dtype=compute_dtype), q.float() * scale.repeat_interleave(32, 1)


def _quantised_pair(kinds):
    """A model whose projections are GGUF-style block layers (``kinds``: attribute path -> kind),
    and its twin holding the float32 weights those blocks stand for in plain linear layers."""
    twin = _model(qkv_bias=True, mlp_hidden=352)  # every input width whole 32-column groups
    model = _model(qkv_bias=True, mlp_hidden=352)
    for layer, twin_layer in zip(model.layers, twin.layers):
        for path, kind in kinds.items():
            owner, name = path.split(".")
            lin = getattr(getattr(layer, owner), name)
            blocks, weight = _blockwise(lin, kind)
            setattr(getattr(layer, owner), name, blocks)
            with torch.no_grad():
                getattr(getattr(twin_layer, owner), name).weight.copy_(weight)
    return model, twin


GGUF_MIX = {"attn.q": "q4", "attn.k": "q8", "attn.out": "q4", "mlp.gate": "q4", "mlp.up": "q8-groups", "mlp.down": "q4"}


def test_gguf_blocks_run_inside_the_c_layers(monkeypatch):
    """Int4Linear / Int4PairLinear / GroupInt8Linear projections (v left a plain float32 linear) are
    read as stored by the C layers, in float32: the steps equal the float32 model of the same
    weights, where the torch path of those modules took a step each (their own kernels)."""
    model, twin = _quantised_pair(GGUF_MIX)
    prompt = torch.randint(0, 300, (1, 6), generator=torch.Generator().manual_seed(6))
    layer = decode_layer.plan(model.layers[0])
    assert layer is not None and list(layer.format) == [1, 2, 0, 1, 1, 2, 1]
    want = _steps(twin, prompt, enabled=False)
    counts = _spy(monkeypatch)
    got = _steps(model, prompt)
    assert counts == {"layers": 14, "layer": 0}
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(_steps(model, prompt, enabled=False), want, atol=1e-4, rtol=1e-4)
    # several rows: not in C (it reads the blocks one row at a time), the same steps by torch's kernels
    prompts, mask = torch.randint(0, 300, (3, 6), generator=torch.Generator().manual_seed(8)), torch.ones(3, 6) > 0
    want = _rows_steps(twin, prompts, mask, n=4, enabled=False)
    got = _rows_steps(model, prompts, mask, n=4)
    assert counts == {"layers": 14, "layer": 0}
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_gguf_blocks_replaced_or_in_bfloat16_are_planned_again_or_not_at_all():
    model, twin = _quantised_pair({"mlp.down": "q4"})
    prompt = torch.randint(0, 300, (1, 5), generator=torch.Generator().manual_seed(7))
    first = _steps(model, prompt, n=3)
    layer = decode_layer.plan(model.layers[0])
    assert decode_layer.plan(model.layers[0]) is layer  # unchanged: planned once
    down = model.layers[0].mlp.down
    down.q4_scales = down.q4_scales * 2  # a new buffer: the old plan's pointer would be stale
    assert decode_layer.plan(model.layers[0]) is not layer
    assert (_steps(model, prompt, n=3) - first).abs().max() > 1e-3
    # a new block layer in its place: planned again, the float32 twin of its weights agrees
    model.layers[0].mlp.down, weight = _blockwise(torch.nn.Linear(352, 128, bias=False), "q4")
    with torch.no_grad():
        twin.layers[0].mlp.down.weight.copy_(weight)
    torch.testing.assert_close(_steps(model, prompt, n=3), _steps(twin, prompt, n=3, enabled=False),
                               atol=1e-4, rtol=1e-4)
    assert decode_layer.plan(model.to(torch.bfloat16).layers[0]) is None  # blocks are read in float32 models only
