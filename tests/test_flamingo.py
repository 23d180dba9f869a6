"""The ``flamingo`` row's own behaviour: media-location masking, gates that start closed over a
frozen LM, image keys/values computed once per prompt and reused while decoding, chunked and
cached runs equal to one forward, beams, one-line errors, and ``tatlas generate --image ...
--prompt "<image>...<|endofchunk|><image>"`` on an IDEFICS folder with its tokenizer and on a
tatlas checkpoint with the byte-level one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from parity import perturb_
from PIL import Image
from typer.testing import CliRunner

import tatlas
from tatlas.cli.main import app
from tatlas.generate import GenerationConfig, generate
from tatlas.models.flamingo import PRESETS, Flamingo
from tatlas.nn import media_attention

runner = CliRunner()
IMG, EOC = PRESETS["tiny"].media_token_id, PRESETS["tiny"].eoc_token_id


def _model(preset="tiny", seed=0, std=0.1) -> Flamingo:
    torch.manual_seed(seed)
    return perturb_(Flamingo(PRESETS[preset]), seed=seed, std=std).eval()


def _prompt(gen, images=(0, 6), length=12):
    tokens = torch.randint(0, 256, (1, length), generator=gen)
    for i in images:
        tokens[0, i] = IMG
    return tokens


def test_media_attention_immediate_and_all():
    loc = torch.tensor([[False, True, False, True, False]])
    assert media_attention(loc, 2).long().tolist() == [[[0, 0], [1, 0], [1, 0], [0, 1], [0, 1]]]
    assert media_attention(loc, 2, immediate=False).long().tolist() == [[[0, 0], [1, 0], [1, 0], [1, 1], [1, 1]]]
    # a later chunk continues the count of an earlier one
    assert media_attention(torch.tensor([[False, False]]), 2, seen=torch.tensor([1])).long().tolist() == [[[1, 0]] * 2]


@pytest.mark.parametrize("preset", ["tiny", "tiny-idefics"])
def test_gates_start_closed_and_lm_is_frozen(preset):
    model = Flamingo(PRESETS[preset]).eval()
    assert all(not p.requires_grad for p in model.language_model.parameters())
    assert all(p.requires_grad for p in model.cross_layers.parameters())
    assert all(float(layer.attn_gate.detach().abs().max()) == 0 for layer in model.cross_layers)
    gen = torch.Generator().manual_seed(0)
    tokens = _prompt(gen)
    with torch.no_grad():
        seeing = model(tokens, pixels=torch.randn(1, 2, 3, 16, 16, generator=gen))
        lm = model.language_model(tokens.masked_fill(tokens == IMG, IMG))
    assert torch.equal(seeing, lm)  # tanh(0) = 0: the LM exactly as it was


def test_text_tokens_see_only_their_latest_image():
    model = _model()
    gen = torch.Generator().manual_seed(1)
    tokens, pixels = _prompt(gen), torch.randn(1, 2, 3, 16, 16, generator=gen)
    other = pixels.clone()
    other[0, 1] = torch.randn(3, 16, 16, generator=gen)  # change the second image only
    with torch.no_grad():
        a, b = model(tokens, pixels=pixels), model(tokens, pixels=other)
    assert torch.equal(a[:, :6], b[:, :6])  # before the second <image>: unchanged
    assert (a[:, 6:] - b[:, 6:]).abs().max() > 1e-3


def test_image_keys_values_computed_once_per_prompt():
    model = _model()
    gen = torch.Generator().manual_seed(2)
    tokens, pixels = _prompt(gen), torch.randn(1, 2, 3, 16, 16, generator=gen)
    calls = {"vision": 0, "kv": 0}
    model.vision.register_forward_hook(lambda *a: calls.__setitem__("vision", calls["vision"] + 1))
    for layer in model.cross_layers:
        project = layer.attn.project_kv

        def counted(*args, _project=project, **kw):
            calls["kv"] += 1
            return _project(*args, **kw)

        layer.attn.project_kv = counted
    out = generate(model, tokens, GenerationConfig(max_new_tokens=10), pixels=pixels).tokens
    assert out.shape == (1, 10)
    assert calls == {"vision": 1, "kv": len(model.cross_layers)}


def test_cached_chunked_and_decoded_equal_one_forward():
    model = _model()
    gen = torch.Generator().manual_seed(3)
    tokens, pixels = _prompt(gen, images=(1, 5, 9), length=14), torch.randn(1, 3, 3, 16, 16, generator=gen)
    with torch.no_grad():
        full = model(tokens, pixels=pixels)
        cache = model.new_cache(1, 20)
        chunked = model.prefill(tokens[:, :12], cache, chunk=5, pixels=pixels)
        step = [model.decode_step(tokens[:, i : i + 1], cache, torch.tensor([i])) for i in (12, 13)]
    torch.testing.assert_close(chunked, full[:, :12], atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.stack(step, 1), full[:, 12:], atol=1e-5, rtol=0)


def test_beams_and_batches_run():
    model = _model()
    gen = torch.Generator().manual_seed(4)
    rows = [_prompt(gen)[0].tolist(), _prompt(gen, images=(2,), length=7)[0].tolist()]
    pixels = torch.randn(2, 2, 3, 16, 16, generator=gen)
    greedy = generate(model, rows, GenerationConfig(max_new_tokens=6), pixels=pixels).tokens
    alone = generate(model, [rows[1]], GenerationConfig(max_new_tokens=6), pixels=pixels[1:]).tokens
    assert greedy[1].tolist() == alone[0].tolist()  # left padding changes nothing
    beams = generate(model, rows, GenerationConfig(max_new_tokens=6, num_beams=2), pixels=pixels).tokens
    assert beams.shape[0] == 2


def test_bad_inputs_are_one_line_errors():
    model = _model()
    gen = torch.Generator().manual_seed(5)
    tokens = _prompt(gen)
    cases = [
        (dict(pixels=torch.randn(1, 1, 3, 16, 16)), "2 <image> tokens"),
        (dict(), "no image was given"),
        (dict(pixels=torch.randn(1, 2, 3, 8, 8)), "pixels: expected"),
        (dict(pixels=torch.randn(1, 2, 3, 16, 16), image_attention_mask=torch.ones(1, 3, 2)), "image_attention_mask"),
    ]
    for kwargs, words in cases:
        with pytest.raises(ValueError, match=words) as err:
            model(tokens, **kwargs)
        assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------ the CLI
def _png(path, seed):
    Image.fromarray((np.random.default_rng(seed).random((20, 24, 3)) * 255).astype("uint8")).save(path)
    return path


def test_generate_cli_on_a_tatlas_checkpoint(tmp_path):
    model = _model(std=0.3)
    tatlas.save(model, tmp_path / "flamingo.safetensors")
    a, b = _png(tmp_path / "a.png", 0), _png(tmp_path / "b.png", 1)
    args = ["generate", "--model", str(tmp_path / "flamingo.safetensors"), "--image", str(a), "--image", str(b),
            "--prompt", "<image>A red cube.<|endofchunk|><image>", "--max-new-tokens", "8"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    from tatlas.jobs.llm import encode_with_images, load_text_model, prepare_images

    tm = load_text_model(tmp_path / "flamingo.safetensors")
    inputs = prepare_images(tm, [a, b])
    ids = encode_with_images(tm, "<image>A red cube.<|endofchunk|><image>", inputs.blocks, add_bos=False)
    assert ids == [IMG, *b"A red cube.", EOC, IMG]
    assert inputs.kwargs["pixels"].shape == (1, 2, 3, 16, 16)
    out = generate(tm.model, [ids], GenerationConfig(max_new_tokens=8, stop_tokens=(257, EOC)), **inputs.kwargs)
    expected = tm.tokenizer.decode(out.as_lists(stop_tokens=(257, EOC))[0])
    assert expected.strip() and res.output.startswith(expected.strip())
    bad = runner.invoke(app, args[:-4] + ["--prompt", "<image><image><image>", "--max-new-tokens", "2"])
    assert bad.exit_code != 0 and "3 image place(s)" in bad.output and "Traceback" not in bad.output


def test_generate_cli_on_an_idefics_folder_equals_transformers(tmp_path):
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    from transformers import IdeficsConfig, IdeficsForVisionText2Text

    words = "the a red blue cube ball . A is".split()
    specials = ["<unk>", "<s>", "</s>", "<fake_token_around_image>", "<image>"]
    vocab = {w: i for i, w in enumerate(specials[:3] + words + specials[3:])}
    torch.manual_seed(0)
    ref = IdeficsForVisionText2Text(IdeficsConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        use_resampler=True, vision_config=dict(embed_dim=16, image_size=16, patch_size=4, num_hidden_layers=1,
                                               num_attention_heads=2, intermediate_size=32),
        perceiver_config=dict(use_resampler=True, resampler_n_latents=4, resampler_depth=1, resampler_n_heads=2,
                              resampler_head_dim=8)))
    perturb_(ref, seed=1, std=0.3).eval().save_pretrained(tmp_path / "m")
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([AddedToken(s, special=True) for s in specials])
    tok.save(str(tmp_path / "m" / "tokenizer.json"))
    (tmp_path / "m" / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>", "add_bos_token": False}))
    a, b = _png(tmp_path / "a.png", 2), _png(tmp_path / "b.png", 3)
    prompt = "<image>A red cube .<image>A"
    res = runner.invoke(app, ["generate", "--model", str(tmp_path / "m"), "--image", str(a), "--image", str(b),
                              "--prompt", prompt, "--max-new-tokens", "6"])
    assert res.exit_code == 0, res.output
    from tatlas.jobs.llm import encode_with_images, load_text_model, prepare_images

    tm = load_text_model(tmp_path / "m")
    inputs = prepare_images(tm, [a, b])
    ids = encode_with_images(tm, prompt, inputs.blocks, add_bos=False)
    fake, img = vocab["<fake_token_around_image>"], vocab["<image>"]
    assert ids[:3] == [fake, img, fake]
    tokens = torch.tensor([ids])
    time = (tokens == img).long().cumsum(1)
    with torch.no_grad():
        out = ref.generate(input_ids=tokens, pixel_values=inputs.kwargs["pixels"], attention_mask=torch.ones_like(tokens),
                           image_attention_mask=(time[..., None] == torch.arange(1, 3)).long(), max_new_tokens=6,
                           do_sample=False, eos_token_id=vocab["</s>"], pad_token_id=0)[0, len(ids):].tolist()
    expected = tok.decode([t for t in out if t != vocab["</s>"]], skip_special_tokens=True)
    assert expected.strip() and expected.strip() in res.output
