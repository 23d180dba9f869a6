"""Word-level timestamps from Whisper's cross-attention (the method of openai-whisper's
``whisper.timing``; Radford et al. 2022 release notes, after Kürzinger et al. 2020's CTC
segmentation idea of aligning by dynamic time warping).

A few cross-attention heads of the decoder (the model's ``alignment_heads``) look at the audio
position a text token is spoken at. For a window's text, teacher-forced after
``<|startoftranscript|> … <|notimestamps|>``:

1. take those heads' attention weights over the window's audio positions (renormalised to the
   positions that hold audio), standardise each head over the tokens, median-filter along time
   (width 7), average the heads;
2. align tokens to time by dynamic time warping on the negated weights (a monotonic path that
   collects the most attention);
3. a word starts at the time its first token's row of the path starts; split the tokens into
   words (:meth:`WhisperTokenizer.split_to_word_tokens`), merge punctuation into the neighbouring
   words, and clip implausibly long words at sentence and segment boundaries.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


if TYPE_CHECKING:
    from .model import Whisper
    from .tokenizer import WhisperTokenizer
    from .decoding import Segment

TOKENS_PER_SECOND = 50  # encoder positions per second (20 ms each)
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
SENTENCE_END_MARKS = ".。!！?？"


@dataclass
class WordTiming:
    word: str
    tokens: list[int]
    start: float
    end: float
    probability: float


def median_filter(x: Tensor, width: int) -> Tensor:
    """Median over a sliding window of odd ``width`` along the last dimension of ``x [*, T]``
    (reflect-padded, so the output has the input's shape); inputs not longer than ``width // 2``
    pass through."""
    if width <= 0 or width % 2 == 0:
        raise ValueError(f"median filter width: expected a positive odd number, got {width}")
    pad = width // 2
    if x.shape[-1] <= pad:
        return x
    shape = x.shape
    x = F.pad(x.reshape(-1, 1, shape[-1]), (pad, pad), mode="reflect")  # [N, 1, T + 2 pad]
    return x.unfold(-1, width, 1).sort(dim=-1).values[..., pad].reshape(shape)


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dynamic time warping of ``cost [N, M]``: the monotonic path from ``(0, 0)`` to ``(N-1, M-1)``
    of least summed cost, as ``(rows, columns)`` index arrays. Ties prefer the horizontal step,
    then the vertical one, over the diagonal, as openai-whisper's kernel does; the accumulated
    costs are float32 like its. Each anti-diagonal is one vectorised step."""
    x = np.asarray(cost, dtype=np.float64)
    n, m = x.shape
    acc = np.full((n + 1, m + 1), np.inf, dtype=np.float32)
    acc[0, 0] = 0
    trace = np.full((n + 1, m + 1), -1, dtype=np.int8)
    for d in range(2, n + m + 1):  # cells with i + j == d
        i = np.arange(max(1, d - m), min(n, d - 1) + 1)
        j = d - i
        c0, c1, c2 = acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]
        step = np.where((c0 < c1) & (c0 < c2), 0, np.where((c1 < c0) & (c1 < c2), 1, 2)).astype(np.int8)
        best = np.where(step == 0, c0, np.where(step == 1, c1, c2))
        acc[i, j] = x[i - 1, j - 1] + best.astype(np.float64)
        trace[i, j] = step
    trace[0, :] = 2
    trace[:, 0] = 1
    i, j = n, m
    path = []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        t = trace[i, j]
        if t == 0:
            i, j = i - 1, j - 1
        elif t == 1:
            i -= 1
        else:
            j -= 1
    out = np.array(path[::-1]).reshape(-1, 2)
    return out[:, 0], out[:, 1]


@torch.inference_mode()
def find_alignment(
    model: Whisper, tokenizer: WhisperTokenizer, text_tokens: list[int], audio: Tensor, num_frames: int, *,
    medfilt_width: int = 7, qk_scale: float = 1.0,
) -> list[WordTiming]:
    """Words of ``text_tokens`` with their start/end (seconds from the window's start) and mean
    token probability; ``audio [1, S, C]``: the window's encoder output; ``num_frames``: its Mel
    frames holding audio (the rest is padding)."""
    if not text_tokens:
        return []
    sot = list(tokenizer.sot_sequence)
    tokens = torch.tensor([[*sot, tokenizer.no_timestamps, *text_tokens, tokenizer.eot]], device=audio.device)
    logits, weights = model.logits_and_cross_weights(tokens, audio)  # [1, T, V], [layers, 1, H, T, S]
    probs = logits[0, len(sot) :, : tokenizer.eot].float().softmax(dim=-1)
    text_probs = probs[torch.arange(len(text_tokens)), torch.tensor(text_tokens)].tolist()

    heads = model.config.heads_for_alignment
    w = torch.stack([weights[layer, 0, head] for layer, head in heads]).float()  # [heads, T, S]
    w = w[:, :, : num_frames // 2]
    if qk_scale != 1.0:
        w = w.pow(qk_scale)
    w = w / w.sum(dim=-1, keepdim=True)  # the softmax over the positions that hold audio
    std, mean = torch.std_mean(w, dim=-2, keepdim=True, unbiased=False)
    w = median_filter((w - mean) / std, medfilt_width)
    matrix = w.mean(dim=0)[len(sot) : -1]  # [text tokens + 1, frames]
    text_index, time_index = dtw(-matrix.double().cpu().numpy())

    words, word_tokens = tokenizer.split_to_word_tokens(text_tokens + [tokenizer.eot])
    if len(word_tokens) <= 1:
        return []  # only the end token
    boundaries = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
    jumps = np.pad(np.diff(text_index), (1, 0), constant_values=1).astype(bool)
    jump_times = time_index[jumps] / TOKENS_PER_SECOND
    starts, ends = jump_times[boundaries[:-1]], jump_times[boundaries[1:]]
    return [
        WordTiming(word, toks, start, end, float(np.mean(text_probs[i:j])))
        for word, toks, start, end, i, j in zip(words, word_tokens, starts, ends, boundaries[:-1], boundaries[1:])
    ]


def merge_punctuations(alignment: list[WordTiming], prepended: str, appended: str) -> None:
    """Attach opening punctuation (``prepended``, a word of its own after a space) to the next word
    and closing punctuation (``appended``) to the previous one, in place; merged entries become
    empty."""
    i, j = len(alignment) - 2, len(alignment) - 1
    while i >= 0:
        before, after = alignment[i], alignment[j]
        if before.word.startswith(" ") and before.word.strip() in prepended:
            after.word, after.tokens = before.word + after.word, before.tokens + after.tokens
            before.word, before.tokens = "", []
        else:
            j = i
        i -= 1
    i, j = 0, 1
    while j < len(alignment):
        before, after = alignment[i], alignment[j]
        if not before.word.endswith(" ") and after.word in appended:
            before.word, before.tokens = before.word + after.word, before.tokens + after.tokens
            after.word, after.tokens = "", []
        else:
            i = j
        j += 1


def _round(seconds) -> float:
    return float(round(np.float64(seconds), 2))  # numpy's rounding, as openai-whisper's (its times are numpy floats)


def add_word_timestamps(
    *, segments: list[Segment], model: Whisper, tokenizer: WhisperTokenizer, audio: Tensor, num_frames: int,
    time_offset: float, last_speech_timestamp: float, prepend_punctuations: str = PREPEND_PUNCTUATIONS,
    append_punctuations: str = APPEND_PUNCTUATIONS, **kwargs,
) -> None:
    """Fill ``segment.words`` of one window's segments (in place), adjusting the segments' start and
    end to their words. ``time_offset``: the window's start in seconds."""
    from .decoding import Word

    if not segments:
        return
    per_segment = [[t for t in s.tokens if t < tokenizer.eot] for s in segments]
    alignment = find_alignment(model, tokenizer, list(itertools.chain.from_iterable(per_segment)), audio, num_frames,
                               **kwargs)
    durations = np.array([t.end - t.start for t in alignment])
    durations = durations[durations.nonzero()]
    median = min(0.7, float(np.median(durations))) if len(durations) else 0.0
    longest = median * 2

    # words at sentence ends are no longer than twice the median word
    if len(durations):
        for i in range(1, len(alignment)):
            if alignment[i].end - alignment[i].start > longest:
                if alignment[i].word in SENTENCE_END_MARKS:
                    alignment[i].end = alignment[i].start + longest
                elif alignment[i - 1].word in SENTENCE_END_MARKS:
                    alignment[i].start = alignment[i].end - longest

    merge_punctuations(alignment, prepend_punctuations, append_punctuations)

    index = 0
    for segment, text_tokens in zip(segments, per_segment, strict=True):
        taken, words = 0, []
        while index < len(alignment) and taken < len(text_tokens):
            timing = alignment[index]
            if timing.word:
                words.append(Word(word=timing.word, start=_round(time_offset + timing.start),
                                  end=_round(time_offset + timing.end), probability=timing.probability))
            taken += len(timing.tokens)
            index += 1
        if words:
            first, last = words[0], words[-1]
            # after a pause, the first (and second) word are no longer than twice the median word
            if first.end - last_speech_timestamp > median * 4 and (
                first.end - first.start > longest or (len(words) > 1 and words[1].end - first.start > longest * 2)
            ):
                if len(words) > 1 and words[1].end - words[1].start > longest:
                    boundary = max(words[1].end / 2, words[1].end - longest)
                    first.end = words[1].start = boundary
                first.start = max(0, first.end - longest)
            # prefer the segment's own start/end when the first/last word is too long
            if segment.start < first.end and segment.start - 0.5 > first.start:
                first.start = max(0, min(first.end - median, segment.start))
            else:
                segment.start = first.start
            if segment.end > last.start and segment.end + 0.5 < last.end:
                last.end = max(last.start + median, segment.end)
            else:
                segment.end = last.end
            last_speech_timestamp = segment.end
        segment.words = words
