"""Decoding a batch of 30-s windows for long-form transcription (:mod:`.transcribe`): temperature
fallback (Radford et al. 2022, §4.5; openai-whisper's ``decode_with_fallback``) and language
identification from a file's first window."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ...generate.whisper.decode import WindowDecoder
from ...models.whisper.decoding import DecodingResult, audio_features, tokenizer_for
from .options import TranscribeOptions

if TYPE_CHECKING:
    from ...models.whisper.model import Whisper
    from ...models.whisper.tokenizer import WhisperTokenizer

__all__ = ["decode_with_fallback", "detect_languages", "language_of", "needs_fallback"]


def needs_fallback(result: DecodingResult, options: TranscribeOptions) -> bool:
    """Too repetitive or too improbable, and not silence."""
    o = options
    bad = (o.compression_ratio_threshold is not None and result.compression_ratio > o.compression_ratio_threshold) or (
        o.logprob_threshold is not None and result.avg_logprob < o.logprob_threshold)
    silence = (o.no_speech_threshold is not None and result.no_speech_prob > o.no_speech_threshold
               and o.logprob_threshold is not None and result.avg_logprob < o.logprob_threshold)
    return bad and not silence


def decode_with_fallback(
    model: Whisper, audio: Tensor, options: TranscribeOptions, *, prompts: Sequence[Sequence[int]],
    languages: Sequence[str | None], tokenizer: WhisperTokenizer | None = None,
    generator: torch.Generator | None = None, seeds: Sequence[int] | None = None, compile: bool = False,
) -> list[DecodingResult]:
    """Decode windows ``audio [B, S, C]`` at the first temperature; those that need it again at the
    next, and so on (beam search only at temperature 0, ``best_of`` samples only above).
    Sampling draws from ``generator`` (None: torch's global one), or, with ``seeds`` (one per
    window), from a generator per window and temperature: the same whatever the batch."""
    results: list[DecodingResult | None] = [None] * audio.shape[0]
    todo = list(range(audio.shape[0]))
    for t in options.temperatures:
        if t > 0:
            opts = replace(options.decode, temperature=t, beam_size=None, patience=None, prompt=None)
        else:
            opts = replace(options.decode, temperature=t, best_of=None, prompt=None)
        decoder = WindowDecoder(model, opts, tokenizer=tokenizer, generator=generator, compile=compile)
        index = torch.tensor(todo, device=audio.device)
        gens = None
        if seeds is not None and t > 0:
            gens = [torch.Generator(device=audio.device).manual_seed(zlib.crc32(f"{seeds[i]}:{t}".encode()))
                    for i in todo]
        out = decoder.run(audio.index_select(0, index) if len(todo) < audio.shape[0] else audio,
                          prompts=[prompts[i] for i in todo], languages=[languages[i] for i in todo], generators=gens)
        for i, r in zip(todo, out, strict=True):
            results[i] = r
        todo = [i for i, r in zip(todo, out, strict=True) if needs_fallback(r, options)]
        if not todo:
            break
    return results  # type: ignore[return-value]


def language_of(model: Whisper, mel: Tensor) -> str:
    """The language detected in one window ``mel [mels, frames]`` (for a file with no speech in it)."""
    tokenizer = tokenizer_for(model, language=None, task="transcribe")
    tokens, _ = WindowDecoder(model, tokenizer=tokenizer).detect_language(audio_features(model, mel[None]))
    codes = dict(zip(tokenizer.all_language_tokens, tokenizer.all_language_codes, strict=True))
    return codes[int(tokens[0])]


def detect_languages(model: Whisper, windows, features: Tensor, tokenizer: WhisperTokenizer) -> None:
    """Set the language of files that have none yet from their first window (as openai-whisper:
    the first 30 s of the padded spectrogram, which is the first decoding window unless the audio is
    shorter or clipped)."""
    rows = [(k, st, w) for k, (_, st, w) in enumerate(windows) if st.language is None]
    if not rows:
        return
    full = [w.seek == 0 and w.size == st.window_frames for _, st, w in rows]
    reuse = [features[k] for (k, _, _), f in zip(rows, full, strict=True) if f]
    others = [st.language_window() for (_, st, _), f in zip(rows, full, strict=True) if not f]
    extra = iter(audio_features(model, torch.stack(others).to(features.device))) if others else iter(())
    reuse_it = iter(reuse)
    audio = torch.stack([next(reuse_it) if f else next(extra) for f in full])
    tokens, _ = WindowDecoder(model, tokenizer=tokenizer).detect_language(audio)
    codes = dict(zip(tokenizer.all_language_tokens, tokenizer.all_language_codes, strict=True))
    for (_, st, _), t in zip(rows, tokens.tolist(), strict=True):
        st.language = codes[t]
