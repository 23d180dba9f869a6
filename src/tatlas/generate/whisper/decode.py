"""Decoding batches of 30-second windows with Whisper, token for token openai-whisper's
``whisper.decoding.decode``: the Whisper-specific rules (prompt format, logit filters, options)
come from :mod:`tatlas.models.whisper.decoding`, the search from :mod:`tatlas.generate.search`.

The audio's cross-attention keys/values are computed once per window and the self-attention
keys/values cached per token (:class:`tatlas.nn.DecoderCache`, preallocated); beams and "best of
n" samples are rows of one batch, and so are the windows of different files, each with its own
previous-text prompt (left-padded) and language.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ...models.whisper.decoding import (
    SECONDS_PER_TOKEN,
    ApplyTimestampRules,
    DecodingOptions,
    DecodingResult,
    SuppressBlank,
    SuppressTokens,
    audio_features,
    compression_ratio,
    suppress_token_ids,
    tokenizer_for,
)
from ..loop import search
from ..search import PatienceBeamSearch, Sampler, rank

if TYPE_CHECKING:
    from ...models.whisper.model import Whisper
    from ...models.whisper.tokenizer import WhisperTokenizer


def _as_float(logits: Tensor, tokens: Tensor) -> Tensor:
    return logits.float()


def _generated_only(rule, begin: int):
    """A Whisper logit rule (``apply(logits, sampled_tokens)``, in place) as a filter of the
    decoding loop, which passes every token so far."""

    def apply(logits: Tensor, tokens: Tensor) -> Tensor:
        rule.apply(logits, tokens[:, begin:])
        return logits

    return apply


class WindowDecoder:
    """Decodes batches of windows with one set of :class:`DecodingOptions` (openai-whisper's
    ``DecodingTask``). ``compile``: a compiled decode step (fixed shapes: the cache always spans
    the whole text context)."""

    def __init__(self, model: Whisper, options: DecodingOptions = DecodingOptions(), *,
                 tokenizer: WhisperTokenizer | None = None, generator: torch.Generator | None = None,
                 compile: bool = False) -> None:
        self.model, self.options, self.compile = model, options.check(), compile
        self.tokenizer = tokenizer or tokenizer_for(model, language=options.language, task=options.task)
        tok, c = self.tokenizer, model.config
        if tok.n_vocab != c.vocab_size:
            raise ValueError(f"tokenizer has {tok.n_vocab} ids, the model {c.vocab_size}")
        self.n_ctx = c.text_ctx
        self.sample_len = options.sample_len or c.text_ctx // 2
        self.group = options.beam_size or options.best_of or 1
        if options.beam_size is not None:
            self.search = PatienceBeamSearch(beam_size=options.beam_size, eot=tok.eot, patience=options.patience)
        else:
            self.search = Sampler(stop_tokens=(tok.eot,), pad_token=tok.eot, temperature=options.temperature,
                                  generator=generator, track_logprobs=True)
        self.filters: list = []
        if options.suppress_blank:
            self.filters.append(SuppressBlank(tok))
        if options.suppress_tokens:
            self.filters.append(SuppressTokens(suppress_token_ids(tok, options.suppress_tokens)))
        if not options.without_timestamps:
            index = None
            if options.max_initial_timestamp:
                index = round(options.max_initial_timestamp / SECONDS_PER_TOKEN)
            self.filters.append(ApplyTimestampRules(tok, index))

    # -------------------------------------------------------------------------------- prompts

    def _text_tokens(self, text: str | Sequence[int] | None) -> list[int]:
        if isinstance(text, str):
            return self.tokenizer.encode(" " + text.strip())
        return list(text or ())

    def sot_sequence(self, language: str | None) -> list[int]:
        tok = self.tokenizer
        seq = list(tok.sot_sequence)
        if tok.multilingual and language is not None:
            seq[1] = tok.to_language_token(language)
        if self.options.without_timestamps:
            seq.append(tok.no_timestamps)
        return seq

    def initial_tokens(self, prompt: str | Sequence[int] | None, language: str | None) -> list[int]:
        """``[<|startofprev|> prompt] sot_sequence [prefix]``, the prompt cut to its last
        ``n_ctx // 2 - 1`` tokens, the prefix to its last ``n_ctx // 2 - sample_len`` (as
        openai-whisper does, where 0 keeps all)."""
        tokens = self.sot_sequence(language)
        prefix = self._text_tokens(self.options.prefix)
        if prefix:
            tokens += prefix[-(self.n_ctx // 2 - self.sample_len):]
        prompt_tokens = self._text_tokens(prompt)
        if prompt_tokens:
            tokens = [self.tokenizer.sot_prev, *prompt_tokens[-(self.n_ctx // 2 - 1):], *tokens]
        return tokens

    # -------------------------------------------------------------------------------- decoding

    @torch.inference_mode()
    def detect_language(self, audio: Tensor) -> tuple[Tensor, list[dict[str, float]]]:
        """``audio [B, S, C]`` -> the likeliest language token ``[B]`` and every language's probability."""
        cache = self.model.new_cache(audio.shape[0], 1, dtype=audio.dtype, device=audio.device)
        self.model.fill_cross_cache(cache, audio)
        return self._languages(cache, audio.device)

    def _languages(self, cache, device: torch.device) -> tuple[Tensor, list[dict[str, float]]]:
        """Language probabilities after ``<|startoftranscript|>`` (written to the cache's slot 0)."""
        tok = self.tokenizer
        if not tok.multilingual:
            raise ValueError("this model has no language tokens (English-only): it cannot identify languages")
        rows = cache.batch
        sot = torch.full((rows, 1), tok.sot, dtype=torch.long, device=device)
        logits = self.model.decode_step(sot, cache, torch.zeros(1, dtype=torch.long, device=sot.device)).float()
        ids = torch.tensor(tok.all_language_tokens, device=logits.device)
        keep = torch.full_like(logits, float("-inf"))
        keep[:, ids] = logits[:, ids]
        best = keep.argmax(dim=-1)
        probs = keep.softmax(dim=-1)[:, ids].tolist()
        return best, [dict(zip(tok.all_language_codes, row, strict=True)) for row in probs]

    @torch.inference_mode()
    def run(self, audio: Tensor, *, prompts: Sequence[str | Sequence[int] | None] | None = None,
            languages: Sequence[str | None] | None = None,
            generators: Sequence[torch.Generator] | None = None) -> list[DecodingResult]:
        """Decode ``audio [B, S, C]`` (encoder outputs). ``prompts``/``languages``: one per row,
        replacing the options' ``prompt``/``language`` (None: detect). ``generators``: one per row
        for sampling, so that a window's samples do not depend on the batch it is in."""
        model, opts, tok, group = self.model, self.options, self.tokenizer, self.group
        if generators is not None and isinstance(self.search, Sampler):
            self.search.generators = list(generators)
        n_audio = audio.shape[0]
        device = audio.device
        prompts = list(prompts) if prompts is not None else [opts.prompt] * n_audio
        langs = list(languages) if languages is not None else [opts.language] * n_audio
        if len(prompts) != n_audio or len(langs) != n_audio:
            raise ValueError(f"prompts/languages: expected {n_audio} each, got {len(prompts)} and {len(langs)}")
        if not tok.multilingual:
            langs = ["en" if lang is None else lang for lang in langs]
        rows = [self.initial_tokens(p, lang or "en") for p, lang in zip(prompts, langs, strict=True)]
        t0 = max(len(r) for r in rows)
        if t0 >= self.n_ctx:
            raise ValueError(f"prompt of {t0} tokens leaves no room in the decoder's {self.n_ctx} positions")
        n = n_audio * group
        max_len = self.n_ctx if self.compile else min(self.n_ctx, t0 + self.sample_len)
        cache = model.new_cache(n_audio, max_len, dtype=audio.dtype, device=device)  # one row per window
        model.fill_cross_cache(cache, audio)

        language_probs: list[dict[str, float] | None] = [None] * n_audio
        if tok.multilingual and (opts.task == "lang_id" or any(lang is None for lang in langs)):
            best, probs = self._languages(cache, device)
            codes = tok.all_language_codes
            detected = [codes[tok.all_language_tokens.index(int(t))] for t in best.tolist()]
            language_probs = list(probs)
            if opts.task == "lang_id":
                return [DecodingResult(language=d, language_probs=p) for d, p in zip(detected, probs, strict=True)]
            for i, lang in enumerate(langs):
                if lang is None:
                    langs[i] = detected[i]
                    rows[i] = self.initial_tokens(prompts[i], detected[i])

        # the windows' prompts, left-padded (the part from <|startoftranscript|> on has one length),
        # run once per window; then a row per beam or sample
        prompt = torch.full((n_audio, t0), tok.eot, dtype=torch.long, device=device)
        mask = torch.zeros(n_audio, t0, dtype=torch.bool)
        for i, r in enumerate(rows):
            prompt[i, t0 - len(r) :] = torch.tensor(r, device=device)
            mask[i, t0 - len(r) :] = True
        if not bool(mask.all()):
            cache.set_padding(mask.to(device))
        sot_slot = t0 - (len(rows[0]) - rows[0].index(tok.sot))
        logits = model.decode_step(prompt[:, : sot_slot + 1], cache, torch.arange(sot_slot + 1, device=device))
        no_speech = logits.float().softmax(dim=-1)[:, tok.no_speech].tolist()
        if sot_slot + 1 < t0:
            logits = model.decode_step(prompt[:, sot_slot + 1 :], cache, torch.arange(sot_slot + 1, t0, device=device))
        if group > 1:  # the prompt ran once per window; now a row per beam or sample
            cache = cache.repeat_rows(group, slots=t0)
            logits = logits.repeat_interleave(group, dim=0)
        tokens = torch.full((n, t0 + self.sample_len + 1), tok.eot, dtype=torch.long, device=device)
        tokens[:, :t0] = prompt.repeat_interleave(group, dim=0)
        step = torch.compile(model.decode_step, dynamic=False) if self.compile else model.decode_step
        self.search.reset(n_audio)
        filters = [_as_float] + [_generated_only(f, t0) for f in self.filters]
        cur, sum_logprobs = search(step, cache, logits, tokens, begin=t0, strategy=self.search, filters=filters,
                                   steps=min(self.sample_len, self.n_ctx + 1 - t0), tune_threads=not self.compile)

        candidates = self.search.finalize(tokens, cur, sum_logprobs, begin=t0, groups=n_audio)
        chosen = rank(candidates, opts.length_penalty)
        results = []
        for i, (group_candidates, j) in enumerate(zip(candidates, chosen, strict=True)):
            ids, logprob = group_candidates[j]
            text = tok.decode(ids).strip()
            results.append(DecodingResult(
                language=langs[i], tokens=ids, text=text, avg_logprob=logprob / (len(ids) + 1),
                no_speech_prob=no_speech[i], temperature=opts.temperature, compression_ratio=compression_ratio(text),
                language_probs=language_probs[i],
            ))
        return results


def detect_language(model: Whisper, mel: Tensor, tokenizer: WhisperTokenizer | None = None,
                    ) -> tuple[Tensor, list[dict[str, float]] | dict[str, float]]:
    """The spoken language of ``mel [B, mels, frames]`` (or ``[mels, frames]``, or encoder outputs):
    the likeliest language token after ``<|startoftranscript|>`` and the probability of each."""
    single = mel.dim() == 2
    audio = audio_features(model, mel[None] if single else mel)
    tokens, probs = WindowDecoder(model, tokenizer=tokenizer).detect_language(audio)
    return (tokens[0], probs[0]) if single else (tokens, probs)


def decode(model: Whisper, mel: Tensor, options: DecodingOptions = DecodingOptions(), *,
           tokenizer: WhisperTokenizer | None = None, prompts: Sequence[str | Sequence[int] | None] | None = None,
           languages: Sequence[str | None] | None = None, generator: torch.Generator | None = None,
           compile: bool = False) -> DecodingResult | list[DecodingResult]:
    """Decode 30-s windows: ``mel [B, mels, 2 * audio_ctx]`` (or one ``[mels, frames]``, or encoder
    outputs ``[B, audio_ctx, C]``) -> one :class:`DecodingResult` per window."""
    single = mel.dim() == 2
    with torch.inference_mode():
        audio = audio_features(model, mel[None] if single else mel)
    results = WindowDecoder(model, options, tokenizer=tokenizer, generator=generator, compile=compile).run(
        audio, prompts=prompts, languages=languages)
    return results[0] if single else results
