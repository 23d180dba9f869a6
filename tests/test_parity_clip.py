"""Parity of the ``clip`` row with transformers' ``CLIPModel`` and open_clip's ``CLIP`` (tiny random,
every parameter re-randomised), loaded through tatlas' own converters from the files users have:
a ``save_pretrained`` folder, an open_clip state dict (``torch.save``) with its
``open_clip_config.json``, and an OpenAI-style TorchScript archive. Exports go back the other way."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import CLIPConfig as HFCLIPConfig
from transformers import CLIPModel

import tatlas
import tatlas.models.clip.system  # noqa: F401  (registers "clip")
from parity import assert_close, perturb_, save_hf
from tatlas.io import CheckpointError
from tatlas.models.clip.convert import from_open_clip, to_hf, to_open_clip
from test_clip_tokenizer import import_open_clip

EMBED_ATOL, LOGIT_ATOL = 1e-5, 1e-4
VOCAB, CTX = 99, 16


def hf_clip(act: str = "quick_gelu", eos: int = 2) -> CLIPModel:
    common = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, hidden_act=act)
    config = HFCLIPConfig(
        text_config=dict(**common, vocab_size=VOCAB, max_position_embeddings=CTX, eos_token_id=eos),
        vision_config=dict(**common, image_size=32, patch_size=8),
        projection_dim=16,
    )
    return perturb_(CLIPModel(config).eval())


def tokens_with_eos(gen: torch.Generator, eos: int, *, batch: int = 3, after_eos: int = 0) -> torch.Tensor:
    """Rows ``[SOT-ish ids ..., EOS, padding]`` with the EOS at different positions. ``after_eos``:
    the padding value (0 like CLIP's tokenizer, or a larger id than EOS to tell the pooling modes apart)."""
    ids = torch.randint(1, min(eos, VOCAB - 1), (batch, CTX), generator=gen)
    for row, end in enumerate((CTX - 1, 5, 9)[:batch]):
        ids[row, end] = eos
        ids[row, end + 1 :] = after_eos
    return ids


@pytest.mark.parametrize("act,eos,after", [("quick_gelu", 2, 0), ("gelu", 50, 97)],
                         ids=["quick_gelu-legacy_argmax", "gelu-first_eos"])
def test_hf_clip_embeddings_and_logits_equal(act, eos, after, tmp_path, gen):
    torch.manual_seed(0)
    ref = hf_clip(act, eos)
    ours = tatlas.load(save_hf(ref, tmp_path / "hf"), system="clip").eval()
    assert ours.config.text.pool == ("argmax" if eos == 2 else "eos")
    pixels = torch.randn(2, 3, 32, 32, generator=gen)
    if eos == 2:  # legacy HF pools at the largest id: make EOS the largest one
        tokens = tokens_with_eos(gen, VOCAB - 1)
    else:  # ids larger than EOS after it: argmax pooling would pick another position
        tokens = tokens_with_eos(gen, eos, after_eos=after)
        assert not torch.equal(tokens.argmax(1), (tokens == eos).int().argmax(1))
    with torch.no_grad():
        r_img = ref.get_image_features(pixel_values=pixels).pooler_output
        r_txt = ref.get_text_features(input_ids=tokens).pooler_output
        r_out = ref(input_ids=tokens, pixel_values=pixels)
        o_img, o_txt = ours.encode_image(pixels), ours.encode_text(tokens)
        logits = ours(pixels, tokens)
    assert_close(o_img, r_img, atol=EMBED_ATOL, what="image embedding")
    assert_close(o_txt, r_txt, atol=EMBED_ATOL, what="text embedding")
    assert_close(logits.logits_per_image, r_out.logits_per_image, atol=LOGIT_ATOL, what="logits per image")
    assert_close(logits.logits_per_text, r_out.logits_per_text, atol=LOGIT_ATOL, what="logits per text")


def test_export_to_hf_loads_back_in_transformers(tmp_path, gen):
    torch.manual_seed(0)
    for eos in (2, 50):
        ours = tatlas.load(save_hf(hf_clip(eos=eos), tmp_path / f"src{eos}"), system="clip").eval()
        with torch.no_grad():
            perturb_(ours, seed=1)  # weights of our own, not the ones just read
        back = CLIPModel.from_pretrained(to_hf(ours, tmp_path / f"out{eos}")).eval()
        pixels = torch.randn(2, 3, 32, 32, generator=gen)
        tokens = tokens_with_eos(gen, VOCAB - 1 if eos == 2 else eos, after_eos=0 if eos == 2 else 97)
        with torch.no_grad():
            out, ref = ours(pixels, tokens), back(input_ids=tokens, pixel_values=pixels)
        assert_close(out.logits_per_image, ref.logits_per_image, atol=LOGIT_ATOL, what=f"exported logits (eos {eos})")


# ---------------------------------------------------------------------------------------------
# open_clip / OpenAI
# ---------------------------------------------------------------------------------------------


def open_clip_model(*, quick_gelu: bool, width: int = 32, head_width: int = 8, heads: int = 4):
    open_clip = import_open_clip()
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    vision = CLIPVisionCfg(layers=2, width=width, head_width=head_width, mlp_ratio=4.0, patch_size=8, image_size=32)
    text = CLIPTextCfg(context_length=CTX, vocab_size=VOCAB, width=width, heads=heads, layers=2)
    model = CLIP(16, vision, text, quick_gelu=quick_gelu, output_dict=True)
    assert open_clip is not None
    return perturb_(model.eval()), vision, text


def _compare_open_clip(ours, ref, gen) -> dict[str, float]:
    pixels = torch.randn(2, 3, 32, 32, generator=gen)
    tokens = tokens_with_eos(gen, VOCAB - 1)  # open_clip pools at the argmax id
    with torch.no_grad():
        r = ref(pixels, tokens)
        logits_ref = r["logit_scale"] * r["image_features"] @ r["text_features"].t()
        out = ours(pixels, tokens)
        diffs = {
            "image": assert_close(ours.encode_image(pixels), ref.encode_image(pixels), atol=EMBED_ATOL, what="image embedding"),
            "text": assert_close(ours.encode_text(tokens), ref.encode_text(tokens), atol=EMBED_ATOL, what="text embedding"),
            "logits": assert_close(out.logits_per_image, logits_ref, atol=LOGIT_ATOL, what="logits per image"),
        }
    assert_close(out.logits_per_text, logits_ref.t(), atol=LOGIT_ATOL, what="logits per text")
    return diffs


@pytest.mark.parametrize("quick_gelu", [True, False], ids=["quickgelu", "gelu"])
def test_open_clip_embeddings_and_logits_equal(quick_gelu, tmp_path, gen):
    torch.manual_seed(0)
    ref, vision, text = open_clip_model(quick_gelu=quick_gelu)
    path = tmp_path / "epoch_1.pt"
    # an open_clip training checkpoint: DDP's "module." prefix under "state_dict"
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, path)
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": {
        "embed_dim": 16, "quick_gelu": quick_gelu, "vision_cfg": vars(vision), "text_cfg": vars(text)}}))
    ours = tatlas.load(path, format="open_clip", system="clip").eval()
    assert ours.config.vision.act == ("quick_gelu" if quick_gelu else "gelu")
    _compare_open_clip(ours, ref, gen)


def test_open_clip_without_config_file_takes_overrides(tmp_path, gen):
    torch.manual_seed(0)
    ref, _, _ = open_clip_model(quick_gelu=True)
    path = tmp_path / "weights.pt"
    torch.save(ref.state_dict(), path)
    with pytest.raises(ValueError, match="must be a positive int, got 0"):  # 64-wide heads assumed: 32 // 64
        tatlas.load(path, format="open_clip")
    config, state = from_open_clip(path, act="quick_gelu", vision_head_width=8, text_heads=4)
    ours = tatlas.create("clip", "tiny", embed_dim=config.embed_dim, vision=config.vision, text=config.text).eval()
    tatlas.io.load_state_strict(ours, state)
    _compare_open_clip(ours, ref, gen)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.filterwarnings("ignore:.torch.load. received a zip file")
def test_openai_torchscript_archive_and_export_to_open_clip(tmp_path, gen):
    """OpenAI's released ``.pt`` files are TorchScript archives: made here by tracing an
    open_clip model with OpenAI's shapes (64-wide heads), read without running its code."""
    torch.manual_seed(0)
    ref, _, _ = open_clip_model(quick_gelu=True, width=128, head_width=64, heads=2)
    pixels = torch.randn(1, 3, 32, 32, generator=gen)
    traced = torch.jit.trace_module(ref, {"encode_image": (pixels,)}, check_trace=False)
    traced.save(str(tmp_path / "ViT-tiny.pt"))
    with pytest.raises(CheckpointError, match="TorchScript"):  # the safe loader refuses it ...
        tatlas.io.load_torch_file(tmp_path / "ViT-tiny.pt")
    ours = tatlas.load(tmp_path / "ViT-tiny.pt", format="openai-clip", system="clip").eval()  # ... ours reads it
    assert ours.config.vision.heads == 2 and ours.config.vision.act == "quick_gelu"
    _compare_open_clip(ours, ref, gen)
    # and back: our weights as an open_clip state dict
    with torch.no_grad():
        perturb_(ours, seed=3)
    ref.load_state_dict(to_open_clip(ours), strict=True)
    _compare_open_clip(ours, ref, gen)


def test_other_architectures_are_clear_errors(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(vocab_size=99, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=4, num_key_value_heads=2)).save_pretrained(tmp_path / "llama")
    import tatlas.models.llm.system  # noqa: F401

    with pytest.raises(CheckpointError, match="checkpoint is for system 'llm', expected 'clip'"):
        tatlas.load(tmp_path / "llama", system="clip")
    torch.save({"model.embed_tokens.weight": torch.zeros(3, 2)}, tmp_path / "llama.pt")
    with pytest.raises(CheckpointError, match=r"llama.pt: not a open_clip ViT CLIP state dict .*model.embed_tokens"):
        tatlas.load(tmp_path / "llama.pt", format="open_clip")
    torch.save({"visual.layer1.0.conv1.weight": torch.zeros(1)}, tmp_path / "rn50.pt")
    with pytest.raises(CheckpointError, match="ResNet CLIP image tower"):
        tatlas.load(tmp_path / "rn50.pt", format="openai-clip")
    (tmp_path / "not_a_checkpoint.pt").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="not_a_checkpoint.pt: cannot be read safely"):
        tatlas.load(tmp_path / "not_a_checkpoint.pt", format="open_clip")
