"""Parity of the ``imagegpt`` row with transformers' ``ImageGPTForCausalImageModeling`` (tiny random,
every parameter re-randomised), loaded through tatlas' own converter from a ``save_pretrained``
folder, and the export back to a folder transformers loads."""

import json

import pytest
import torch
from transformers import ImageGPTConfig, ImageGPTForCausalImageModeling

import tatlas
from parity import assert_close, perturb_, save_hf
from tatlas.generate import GenerationConfig, generate
from tatlas.models.imagegpt.convert import to_hf

SOS = 16  # vocab 17 = 16 colour clusters + SOS


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    config = ImageGPTConfig(vocab_size=17, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return perturb_(ImageGPTForCausalImageModeling(config), seed=1).eval()


def _prompt(gen, batch=2, length=5):
    # colours 1..15 only: 0 is the pad token given to transformers' generate, never in the prompt
    pixels = torch.randint(1, SOS, (batch, length - 1), generator=gen)
    return torch.cat([torch.full((batch, 1), SOS), pixels], dim=1)


def test_logits_and_greedy_tokens_equal_reference(reference, tmp_path, gen):
    folder = save_hf(reference, tmp_path / "hf")
    clusters = torch.rand(16, 3, generator=gen) * 2 - 1  # HF keeps them in [-1, 1]
    (folder / "preprocessor_config.json").write_text(json.dumps({"clusters": clusters.tolist(), "size": 8}))
    ours = tatlas.load(folder, system="imagegpt").eval()
    torch.testing.assert_close(ours.palette.clusters, (clusters + 1) / 2)

    tokens = torch.cat([torch.full((2, 1), SOS), torch.randint(0, SOS, (2, 63), generator=gen)], dim=1)
    with torch.no_grad():
        diff = assert_close(ours(tokens), reference(tokens).logits, atol=1e-4, what="imagegpt logits")
    prompt = _prompt(gen)
    mine = generate(ours, prompt, GenerationConfig(max_new_tokens=32, static_cache=True)).tokens
    with torch.no_grad():
        ref = reference.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=32, min_new_tokens=32,
                                 do_sample=False, num_beams=1, pad_token_id=0, eos_token_id=None)
    ref = ref[:, prompt.shape[1]:]
    assert len(set(ref.flatten().tolist())) > 1, "reference greedy tokens are constant: the test proves little"
    assert mine.tolist() == ref.tolist(), "imagegpt: greedy tokens differ"
    print(f"imagegpt: max abs logit diff {diff:.2e}")


def test_folder_without_clusters_gets_default_palette(reference, tmp_path):
    ours = tatlas.load(save_hf(reference, tmp_path / "hf"), system="imagegpt")
    assert ours.palette.clusters.shape == (16, 3)


def test_palette_that_does_not_fit_vocab_is_an_error(reference, tmp_path):
    folder = save_hf(reference, tmp_path / "hf")
    (folder / "preprocessor_config.json").write_text(json.dumps({"clusters": [[0.0, 0.0, 0.0]] * 15}))
    with pytest.raises(ValueError, match=r"clusters of shape \[15, 3\] do not fit the model: expected \[16, 3\]"):
        tatlas.load(folder)


def test_export_to_hf_round_trip(tmp_path, gen):
    ours = perturb_(tatlas.create("imagegpt", "tiny", image_size=8, dim=32, layers=2, heads=4), seed=2).eval()
    ours.palette.set_(torch.rand(16, 3, generator=gen))
    folder = to_hf(ours, tmp_path / "out")
    ref = ImageGPTForCausalImageModeling.from_pretrained(folder).eval()
    tokens = torch.cat([torch.full((2, 1), SOS), torch.randint(0, SOS, (2, 40), generator=gen)], dim=1)
    with torch.no_grad():
        assert_close(ours(tokens), ref(tokens).logits, atol=1e-4, what="exported ImageGPT logits")
    back = tatlas.load(folder)
    torch.testing.assert_close(back.palette.clusters, ours.palette.clusters)
    torch.testing.assert_close(back.state_dict(), ours.state_dict())
