"""Decoding (cached == uncached for every system is the registry contract, tests/test_registry.py):
chunked prefill, left-padded batches == single prompts, sliding windows,
processors against transformers' own, beam search against exhaustive search and transformers."""

import itertools

import pytest
import torch

import tatlas
from tatlas.generate import (
    GenerationConfig, generate, min_p_filter, repetition_penalty, top_k_filter, top_p_filter,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return tatlas.create("llm", "tiny", vocab_size=64, dim=32, heads=4, kv_heads=2, mlp_hidden=48).eval()


def uncached_greedy(model, prompt, n):
    x = prompt.clone()
    for _ in range(n):
        x = torch.cat([x, model(x)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return x[:, prompt.shape[1]:]


def test_chunked_prefill_equals_whole(model, gen):
    tokens = torch.randint(0, 64, (2, 11), generator=gen)
    a = model.prefill(tokens, model.new_cache(2, 12))
    b = model.prefill(tokens, model.new_cache(2, 12), chunk=4)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_left_padded_batch_equals_single(model):
    prompts = [[3, 4, 5], [7, 8, 9, 10, 11, 12], [1]]
    cfg = GenerationConfig(max_new_tokens=8)
    batched = generate(model, prompts, cfg).as_lists()
    singles = [generate(model, [p], cfg).as_lists()[0] for p in prompts]
    assert batched == singles


def test_sliding_window_cache_equals_uncached(gen):
    torch.manual_seed(1)
    m = tatlas.create("llm", "tiny", vocab_size=64, dim=32, heads=4, kv_heads=2, mlp_hidden=48,
                      sliding_window=4).eval()
    prompt = torch.randint(0, 64, (1, 6), generator=gen)
    out = generate(m, prompt, GenerationConfig(max_new_tokens=10))
    assert out.tokens.tolist() == uncached_greedy(m, prompt, 10).tolist()
    full = m(torch.randint(0, 64, (1, 12), generator=gen))
    assert full.shape == (1, 12, 64)


@pytest.mark.parametrize("window", [None, 3, 16])
def test_a_whole_unpadded_prompt_takes_the_causal_path(window, gen, monkeypatch):
    """A prefill from slot 0 with no left padding passes no mask (SDPA's is_causal path, which skips
    the masked half): the same logits as the explicit mask; padded rows, a later chunk, one token and
    a window shorter than the prompt keep the mask."""
    import torch.nn.functional as F

    from tatlas.nn.cache import DecoderCache

    torch.manual_seed(2)
    m = tatlas.create("llm", "tiny", vocab_size=64, dim=32, heads=4, kv_heads=2, mlp_hidden=48,
                      sliding_window=window).eval()
    tokens = torch.randint(0, 64, (2, 9), generator=gen)
    masks = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention",
                        lambda *a, **kw: masks.append((kw.get("attn_mask"), kw.get("is_causal"))) or real(*a, **kw))
    with torch.no_grad():
        plain = m.prefill(tokens, m.new_cache(2, 12))
        took_causal = all(mask is None and causal for mask, causal in masks)
        masks.clear()
        with monkeypatch.context() as mp:
            mp.setattr(DecoderCache, "plain_causal", lambda self, input_pos: False)
            masked = m.prefill(tokens, m.new_cache(2, 12))
        assert masks and all(mask is not None for mask, _ in masks)
    assert took_causal == (window is None or window >= 9)
    torch.testing.assert_close(plain, masked, atol=1e-5, rtol=1e-5)

    cache = m.new_cache(2, 12)
    slots = torch.arange(9)
    assert cache.plain_causal(slots) and not cache.plain_causal(slots[3:]) and not cache.plain_causal(slots[:1])
    assert cache.mask_or_causal(slots) == (None, True)  # what ImageGPT, DT and Whisper's decoders ask
    cache.set_padding(torch.tensor([[True] * 9, [False] + [True] * 8]))
    assert not cache.plain_causal(slots)
    mask, causal = cache.mask_or_causal(slots)
    assert not causal and torch.equal(mask, cache.mask(slots))


def test_stop_tokens_and_streaming(model, gen):
    prompt = torch.randint(0, 64, (2, 4), generator=gen)
    free = generate(model, prompt, GenerationConfig(max_new_tokens=10)).tokens
    stop = int(free[0, 2])
    streamed = []
    out = generate(model, prompt, GenerationConfig(max_new_tokens=10, stop_tokens=(stop,), pad_token=63),
                   streamer=lambda t: streamed.append(t.clone()))
    first = free[0].tolist().index(stop)
    assert out.lengths[0] == first + 1
    assert out.as_lists(stop_tokens=(stop,))[0] == free[0, :first].tolist()
    assert torch.stack(streamed, 1).tolist() == out.tokens.tolist()
    if stop not in free[1].tolist():
        assert out.tokens[1].tolist() == free[1, : out.tokens.shape[1]].tolist()


def test_sampling_is_seeded_and_respects_top_k(model, gen):
    prompt = torch.randint(0, 64, (3, 4), generator=gen)
    cfg = GenerationConfig(max_new_tokens=10, temperature=1.0, top_k=1, seed=0)
    assert generate(model, prompt, cfg).tokens.tolist() == generate(model, prompt, GenerationConfig(max_new_tokens=10)).tokens.tolist()
    hot = GenerationConfig(max_new_tokens=10, temperature=5.0, seed=3)
    a, b = generate(model, prompt, hot).tokens, generate(model, prompt, hot).tokens
    assert a.tolist() == b.tolist()
    assert a.tolist() != generate(model, prompt, GenerationConfig(max_new_tokens=10, temperature=5.0, seed=4)).tokens.tolist()


def test_processors_match_transformers(gen):
    from transformers.generation.logits_process import (
        MinPLogitsWarper, RepetitionPenaltyLogitsProcessor, TopKLogitsWarper, TopPLogitsWarper,
    )

    logits = torch.randn(4, 50, generator=gen) * 3
    seen = torch.randint(0, 50, (4, 7), generator=gen)
    torch.testing.assert_close(repetition_penalty(logits, seen, 1.3), RepetitionPenaltyLogitsProcessor(1.3)(seen, logits.clone()))
    assert torch.equal(top_k_filter(logits, 5).isinf(), TopKLogitsWarper(5)(seen, logits.clone()).isinf())
    for p in (0.1, 0.5, 0.9):
        assert torch.equal(top_p_filter(logits, p).isinf(), TopPLogitsWarper(p)(seen, logits.clone()).isinf())
    for p in (0.05, 0.3):
        assert torch.equal(min_p_filter(logits, p).isinf(), MinPLogitsWarper(p)(seen, logits.clone()).isinf())
    padded = torch.cat([seen, torch.full((4, 3), -1)], 1)
    torch.testing.assert_close(repetition_penalty(logits, padded, 1.3), repetition_penalty(logits, seen, 1.3))


def test_beam_search_equals_exhaustive_search(model, gen):
    """With K >= V^(n-1) beams, beam search over n tokens is exhaustive."""
    m = tatlas.create("llm", "tiny", vocab_size=6, dim=16, heads=2, kv_heads=1, mlp_hidden=16).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(std=1.0, generator=gen)
    prompt = torch.tensor([[1, 2, 3]])
    out = generate(m, prompt, GenerationConfig(max_new_tokens=3, num_beams=36))
    best, best_score = None, -float("inf")
    with torch.no_grad():
        for seq in itertools.product(range(6), repeat=3):
            x = torch.cat([prompt, torch.tensor([seq])], 1)
            lp = m(x)[0, 2:5].log_softmax(-1)
            score = sum(lp[i, s].item() for i, s in enumerate(seq))
            if score > best_score:
                best, best_score = list(seq), score
    assert out.tokens[0].tolist() == best
    assert abs(out.scores[0].item() - best_score / 3) < 1e-4


def test_beam_search_matches_transformers(tmp_path, gen):
    from transformers import LlamaForCausalLM

    from parity import perturb_

    ours = tatlas.create("llm", "tiny", vocab_size=64, dim=32, heads=4, kv_heads=2, mlp_hidden=48)
    perturb_(ours, seed=1, std=0.3)
    tatlas.models.get_system("llm")  # registry loaded
    from tatlas.models.llm.convert import to_hf

    to_hf(ours, tmp_path / "hf")
    ref = LlamaForCausalLM.from_pretrained(tmp_path / "hf").eval()
    prompt = torch.randint(0, 64, (2, 5), generator=gen)
    for lp in (1.0, 0.6):
        hf = ref.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8, num_beams=4,
                          do_sample=False, length_penalty=lp, eos_token_id=None, pad_token_id=0)[:, 5:]
        mine = generate(ours.eval(), prompt, GenerationConfig(max_new_tokens=8, num_beams=4, length_penalty=lp)).tokens
        assert mine.tolist() == hf.tolist()


def test_beam_search_with_stop_token(model, gen):
    prompt = torch.randint(0, 64, (2, 4), generator=gen)
    out = generate(model, prompt, GenerationConfig(max_new_tokens=12, num_beams=3, stop_tokens=(5, 9)))
    for row, n in zip(out.tokens.tolist(), out.lengths.tolist(), strict=True):
        assert all(t not in (5, 9) for t in row[: n - 1])


@pytest.mark.slow
def test_compiled_decode_equals_eager(model, gen):
    prompt = torch.randint(0, 64, (2, 5), generator=gen)
    eager = generate(model, prompt, GenerationConfig(max_new_tokens=6))
    compiled = generate(model, prompt, GenerationConfig(max_new_tokens=6, compile=True))
    assert eager.tokens.tolist() == compiled.tokens.tolist()


@pytest.mark.parametrize("bad,msg", [
    (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"), (dict(temperature=-1.0), "temperature"),
    (dict(max_new_tokens=0), "max_new_tokens"), (dict(top_k=0), "top_k"), (dict(num_beams=0), "num_beams"),
    (dict(compile=True, static_cache=False), "compile"), (dict(min_p=2.0), "min_p"),
])
def test_bad_generation_config(bad, msg):
    with pytest.raises(ValueError, match=msg):
        GenerationConfig(**bad)


def test_bad_prompts(model):
    with pytest.raises(ValueError, match="at least one token"):
        generate(model, [[]], GenerationConfig())
    with pytest.raises(ValueError, match="exceeds the model"):
        generate(model, torch.zeros(1, 600, dtype=torch.long), GenerationConfig())


@pytest.mark.parametrize("lookahead", [1, 3, 5])
def test_speculative_decoding_returns_target_greedy(model, lookahead, gen):
    from tatlas.generate import speculative_generate

    prompt = torch.randint(0, 64, (1, 6), generator=gen)
    ref = generate(model, prompt, GenerationConfig(max_new_tokens=25)).tokens.tolist()
    weak = tatlas.create("llm", "tiny", vocab_size=64, dim=16, heads=2, kv_heads=1, mlp_hidden=24, layers=1).eval()
    close = tatlas.create("llm", "tiny", vocab_size=64, dim=32, heads=4, kv_heads=2, mlp_hidden=48).eval()
    close.load_state_dict(model.state_dict())
    with torch.no_grad():
        close.layers[1].mlp.down.weight.mul_(0.9)  # a draft that mostly, not always, agrees
    stats = {}
    for name, draft in (("weak", weak), ("close", close), ("self", model)):
        out, stats[name] = speculative_generate(model, draft, prompt, GenerationConfig(max_new_tokens=25),
                                                lookahead=lookahead)
        assert out.tokens.tolist() == ref, f"{name} draft changed the output"
    assert stats["self"].acceptance == 1.0 and stats["self"].target_passes < 25
    with pytest.raises(ValueError, match="greedy"):
        speculative_generate(model, weak, prompt, GenerationConfig(temperature=1.0))


def test_speculative_stops_at_stop_token(model, gen):
    from tatlas.generate import speculative_generate

    prompt = torch.randint(0, 64, (1, 6), generator=gen)
    free = generate(model, prompt, GenerationConfig(max_new_tokens=20)).tokens[0].tolist()
    stop = free[7]
    out, _ = speculative_generate(model, model, prompt, GenerationConfig(max_new_tokens=20, stop_tokens=(stop,)))
    assert out.tokens[0].tolist() == free[: free.index(stop) + 1]


def test_int8_weight_only_quantisation(gen):
    from tatlas.nn import Int8Linear, quantize_int8_

    torch.manual_seed(0)
    m = tatlas.create("llm", "tiny", tie_embeddings=True).eval()
    tokens = torch.randint(0, 259, (2, 16), generator=gen)
    with torch.no_grad():
        ref = m(tokens)
    q = quantize_int8_(m)
    assert isinstance(q.layers[0].attn.q, Int8Linear) and isinstance(q.layers[0].mlp.down, Int8Linear)
    assert q.lm_head.weight is q.embed.weight, "the tied head stays tied (not quantised)"
    with torch.no_grad():
        out = q(tokens)
    rel = ((out - ref).norm() / ref.norm()).item()
    assert rel < 0.02, f"int8 relative error {rel:.3g}"
    lin = torch.nn.Linear(64, 32)
    x = torch.randn(5, 64, generator=gen)
    torch.testing.assert_close(Int8Linear.from_linear(lin)(x), lin(x), atol=0.02, rtol=0.05)
    g = generate(q, tokens[:1, :4], GenerationConfig(max_new_tokens=5))
    assert g.tokens.shape == (1, 5)
