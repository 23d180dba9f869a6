"""LLaVA-1.5 and LLaVA-NeXT equal transformers' ``LlavaForConditionalGeneration`` and
``LlavaNextForConditionalGeneration``: tiny random references with every parameter perturbed,
saved with ``save_pretrained``, loaded through ``tatlas.load``; logits within 1e-4 with one and two
images per prompt and with images of different sizes in one batch; 20 greedy tokens identical
through our static-cache ``generate``; and our export loaded back by transformers."""

from __future__ import annotations

import pytest
import torch
from parity import assert_close, perturb_, save_hf

import tatlas
from tatlas.generate import GenerationConfig, generate
from tatlas.models.llava.convert import to_hf

IMG = 63  # the <image> token id (inside the vocabulary, as the hub's checkpoints have it)
VOCAB = 64


def _configs(**over):
    from transformers import CLIPVisionConfig, LlamaConfig

    text = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=512, pad_token_id=0)
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
                              image_size=16, patch_size=4)
    return dict(text_config=text.to_dict(), vision_config=vision.to_dict(), image_token_index=IMG, **over)


def _llava(seed=0, **over):
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(seed)
    return perturb_(LlavaForConditionalGeneration(LlavaConfig(**_configs(**over))), seed=seed).eval()


def _llava_next(seed=0):
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration

    torch.manual_seed(seed)
    cfg = LlavaNextConfig(**_configs(image_grid_pinpoints=[[16, 32], [32, 16], [32, 32], [16, 48], [48, 16]]))
    return perturb_(LlavaNextForConditionalGeneration(cfg), seed=seed).eval()


def _prompt(gen, n_images, per_image, length=10):
    text = torch.randint(1, IMG, (length,), generator=gen).tolist()
    out, cut = [], length // (n_images + 1)
    for i in range(n_images):
        out += text[i * cut : (i + 1) * cut] + [IMG] * per_image[i]
    return out + text[n_images * cut :]


def _left_pad(rows):
    width = max(map(len, rows))
    tokens = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return tokens, mask


def _hf_greedy(ref, n=20, **inputs):
    out = ref.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[:, inputs["input_ids"].shape[1]:]


@pytest.mark.parametrize("images_per_prompt", [1, 2])
def test_llava15_logits_and_greedy(tmp_path, gen, images_per_prompt):
    ref = _llava(seed=images_per_prompt)
    ours = tatlas.load(save_hf(ref, tmp_path / "llava"), system="llava").eval()
    assert ours.config.feature_layer == -2 and ours.config.grid_pinpoints is None
    rows = [_prompt(gen, images_per_prompt, [16] * images_per_prompt) for _ in range(2)]
    tokens = torch.tensor(rows)
    pixels = torch.randn(2 * images_per_prompt, 3, 16, 16, generator=gen)
    with torch.no_grad():
        theirs = ref(input_ids=tokens, pixel_values=pixels).logits
        assert_close(ours(tokens, pixels=pixels), theirs, atol=1e-4, what="llava logits")
        # transformers' keyword names, and an object-free tensor result
        assert_close(ours(input_ids=tokens, pixel_values=pixels, attention_mask=torch.ones_like(tokens)), theirs,
                     atol=1e-4, what="llava logits (HF keywords)")
    hf = _hf_greedy(ref, input_ids=tokens, pixel_values=pixels, attention_mask=torch.ones_like(tokens))
    out = generate(ours, tokens, GenerationConfig(max_new_tokens=20, static_cache=True), pixels=pixels).tokens
    assert out.tolist() == hf.tolist()


@pytest.mark.parametrize("strategy,layer", [("full", -1), ("default", 1)])
def test_llava_feature_layer_and_strategy(tmp_path, gen, strategy, layer):
    ref = _llava(seed=5, vision_feature_select_strategy=strategy, vision_feature_layer=layer)
    ours = tatlas.load(save_hf(ref, tmp_path / "llava"), system="llava").eval()
    n = 17 if strategy == "full" else 16
    tokens = torch.tensor([_prompt(gen, 1, [n])])
    pixels = torch.randn(1, 3, 16, 16, generator=gen)
    with torch.no_grad():
        assert_close(ours(tokens, pixels=pixels), ref(input_ids=tokens, pixel_values=pixels).logits, atol=1e-4,
                     what=f"llava logits ({strategy}, layer {layer})")


def _next_inputs(ours, gen, sizes, images_per_prompt):
    """Prompts whose images have the given original sizes, in transformers' padded pixel layout."""
    counts = ours.tiles_per_image(torch.tensor(sizes))
    pixels = torch.zeros(len(sizes), max(counts), 3, 16, 16)
    for i, n in enumerate(counts):
        pixels[i, :n] = torch.randn(n, 3, 16, 16, generator=gen)
    tokens_per = [ours.image_token_count(tuple(s)) for s in sizes]
    rows, k = [], 0
    for n in images_per_prompt:
        rows.append(_prompt(gen, n, tokens_per[k : k + n]))
        k += n
    tokens, mask = _left_pad(rows)
    return tokens, mask, pixels, torch.tensor(sizes)


@pytest.mark.parametrize("images_per_prompt,sizes", [
    ([1, 1], [[16, 40], [37, 13]]),  # different sizes (and token counts) in one batch, left-padded
    ([2, 1], [[16, 16], [50, 20], [9, 31]]),  # two images in one prompt
])
def test_llava_next_logits_and_greedy(tmp_path, gen, images_per_prompt, sizes):
    ref = _llava_next(seed=len(sizes))
    ours = tatlas.load(save_hf(ref, tmp_path / "next"), system="llava").eval()
    assert ours.config.grid_pinpoints is not None and ours.image_newline is not None
    tokens, mask, pixels, image_sizes = _next_inputs(ours, gen, sizes, images_per_prompt)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # generation's positions: padding skipped
    with torch.no_grad():
        theirs = ref(input_ids=tokens, pixel_values=pixels, image_sizes=image_sizes, attention_mask=mask,
                     position_ids=positions).logits
        mine = ours(input_ids=tokens, pixel_values=pixels, image_sizes=image_sizes, attention_mask=mask)
        real = mask.bool()
        assert_close(mine[real], theirs[real], atol=1e-4, what="llava-next logits")
    hf = _hf_greedy(ref, input_ids=tokens, pixel_values=pixels, image_sizes=image_sizes, attention_mask=mask)
    out = generate(ours, tokens, GenerationConfig(max_new_tokens=20, static_cache=True), attention_mask=mask,
                   pixels=pixels, image_sizes=image_sizes).tokens
    assert out.tolist() == hf.tolist()


@pytest.mark.parametrize("kind", ["llava", "llava_next"])
def test_export_loads_back_in_transformers_equal(tmp_path, gen, kind):
    from transformers import AutoModelForImageTextToText

    ref = _llava(seed=7) if kind == "llava" else _llava_next(seed=7)
    ours = tatlas.load(save_hf(ref, tmp_path / "ref"), system="llava").eval()
    back = AutoModelForImageTextToText.from_pretrained(to_hf(ours, tmp_path / "ours")).eval()
    assert type(back) is type(ref)
    sizes = [[20, 40]] if kind == "llava_next" else None
    n = 16 if sizes is None else ours.image_token_count((20, 40))
    tokens = torch.tensor([_prompt(gen, 1, [n])])
    kw = {"pixel_values": torch.randn(1, 3, 16, 16, generator=gen)}
    if sizes is not None:
        kw = {"pixel_values": torch.randn(1, ours.tiles_per_image(torch.tensor(sizes))[0], 3, 16, 16, generator=gen),
              "image_sizes": torch.tensor(sizes)}
    with torch.no_grad():
        assert_close(back(input_ids=tokens, **kw).logits, ref(input_ids=tokens, **kw).logits, atol=1e-5,
                     what=f"{kind} exported and reloaded")
    reloaded = tatlas.load(tmp_path / "ours", system="llava")
    for (k, a), (_, b) in zip(sorted(ours.state_dict().items()), sorted(reloaded.state_dict().items()), strict=True):
        assert torch.equal(a, b), k


def test_image_token_mismatch_is_one_clear_line(tmp_path, gen):
    model = tatlas.create("llava", "tiny").eval()
    tokens = torch.tensor([[1, 2] + [258] * 10 + [3]])
    with pytest.raises(ValueError, match=r"the image\(s\) give 64 image tokens but the prompt holds 10 \(id 258\)"):
        model(tokens, pixels=torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="holds 10 image tokens .* but no image was given"):
        model(tokens)
    with pytest.raises(ValueError, match="pixels: expected"):
        model(tokens, pixels=torch.zeros(1, 3, 30, 30))
    nxt = tatlas.create("llava", "tiny-next").eval()
    with pytest.raises(ValueError, match="needs image_sizes"):
        nxt(tokens, pixels=torch.zeros(1, 3, 32, 32))
