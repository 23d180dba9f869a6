"""InternVL equals transformers' ``InternVLForConditionalGeneration``: tiny random references (Qwen2
and Llama decoders, InternViT with and without QK-norm / RMS norms / a final norm) with every
parameter perturbed, saved with ``save_pretrained``, loaded through ``tatlas.load``; logits within
1e-4 with one and two images per prompt and with images of different tile counts in one batch; 20
greedy tokens identical; our export loaded back by transformers."""

from __future__ import annotations

import pytest
import torch
from parity import assert_close, perturb_, save_hf

import tatlas
from tatlas.generate import GenerationConfig, generate
from tatlas.models.internvl.convert import to_hf

IMG, VOCAB = 63, 64
TOKENS_PER_TILE = 4  # 16 px tiles, 4 px patches: a 4x4 grid, pixel-shuffled to 2x2


def _internvl(seed=0, text="qwen2", **vision):
    from transformers import InternVLConfig, InternVLForConditionalGeneration, LlamaConfig, Qwen2Config

    torch.manual_seed(seed)
    text_cls = Qwen2Config if text == "qwen2" else LlamaConfig
    text_cfg = text_cls(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, pad_token_id=0)
    vision_cfg = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=16,
                      patch_size=4, **vision)
    cfg = InternVLConfig(text_config=text_cfg.to_dict(), vision_config=vision_cfg, image_token_id=IMG,
                         image_seq_length=TOKENS_PER_TILE, **({} if text == "qwen2" else {"tie_word_embeddings": False}))
    return perturb_(InternVLForConditionalGeneration(cfg), seed=seed).eval()


def _prompt(gen, tiles_per_image, length=10):
    text = torch.randint(1, IMG, (length,), generator=gen).tolist()
    out, cut = [], length // (len(tiles_per_image) + 1)
    for i, n in enumerate(tiles_per_image):
        out += text[i * cut : (i + 1) * cut] + [IMG] * (n * TOKENS_PER_TILE)
    return out + text[len(tiles_per_image) * cut :]


def _left_pad(rows):
    width = max(map(len, rows))
    return (torch.tensor([[0] * (width - len(r)) + r for r in rows]),
            torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows]))


VARIANTS = {
    "qwen2": dict(),
    "llama+qk_norm+rms": dict(text="llama", use_qk_norm=True, norm_type="rms_norm"),
    "final_norm+bias": dict(use_mean_pooling=False, attention_bias=True, layer_scale_init_value=1.0),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("tiles", [[[1], [3]], [[2, 1], [5]]], ids=["one-image", "two-images"])
def test_internvl_logits_and_greedy(tmp_path, gen, variant, tiles):
    ref = _internvl(seed=len(variant), **VARIANTS[variant])
    ours = tatlas.load(save_hf(ref, tmp_path / "ivl"), system="internvl").eval()
    rows = [_prompt(gen, t) for t in tiles]  # rows with different tile counts: left-padded
    tokens, mask = _left_pad(rows)
    pixels = torch.randn(sum(map(sum, tiles)), 3, 16, 16, generator=gen)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        theirs = ref(input_ids=tokens, pixel_values=pixels, attention_mask=mask, position_ids=positions).logits
        mine = ours(input_ids=tokens, pixel_values=pixels, attention_mask=mask)
        assert_close(mine[mask.bool()], theirs[mask.bool()], atol=1e-4, what=f"internvl logits ({variant})")
    hf = ref.generate(input_ids=tokens, pixel_values=pixels, attention_mask=mask, max_new_tokens=20, min_new_tokens=20,
                      do_sample=False, eos_token_id=None, pad_token_id=0)[:, tokens.shape[1]:]
    out = generate(ours, tokens, GenerationConfig(max_new_tokens=20, static_cache=True), attention_mask=mask,
                   pixels=pixels).tokens
    assert out.tolist() == hf.tolist()


def test_export_loads_back_in_transformers_equal(tmp_path, gen):
    from transformers import AutoModelForImageTextToText

    ref = _internvl(seed=9, use_qk_norm=True)
    ours = tatlas.load(save_hf(ref, tmp_path / "ref"), system="internvl").eval()
    back = AutoModelForImageTextToText.from_pretrained(to_hf(ours, tmp_path / "ours")).eval()
    assert type(back) is type(ref)
    tokens = torch.tensor([_prompt(gen, [3])])
    pixels = torch.randn(3, 3, 16, 16, generator=gen)
    with torch.no_grad():
        assert_close(back(input_ids=tokens, pixel_values=pixels).logits, ref(input_ids=tokens, pixel_values=pixels).logits,
                     atol=1e-5, what="internvl exported and reloaded")
    reloaded = tatlas.load(tmp_path / "ours", system="internvl")
    for (k, a), (_, b) in zip(sorted(ours.state_dict().items()), sorted(reloaded.state_dict().items()), strict=True):
        assert torch.equal(a, b), k


def test_pixel_shuffle_matches_reference(gen):
    from transformers.models.internvl.modeling_internvl import InternVLModel

    from tatlas.nn import pixel_shuffle_tokens

    x = torch.randn(3, 8, 8, 12, generator=gen)
    assert torch.equal(pixel_shuffle_tokens(x, 0.5), InternVLModel.pixel_shuffle(None, x, 0.5))
    with pytest.raises(ValueError, match="must divide evenly"):
        pixel_shuffle_tokens(torch.randn(1, 5, 5, 4), 0.5)
