"""Flamingo equals transformers' ``IdeficsForVisionText2Text`` (with the Perceiver resampler): tiny
random references with every parameter perturbed (the tanh gates included, which start at zero),
saved with ``save_pretrained`` and loaded through ``tatlas.load``; logits within 1e-4 for prompts
with 0, 1 and 3 images, through transformers' keyword inputs and through our own ``<image>``
token counting; 20 greedy tokens identical; a left-padded batch; our export loaded back."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from parity import assert_close, perturb_, save_hf

import tatlas
from tatlas.generate import GenerationConfig, generate
from tatlas.models.flamingo.convert import to_hf

VOCAB, IMG = 60, 61  # IDEFICS's <fake_token_around_image> 60 and <image> 61: its two additional embeddings


def _idefics(seed=0, **over):
    from transformers import IdeficsConfig, IdeficsForVisionText2Text

    torch.manual_seed(seed)
    kw = dict(vocab_size=VOCAB, additional_vocab_size=2, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
              num_attention_heads=4, cross_layer_interval=1, use_resampler=True, max_position_embeddings=128,
              vision_config=dict(embed_dim=16, image_size=16, patch_size=4, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=32),
              perceiver_config=dict(use_resampler=True, resampler_n_latents=4, resampler_depth=2, resampler_n_heads=2,
                                    resampler_head_dim=8))
    kw.update(over)
    return perturb_(IdeficsForVisionText2Text(IdeficsConfig(**kw)), seed=seed).eval()


def _prompt(gen, n_images, length=14):
    """Interleaved: ``<fake><image><fake> text ...`` per image, text between."""
    text = torch.randint(1, VOCAB, (length,), generator=gen).tolist()
    out, cut = text[:2], (length - 2) // max(n_images, 1)
    for i in range(n_images):
        out += [VOCAB, IMG, VOCAB] + text[2 + i * cut : 2 + (i + 1) * cut]
    return out if n_images else text


def _image_mask(tokens, n_images):
    """What IDEFICS's processor gives: each token sees the latest <image> at or before it."""
    time = (tokens == IMG).long().cumsum(dim=1)
    return (time[..., None] == torch.arange(1, max(n_images, 1) + 1)).long()  # [B, T, N]


@pytest.fixture(scope="module", params=["interval1", "interval2-vector-qknorm"])
def pair(request, tmp_path_factory):
    over = {} if request.param == "interval1" else dict(
        cross_layer_interval=2, alpha_type="vector", qk_layer_norms=True,
        perceiver_config=dict(use_resampler=True, resampler_n_latents=4, resampler_depth=2, resampler_n_heads=2,
                              resampler_head_dim=8, qk_layer_norms_perceiver=True))
    ref = _idefics(**over)
    folder = save_hf(ref, tmp_path_factory.mktemp("idefics") / "ref")
    ours = tatlas.load(folder).eval()
    ours.config = replace(ours.config, media_token_id=IMG)  # the folder has no tokenizer: name <image> here
    return ref, ours


@pytest.mark.parametrize("n_images", [0, 1, 3])
def test_logits_match(pair, n_images):
    ref, ours = pair
    gen = torch.Generator().manual_seed(n_images)
    tokens = torch.tensor([_prompt(gen, n_images)])
    pixels = torch.randn(1, max(n_images, 1), 3, 16, 16, generator=gen)
    mask = _image_mask(tokens, n_images)
    with torch.no_grad():
        expected = ref(input_ids=tokens, pixel_values=pixels, image_attention_mask=mask).logits
        hf_style = ours(input_ids=tokens, pixel_values=pixels, image_attention_mask=mask, attention_mask=torch.ones_like(tokens))
        counted = ours(tokens, pixels=pixels[:, :n_images] if n_images else None)
    assert_close(hf_style, expected, atol=1e-4, what=f"logits, {n_images} images, transformers' keywords")
    assert_close(counted, expected, atol=1e-4, what=f"logits, {n_images} images, <image> tokens counted")
    if n_images:  # the images reach the logits (the comparison is not blind to the cross-attention)
        with torch.no_grad():
            blind = ours(tokens.masked_fill(tokens == IMG, 1))
        assert (blind - expected).abs().max() > 1e-2


def test_greedy_tokens_match(pair):
    ref, ours = pair
    gen = torch.Generator().manual_seed(7)
    tokens = torch.tensor([_prompt(gen, 3)])
    pixels = torch.randn(1, 3, 3, 16, 16, generator=gen)
    with torch.no_grad():
        expected = ref.generate(input_ids=tokens, pixel_values=pixels, image_attention_mask=_image_mask(tokens, 3),
                                attention_mask=torch.ones_like(tokens), max_new_tokens=20, min_new_tokens=20,
                                do_sample=False, num_beams=1, pad_token_id=0, eos_token_id=None)[:, tokens.shape[1]:]
    got = generate(ours, tokens, GenerationConfig(max_new_tokens=20), pixels=pixels).tokens
    assert got.tolist() == expected.tolist()


def test_left_padded_batch(pair):
    ref, ours = pair
    gen = torch.Generator().manual_seed(3)
    rows = [_prompt(gen, 2, length=16), _prompt(gen, 1, length=8)]
    width = max(map(len, rows))
    tokens = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    attn = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    pixels = torch.randn(2, 2, 3, 16, 16, generator=gen)
    mask = _image_mask(tokens, 2)
    with torch.no_grad():
        expected = ref(input_ids=tokens, attention_mask=attn, pixel_values=pixels, image_attention_mask=mask).logits
        got = ours(input_ids=tokens, attention_mask=attn, pixel_values=pixels, image_attention_mask=mask)
    real = attn.bool()
    assert_close(got[real], expected[real], atol=1e-4, what="left-padded batch, real positions")


def test_export_loads_back_in_transformers(pair, tmp_path):
    from transformers import IdeficsForVisionText2Text

    _, ours = pair
    back = IdeficsForVisionText2Text.from_pretrained(to_hf(ours, tmp_path / "out")).eval()
    gen = torch.Generator().manual_seed(11)
    tokens = torch.tensor([_prompt(gen, 2)])
    pixels = torch.randn(1, 2, 3, 16, 16, generator=gen)
    with torch.no_grad():
        expected = back(input_ids=tokens, pixel_values=pixels, image_attention_mask=_image_mask(tokens, 2)).logits
        got = ours(tokens, pixels=pixels)
    assert_close(got, expected, atol=1e-4, what="our export, read by transformers")
    again = tatlas.load(tmp_path / "out")
    assert again.config.media_token_id == IMG  # kept beside the weights (no tokenizer in this folder)
