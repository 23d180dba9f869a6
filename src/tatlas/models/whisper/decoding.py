"""What is Whisper-specific in decoding a 30-second window (Radford et al. 2022, §2.3 "Multitask
Format" and §4.5 "Strategies for Reliable Long-form Transcription"), as openai-whisper's
``whisper.decoding``: the options, the results, the prompt format and the logit filters. The loop
that drives them (prefill, decode steps, search) is :mod:`tatlas.generate.whisper`.

The decoder is prompted with ``[<|startofprev|> previous text] <|startoftranscript|> <|lang|>
<|task|> [<|notimestamps|>] [prefix]`` and continues until ``<|endoftext|>``:

- the audio's cross-attention keys/values are computed once per window and the self-attention
  keys/values cached per token (:class:`tatlas.nn.DecoderCache`, preallocated); beams and "best
  of n" samples are rows of one batch, and so are the windows of different files, each with its
  own previous-text prompt (left-padded) and language;
- logit filters, vectorised over the rows: no blank or end at the first step
  (:class:`SuppressBlank`), never the non-speech symbols and task tokens (:class:`SuppressTokens`),
  and the timestamp grammar (:class:`ApplyTimestampRules`): timestamps come in pairs, never
  decrease, the first token is a timestamp no later than ``max_initial_timestamp``, and when the
  timestamps together are likelier than any single text token, a timestamp comes next;
- search (the shared decoding loop, :func:`tatlas.generate.loop.search`): greedy or sampled
  (:class:`tatlas.generate.search.Sampler`) or beam search with
  patience (:class:`~tatlas.generate.search.PatienceBeamSearch`), ranked by summed
  log-probability over the length (or GNMT's length penalty);
- the no-speech probability is read at the ``<|startoftranscript|>`` position; the language,
  when not given, is the likeliest language token after ``<|startoftranscript|>``.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor


if TYPE_CHECKING:
    from .model import Whisper
    from .tokenizer import WhisperTokenizer

SECONDS_PER_TOKEN = 0.02  # one encoder position: 2 Mel frames of 10 ms (the timestamp step)
TASKS = ("transcribe", "translate", "lang_id")


@dataclass(frozen=True, kw_only=True)
class DecodingOptions:
    """How to decode a window (the fields and meanings of openai-whisper's ``DecodingOptions``).

    ``temperature`` 0 is greedy (or beam search with ``beam_size``); above 0, ``best_of``
    independent samples. ``length_penalty`` None ranks by summed log-probability over the length,
    else GNMT's ``((5 + length) / 6) ** alpha``. ``prompt``: previous text (string or token ids)
    after ``<|startofprev|>``; ``prefix``: the start of this window's text. ``suppress_tokens``:
    ids (or a comma-separated string) never sampled, ``-1`` standing for the non-speech symbols.
    ``language`` None: detected per window (multilingual models; English-only ones use "en").
    ``sample_len`` defaults to half the decoder's context."""

    task: str = "transcribe"
    language: str | None = None
    temperature: float = 0.0
    sample_len: int | None = None
    best_of: int | None = None
    beam_size: int | None = None
    patience: float | None = None
    length_penalty: float | None = None
    prompt: str | Sequence[int] | None = None
    prefix: str | Sequence[int] | None = None
    suppress_tokens: str | Sequence[int] | None = "-1"
    suppress_blank: bool = True
    without_timestamps: bool = False
    max_initial_timestamp: float | None = 1.0

    def __post_init__(self) -> None:
        bad = _bad

        if self.task not in TASKS:
            raise bad(f"task must be one of {TASKS}, got {self.task!r}")
        if self.temperature < 0:
            raise bad(f"temperature must be >= 0, got {self.temperature}")
        for name in ("beam_size", "best_of", "sample_len"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise bad(f"{name} must be >= 1, got {value}")
        if self.length_penalty is not None and not 0 <= self.length_penalty <= 1:
            raise bad(f"length_penalty (alpha) must be in [0, 1], got {self.length_penalty}")


    def check(self) -> DecodingOptions:
        """The combinations one decoding cannot take (a transcription's options may hold both
        ``beam_size`` and ``best_of``: it uses one or the other per temperature)."""
        if self.beam_size is not None and self.best_of is not None:
            raise _bad("beam_size and best_of can't be given together")
        if self.temperature == 0 and self.best_of is not None:
            raise _bad("best_of needs sampling (temperature > 0)")
        if self.patience is not None and self.beam_size is None:
            raise _bad("patience needs beam_size")
        return self


def _bad(what: str) -> ValueError:
    return ValueError(f"DecodingOptions: {what}")


@dataclass(frozen=True)
class DecodingResult:
    """One window's decoding: ``tokens`` (text and timestamp ids, without the prompt and the end
    token), ``text``, ``avg_logprob`` (summed log-probability over ``len(tokens) + 1``, the end
    token included), ``no_speech_prob``, the ``temperature`` used and the zlib
    ``compression_ratio`` of the text (repetition loops compress well)."""

    language: str
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    avg_logprob: float = float("nan")
    no_speech_prob: float = float("nan")
    temperature: float = float("nan")
    compression_ratio: float = float("nan")
    language_probs: dict[str, float] | None = None


def compression_ratio(text: str) -> float:
    """UTF-8 bytes over zlib-compressed bytes."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data))


def tokenizer_for(model: Whisper, *, language: str | None = None, task: str = "transcribe") -> WhisperTokenizer:
    """The tokenizer of ``model``'s vocabulary (English-only or multilingual, with its languages)."""
    from .tokenizer import get_tokenizer

    c = model.config
    return get_tokenizer(c.multilingual, num_languages=c.num_languages or 99, language=language if c.multilingual else None,
                         task=("transcribe" if task == "lang_id" else task) if c.multilingual else None)


# ------------------------------------------------------------------------------------------ logit filters
# Each filter masks ``logits [N, V]`` in place given the tokens generated so far ``generated [N, L]``.


class SuppressBlank:
    """No blank (a lone space) and no end token as the first generated token."""

    def __init__(self, tokenizer: WhisperTokenizer) -> None:
        self.ids = [*tokenizer.encode(" "), tokenizer.eot]

    def apply(self, logits: Tensor, generated: Tensor) -> None:
        if generated.shape[1] == 0:
            logits[:, self.ids] = float("-inf")


class SuppressTokens:
    def __init__(self, ids: Sequence[int]) -> None:
        self.ids = list(ids)
        self._index: Tensor | None = None

    def apply(self, logits: Tensor, generated: Tensor) -> None:
        if self._index is None or self._index.device != logits.device:
            self._index = torch.tensor(self.ids, dtype=torch.long, device=logits.device)
        logits.index_fill_(1, self._index, float("-inf"))


class ApplyTimestampRules:
    """The timestamp grammar of Whisper's output, per row:

    - ``<|notimestamps|>`` never (it is a prompt token);
    - after a timestamp that closes a pair (or opens the text), a text token or the end; after a
      timestamp that follows text, a timestamp or the end;
    - timestamps never decrease, and a segment's end is later than its start;
    - the first token is a timestamp no later than ``max_initial_index`` steps;
    - if all timestamps together are likelier than the likeliest text token, a timestamp.
    """

    def __init__(self, tokenizer: WhisperTokenizer, max_initial_index: int | None) -> None:
        self.begin, self.eot, self.no_timestamps = tokenizer.timestamp_begin, tokenizer.eot, tokenizer.no_timestamps
        self.max_initial_index = max_initial_index

    def apply(self, logits: Tensor, generated: Tensor) -> None:
        tb, inf = self.begin, float("-inf")
        logits[:, self.no_timestamps] = inf
        n = generated.shape[1]
        if n == 0:
            logits[:, :tb] = inf
            if self.max_initial_index is not None:
                logits[:, tb + self.max_initial_index + 1 :] = inf
        else:
            is_ts = generated >= tb  # [N, L]
            last = is_ts[:, -1]
            penultimate = is_ts[:, -2] if n >= 2 else torch.ones_like(last)
            logits[:, tb:].masked_fill_((last & penultimate)[:, None], inf)  # a pair closed: text next
            closing = last & ~penultimate
            logits[:, : self.eot].masked_fill_(closing[:, None], inf)  # a pair open: no text
            # timestamps are non-decreasing, so the last one is the largest
            newest = torch.where(is_ts, generated, -1).amax(dim=1)  # [N], -1 when none yet
            bound = newest + (~closing).long()  # forbid [tb, bound): equal allowed only to close a pair
            ts_ids = torch.arange(tb, logits.shape[1], device=logits.device)
            logits[:, tb:].masked_fill_((newest >= 0)[:, None] & (ts_ids[None, :] < bound[:, None]), inf)
        logprobs = F.log_softmax(logits.float(), dim=-1)
        timestamp_mass = logprobs[:, tb:].logsumexp(dim=-1)
        best_text = logprobs[:, :tb].amax(dim=-1)
        logits[:, :tb].masked_fill_((timestamp_mass > best_text)[:, None], inf)


def suppress_token_ids(tokenizer: WhisperTokenizer, suppress: str | Sequence[int] | None) -> list[int]:
    """``suppress_tokens`` as ids (``-1``: the non-speech symbols), plus the task and prompt tokens
    and ``<|nospeech|>`` (its probability is read, never sampled)."""
    if isinstance(suppress, str):
        ids = [int(t) for t in suppress.split(",") if t.strip()]
    else:
        ids = [int(t) for t in suppress or ()]
    if -1 in ids:
        ids = [t for t in ids if t >= 0] + list(tokenizer.non_speech_tokens)
    ids += [tokenizer.transcribe, tokenizer.translate, tokenizer.sot, tokenizer.sot_prev, tokenizer.sot_lm,
            tokenizer.no_speech]
    return sorted(set(ids))


# ------------------------------------------------------------------------------------------ the decoder


def audio_features(model: Whisper, mel: Tensor) -> Tensor:
    """``mel [B, mels, frames]`` -> encoder output ``[B, audio_ctx, C]``; encoder outputs pass through."""
    c = model.config
    if mel.dim() == 3 and tuple(mel.shape[1:]) == (c.audio_ctx, c.audio_dim):
        return mel
    weight = model.decoder.embed.weight
    return model.embed_audio(mel.to(device=weight.device, dtype=weight.dtype))


# ------------------------------------------------------------------------------------------ transcripts


@dataclass
class Word:
    word: str
    start: float
    end: float
    probability: float


@dataclass
class Segment:
    """A stretch of text between two timestamps (seconds from the start of the audio)."""

    id: int
    seek: int  # the Mel frame its window started at
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    words: list[Word] | None = None
