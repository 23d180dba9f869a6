"""Parity of the ``whisper`` row with transformers' ``WhisperForConditionalGeneration`` and
openai-whisper's ``Whisper`` (tiny random, every parameter re-randomised), loaded through tatlas'
own converters from a ``save_pretrained`` folder and an openai ``.pt`` file, and the exports back."""

import pytest
import torch
import whisper
from transformers import WhisperConfig as HFWhisperConfig
from transformers import WhisperForConditionalGeneration

import tatlas
from parity import assert_close, perturb_, save_hf
from tatlas.generate import GenerationConfig, generate
from tatlas.io import CheckpointError
from tatlas.models.whisper.convert import to_hf, to_openai

DIMS = dict(n_mels=80, n_audio_ctx=16, n_audio_state=32, n_audio_head=4, n_audio_layer=2, n_vocab=51864,
            n_text_ctx=24, n_text_state=32, n_text_head=4, n_text_layer=2)
SOT = [50257, 50362]  # <|startoftranscript|> <|notimestamps|> of the English vocabulary


@pytest.fixture(scope="module")
def hf_reference():
    config = HFWhisperConfig(vocab_size=51864, d_model=32, encoder_layers=2, decoder_layers=2,
                             encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                             decoder_ffn_dim=128, num_mel_bins=80, max_source_positions=16, max_target_positions=24)
    torch.manual_seed(0)
    model = perturb_(WhisperForConditionalGeneration(config), seed=1).eval()
    with torch.no_grad():  # the encoder positions are fixed sinusoids in the released models (not perturbed)
        from tatlas.nn import sinusoidal_positions

        model.model.encoder.embed_positions.weight.copy_(sinusoidal_positions(16, 32))
    return model


@pytest.fixture(scope="module")
def openai_reference():
    torch.manual_seed(0)
    model = whisper.model.Whisper(whisper.model.ModelDimensions(**DIMS))
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    perturb_(model, seed=2)
    return model.eval(), buffers


def _greedy_reference(step, n: int) -> list[list[int]]:
    """Greedy tokens by recomputing the whole sequence each step (no cache)."""
    tokens = torch.tensor([SOT, SOT])
    with torch.no_grad():
        for _ in range(n):
            tokens = torch.cat([tokens, step(tokens)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return tokens[:, len(SOT):].tolist()


def _ours_greedy(model, audio, n: int) -> list[list[int]]:
    out = generate(model, torch.tensor([SOT, SOT]), GenerationConfig(max_new_tokens=n, static_cache=True), audio=audio)
    return out.tokens.tolist()


def test_hf_encoder_logits_and_greedy_tokens(hf_reference, tmp_path, gen):
    ours = tatlas.load(save_hf(hf_reference, tmp_path / "hf"), system="whisper").eval()
    mel = torch.randn(2, 80, 32, generator=gen)
    tokens = torch.randint(0, 51864, (2, 12), generator=gen)
    with torch.no_grad():
        ref_enc = hf_reference.model.encoder(mel).last_hidden_state
        assert_close(ours.embed_audio(mel), ref_enc, atol=1e-4, what="whisper encoder (HF)")
        ref = hf_reference(input_features=mel, decoder_input_ids=tokens).logits
        assert_close(ours(tokens, mel), ref, atol=1e-4, what="whisper logits (HF)")
        audio = ours.embed_audio(mel)
    ref_tokens = _greedy_reference(lambda t: hf_reference(input_features=mel, decoder_input_ids=t).logits, 20)
    assert len({x for row in ref_tokens for x in row}) > 2, "reference greedy tokens are near constant"
    assert _ours_greedy(ours, audio, 20) == ref_tokens


def test_openai_encoder_logits_and_greedy_tokens(openai_reference, tmp_path, gen):
    reference, buffers = openai_reference
    path = tmp_path / "tiny.pt"
    torch.save({"dims": DIMS, "model_state_dict": reference.state_dict()}, path)
    ours = tatlas.load(path, format="openai-whisper").eval()
    mel = torch.randn(2, 80, 32, generator=gen)
    tokens = torch.randint(0, 51864, (2, 12), generator=gen)
    with torch.no_grad():
        assert_close(ours.embed_audio(mel), reference.embed_audio(mel), atol=1e-4, what="whisper encoder (openai)")
        assert_close(ours(tokens, mel), reference(mel, tokens), atol=1e-4, what="whisper logits (openai)")
        audio = ours.embed_audio(mel)
        ref_audio = reference.embed_audio(mel)
    ref_tokens = _greedy_reference(lambda t: reference.logits(t, ref_audio), 20)
    assert len({x for row in ref_tokens for x in row}) > 2
    assert _ours_greedy(ours, audio, 20) == ref_tokens
    # openai's default alignment heads (the last half of the decoder) are ours without released ones
    assert ours.config.heads_for_alignment == tuple(tuple(ij) for ij in buffers["alignment_heads"].to_dense().nonzero().tolist())


def test_exports_load_in_the_references(tmp_path, gen):
    model = perturb_(tatlas.create("whisper", "tiny-random"), seed=3).eval()
    with torch.no_grad():  # the key-bias slice is zero in every checkpoint we read; keep it so
        for layer in [*model.encoder.layers, *model.decoder.layers]:
            layer.attn.qkv.bias[32:64] = 0
    c = model.config
    mel = torch.randn(1, 80, c.n_frames, generator=gen)
    tokens = torch.randint(0, c.vocab_size, (1, 10), generator=gen)
    with torch.no_grad():
        ours = model(tokens, mel)
        hf = WhisperForConditionalGeneration.from_pretrained(to_hf(model, tmp_path / "hf")).eval()
        assert_close(hf(input_features=mel, decoder_input_ids=tokens).logits, ours, atol=1e-4, what="HF export")
        ckpt = torch.load(to_openai(model, tmp_path / "m.pt"), weights_only=True)
        ref = whisper.model.Whisper(whisper.model.ModelDimensions(**ckpt["dims"]))
        ref.load_state_dict(ckpt["model_state_dict"])
        assert_close(ref.eval()(mel, tokens), ours, atol=1e-4, what="openai export")
    back = tatlas.load(tmp_path / "hf")
    assert back.config == model.config.__class__(**{**model.config.__dict__, "alignment_heads": c.heads_for_alignment})


def test_bad_checkpoints_are_one_line_errors(tmp_path, hf_reference):
    path = tmp_path / "x.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not an openai-whisper checkpoint"):
        tatlas.load(path, format="openai-whisper")
    folder = save_hf(hf_reference, tmp_path / "hf")
    state = whisper.model.Whisper(whisper.model.ModelDimensions(**DIMS)).state_dict()
    state["encoder.positional_embedding"] = torch.zeros(16, 32)
    torch.save({"dims": DIMS, "model_state_dict": state}, path)
    with pytest.raises(CheckpointError, match="not Whisper's sinusoids"):
        tatlas.load(path, format="openai-whisper")
    assert folder.exists()
