"""Attention: the SDPA path equals the explicit-softmax twin (and a from-scratch computation)
over masks, additive bias, GQA, causal with T != S, gating, QK-norm and leading dims."""

import pytest
import torch

from tatlas.nn import Attention, CrossKVCache, RMSNorm, causal_mask, sdpa, softmax_attention


def naive(q, k, v, mask=None, bias=None):
    """Attention written from the definition, independent of both tatlas paths."""
    h, g = q.shape[-3], k.shape[-3]
    k = k.repeat_interleave(h // g, dim=-3)
    v = v.repeat_interleave(h // g, dim=-3)
    s = torch.einsum("...htd,...hsd->...hts", q.double(), k.double()) / q.shape[-1] ** 0.5
    if bias is not None:
        s = s + bias.double()
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return torch.einsum("...hts,...hsd->...htd", s.softmax(-1), v.double()).to(q.dtype)


@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 2), (4, 1)])
@pytest.mark.parametrize("kind", ["none", "bool", "float", "bias", "bool+bias", "causal"])
def test_sdpa_equals_softmax_twin_and_definition(heads, kv_heads, kind, gen):
    b, t, s, d = 2, 5, 7, 8
    q = torch.randn(b, heads, t, d, generator=gen)
    k = torch.randn(b, kv_heads, s, d, generator=gen)
    v = torch.randn(b, kv_heads, s, d, generator=gen)
    bool_mask = torch.rand(b, 1, t, s, generator=gen) > 0.3
    bool_mask[..., 0] = True  # no empty rows
    bias = torch.randn(b, heads, t, s, generator=gen)
    mask_arg, ref_mask, ref_bias, is_causal = None, None, None, False
    if kind == "bool":
        mask_arg = ref_mask = bool_mask
    elif kind == "float":
        mask_arg = ref_bias = bias
    elif kind == "bias":
        mask_arg = ref_bias = bias
    elif kind == "bool+bias":
        mask_arg = bias.masked_fill(~bool_mask, float("-inf"))
        ref_mask, ref_bias = bool_mask, bias
    elif kind == "causal":
        ref_mask = causal_mask(t, s)
        mask_arg = ref_mask
    fast = sdpa(q, k, v, attn_mask=mask_arg, is_causal=is_causal)
    twin, weights = softmax_attention(q, k, v, attn_mask=mask_arg, is_causal=is_causal)
    ref = naive(q, k, v, ref_mask, ref_bias)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(twin, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(b, heads, t), atol=1e-5, rtol=0)


@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 2), (4, 1)])
@pytest.mark.parametrize("mask_shape", [None, (2, 1, 1, 7), (1, 7), (7,), (2, 4, 1, 7), (4, 1, 7)])
@pytest.mark.parametrize("lead", [(2,), (3, 2)])
def test_one_query_decode_path_equals_definition(heads, kv_heads, mask_shape, lead, gen):
    """A single query under no_grad on the CPU takes the matrix-vector path of ``sdpa``."""
    q = torch.randn(*lead, heads, 1, 8, generator=gen)
    k = torch.randn(*lead, kv_heads, 7, 8, generator=gen)
    v = torch.randn(*lead, kv_heads, 7, 8, generator=gen)
    for kind in ("bool", "float"):
        mask = None
        if mask_shape is not None:
            mask = torch.rand(mask_shape, generator=gen) > 0.4 if kind == "bool" else torch.randn(mask_shape, generator=gen)
            if kind == "bool":
                mask[..., 0] = True
        with torch.no_grad():
            fast = sdpa(q, k, v, attn_mask=mask)
        ref = naive(q, k, v, mask if kind == "bool" else None, mask if kind == "float" else None)
        torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)


def test_causal_mask_aligned_bottom_right():
    m = causal_mask(2, 5)
    assert m.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]
    w = causal_mask(4, 4, window=2)
    assert w.tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("gate", [False, True])
def test_module_paths_agree(fused, gate, gen):
    torch.manual_seed(0)
    attn = Attention(dim=32, heads=4, kv_heads=2, fused_qkv=fused, gate=gate, qkv_bias=True,
                     qk_norm=lambda d: RMSNorm(d)).eval()
    x = torch.randn(3, 6, 32, generator=gen)
    bias = torch.randn(3, 4, 6, 6, generator=gen)
    a = attn(x, bias=bias, causal=True)
    b, w = attn(x, bias=bias, causal=True, return_weights=True)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert w.shape == (3, 4, 6, 6)
    assert torch.all(w.triu(1) == 0), "causal weights above the diagonal"


def test_leading_dims_and_pair_bias_broadcast(gen):
    """Evoformer-style: x [B, N_seq, N_res, C] with a pair bias [B, 1, H, N_res, N_res]."""
    attn = Attention(dim=16, heads=2, gate=True).eval()
    x = torch.randn(2, 3, 5, 16, generator=gen)
    bias = torch.randn(2, 1, 2, 5, 5, generator=gen)
    out = attn(x, bias=bias)
    per_row = torch.stack([attn(x[:, i], bias=bias[:, 0]) for i in range(3)], dim=1)
    torch.testing.assert_close(out, per_row, atol=1e-5, rtol=1e-5)
    out2, _ = attn(x, bias=bias, return_weights=True)
    torch.testing.assert_close(out, out2, atol=1e-5, rtol=1e-5)


def test_cross_attention_and_cross_cache(gen):
    attn = Attention(dim=16, heads=4, kv_dim=24).eval()
    x = torch.randn(2, 3, 16, generator=gen)
    ctx = torch.randn(2, 7, 24, generator=gen)
    ref = attn(x, ctx)
    cache = CrossKVCache()
    calls = []
    orig = attn.project_kv
    attn.project_kv = lambda c, rope=None: (calls.append(1), orig(c))[1]
    out1 = attn(x, ctx, cache=cache)
    out2 = attn(x, cache=cache)  # no context: from the cache
    assert len(calls) == 1, "cross K/V must be computed once"
    torch.testing.assert_close(out1, ref)
    torch.testing.assert_close(out2, ref)
    with pytest.raises(ValueError, match="empty"):
        attn(x, cache=CrossKVCache())


def test_dropout_only_in_training(gen):
    attn = Attention(dim=16, heads=2, dropout=0.5)
    x = torch.randn(2, 4, 16, generator=gen)
    attn.eval()
    torch.testing.assert_close(attn(x), attn(x))
    attn.train()
    torch.manual_seed(0)
    a = attn(x)
    torch.manual_seed(1)
    assert not torch.allclose(a, attn(x))


def test_bad_input_names_shapes():
    attn = Attention(dim=16, heads=2)
    with pytest.raises(ValueError, match="expected 16, got 8"):
        attn(torch.randn(1, 3, 8))
    with pytest.raises(ValueError, match="divisible"):
        Attention(dim=16, heads=4, kv_heads=3)


@pytest.mark.parametrize("mask_shape", [(5, 5), (1, 4, 5, 5), (2, 1, 4, 5, 5), (2, 3, 1, 5, 5)])
def test_leading_dims_with_gqa_and_any_mask_rank(mask_shape, gen):
    q = torch.randn(2, 3, 4, 5, 8, generator=gen)
    k, v = torch.randn(2, 3, 2, 5, 8, generator=gen), torch.randn(2, 3, 2, 5, 8, generator=gen)
    bias = torch.randn(mask_shape, generator=gen)
    ref = naive(q, k, v, bias=bias)
    torch.testing.assert_close(sdpa(q, k, v, attn_mask=bias), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(softmax_attention(q, k, v, attn_mask=bias)[0], ref, atol=1e-5, rtol=1e-5)


def test_cross_attention_rows_sharing_one_source(gen):
    """Beams of one source: keys/values stored once for ``g`` adjacent query rows equal the same
    keys/values repeated for every row."""
    attn = Attention(dim=16, heads=4, qkv_bias=True, k_bias=False, out_bias=True).eval()
    x = torch.randn(6, 3, 16, generator=gen)  # 2 sources x 3 rows, 3 queries each
    context = torch.randn(2, 9, 16, generator=gen)
    shared, repeated = CrossKVCache(), CrossKVCache()
    shared.store(*attn.project_kv(context))
    repeated.store(*attn.project_kv(context.repeat_interleave(3, dim=0)))
    with torch.no_grad():
        torch.testing.assert_close(attn(x, cache=shared), attn(x, cache=repeated), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(attn(x[:, -1:], cache=shared), attn(x[:, -1:], cache=repeated), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("lead,mask_lead,bias_lead", [
    ((6,), (6,), (1,)),  # one batch of rows sharing a bias (triangle attention)
    ((2, 6), (2, 6), (2, 1)),  # a batch of pair representations: a bias per batch element
    ((2, 6), (2, 6), (1, 6)),  # a bias per row, shared by the batch
    ((2, 3, 6), (1, 3, 6), ()),  # more leading dims, the mask broadcast over the first
    ((5,), (1,), (5,)),  # one mask for all rows
    ((2, 0), (2, 0), (1, 1)),  # no rows (AlphaFold's extra MSA can be empty)
    ((4,), (1,), (1,)),  # mask and bias both shared by the rows
])
@pytest.mark.parametrize("chunk", [1 << 20, 150, 1])  # all rows at once, 3 / 1 rows per chunk
def test_key_masked_attention_equals_the_summed_mask(lead, mask_lead, bias_lead, chunk, gen, monkeypatch):
    """A per-row key mask and a shared bias, never summed for all rows at once: bit-identical to SDPA
    on their sum without gradients (chunks of rows), equal to the definition and with the same
    gradients with them (scores formed once, both added in place); fully masked rows included."""
    from tatlas.nn import attention as A

    monkeypatch.setattr(A, "MASK_CHUNK", chunk)
    h, t, s, d = 2, 5, 5, 4
    q, k, v = (torch.randn(*lead, h, t, d, generator=gen) for _ in range(3))
    key_mask = 1e9 * ((torch.rand(*mask_lead, 1, 1, s, generator=gen) > 0.2).float() - 1.0)
    if key_mask.numel():
        key_mask.view(-1, s)[0] = -1e9  # a row that sees no key: AlphaFold's padding rows
    bias = torch.randn(*bias_lead, h, t, s, generator=gen)
    with torch.no_grad():
        got = A.key_masked_attention(q, k, v, key_mask, bias)
        want = sdpa(q, k, v, attn_mask=key_mask + bias)
    assert got.shape == want.shape and torch.equal(got, want)
    seen = (key_mask > -1).any(-1, keepdim=True).expand(got.shape)  # float64 keeps the bias of masked rows
    torch.testing.assert_close(got[seen], naive(q, k, v, bias=key_mask + bias)[seen], atol=1e-5, rtol=1e-5)

    leaves = [x.clone().requires_grad_() for x in (q, k, v, bias)]
    g = torch.randn(want.shape, generator=gen)
    (A.key_masked_attention(*leaves[:3], key_mask, leaves[3]) * g).sum().backward()
    grads = [x.grad for x in leaves]
    for x in leaves:
        x.grad = None
    (softmax_attention(*leaves[:3], attn_mask=key_mask + leaves[3])[0] * g).sum().backward()
    for got_grad, x in zip(grads, leaves, strict=True):
        torch.testing.assert_close(got_grad, x.grad, atol=1e-5, rtol=1e-5)


def test_attention_takes_a_key_mask_and_a_bias_apart(gen, monkeypatch):
    """The module routes a key mask plus a bias to :func:`key_masked_attention` (AlphaFold's
    attentions pass them apart), with the output it gave for their sum; other masks keep SDPA."""
    from tatlas.nn import attention as A

    attn = Attention(dim=8, heads=2, gate=True, out_bias=True).eval()
    x = torch.randn(1, 6, 5, 8, generator=gen)
    key_mask = 1e9 * ((torch.rand(1, 6, 1, 1, 5, generator=gen) > 0.2).float() - 1.0)
    bias = torch.randn(1, 1, 2, 5, 5, generator=gen)
    calls = []
    real = A.key_masked_attention
    monkeypatch.setattr(A, "key_masked_attention", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    with torch.no_grad():
        apart = attn(x, mask=key_mask, bias=bias)
        assert len(calls) == 1
        summed = attn(x, bias=key_mask + bias)
        attn(x, mask=torch.rand(1, 6, 2, 5, 5, generator=gen), bias=bias)  # not a key mask
    assert len(calls) == 1 and torch.equal(apart, summed)
