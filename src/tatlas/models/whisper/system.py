"""The ``whisper`` system's record (:class:`~tatlas.models.spec.System`)."""

from __future__ import annotations

import torch

from ..spec import System
from .config import PRESETS, WhisperConfig
from .convert import from_ct2, from_hf, from_openai
from .model import Whisper
from .task import train_task


def _sample(model: Whisper, gen: torch.Generator) -> dict:
    c = model.config
    mel = torch.randn(2, c.mels, c.n_frames, generator=gen)
    tokens = torch.randint(0, c.vocab_size, (2, 6), generator=gen)
    device = model.decoder.embed.weight.device
    return {"tokens": tokens.to(device), "mel": mel.to(device)}


SYSTEM = System(
    name="whisper",
    summary="Whisper: log-Mel encoder-decoder speech recognition, timestamps, long-form, real tiny.en weights",
    config_cls=WhisperConfig,
    model_cls=Whisper,
    presets=PRESETS,
    sample_input=_sample,
    hf_model_types={"whisper": from_hf},
    formats={"openai-whisper": from_openai, "ctranslate2": from_ct2},
    ct2_specs={"WhisperSpec": from_ct2},
    train_task=train_task,
    train_preset="tiny-speech",
    diagram=(
        "audio 16 kHz -> 30-s window -> log-Mel [mels, 3000]\n"
        "  encoder: conv3 + GELU -> conv3/2 + GELU -> + sinusoids -> [ LN -> MHA -> + -> LN -> MLP(GELU) -> + ] x L -> LN\n"
        "  decoder: [SOT, lang, task, (notimestamps)] tokens -> embed + learned positions ->\n"
        "     [ LN -> causal MHA (KV cache) -> + -> LN -> cross-attn to audio (K/V once per window) -> + ->\n"
        "       LN -> MLP -> + ] x L -> LN -> x @ embed^T -> next token (text, timestamps <|t.tt|>, <|endoftext|>)"
    ),
    idea=(
        'Train one encoder-decoder on 680,000 hours of weakly labelled audio from the web, with the task '
        "(language, transcribe or translate, timestamps or not) written as special tokens in the decoder's "
        'prompt. Scale and diversity replace careful datasets: the model transcribes unseen recordings robustly '
        'without fine-tuning, and its cross-attention, which reads the encoded Mel frames, shows where in the '
        'audio each word was heard.'
    ),
    paper='Radford et al. 2022, Robust Speech Recognition via Large-Scale Weak Supervision (arXiv:2212.04356)',
    question=(
        'How does the decoder know which task to do, and where in the network does the alignment between words '
        'and audio time live?'
    ),
    highlight=('cross_attn', 'conv1', 'conv2'),
)
