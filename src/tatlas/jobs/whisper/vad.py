"""Transcribing only where someone speaks (faster-whisper's ``vad_filter``, with the detector of
:mod:`tatlas.models.whisper.vad`): the speech regions of a file are cut out and joined into one
shorter signal, that is transcribed as usual (seeking, prompts and fallback run across the joins),
and every segment and word time is carried back to the original audio's seconds
(:class:`SpeechTimeline`). Silence and steady noise hold no region, so they give no text at all,
and the windows they would have cost are never decoded.

Memory: a file up to ``STREAM_ABOVE_SECONDS`` is read once; a longer one is read twice, streaming
(the features, then only its speech), so only the speech is ever held.
"""

from __future__ import annotations

import os
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from ...models.whisper.audio import (FRAMES_PER_SECOND, HOP_LENGTH, SAMPLE_RATE, AudioSource, audio_duration,
                                     load_audio, stream_audio)
from ...models.whisper.vad import frame_features, speech_regions
from .options import STREAM_ABOVE_SECONDS, Transcript, TranscribeOptions

__all__ = ["SpeechTimeline", "speech_audio"]


@dataclass(frozen=True)
class SpeechTimeline:
    """Where the pieces of the joined speech came from: ``regions`` are ``(start, end)`` samples of
    the original audio, laid end to end in the joined signal."""

    regions: tuple[tuple[int, int], ...]
    samples: int  # length of the original audio

    @cached_property
    def _joined_starts(self) -> list[int]:
        starts, at = [], 0
        for start, end in self.regions:
            starts.append(at)
            at += end - start
        return starts

    @property
    def speech_samples(self) -> int:
        return sum(end - start for start, end in self.regions)

    def _region(self, seconds: float, *, is_end: bool) -> int:
        """Which region a time (s) of the joined speech lies in; a time on a join belongs to the
        region it starts (``is_end=False``) or ends (``is_end=True``)."""
        at = seconds * SAMPLE_RATE
        starts = self._joined_starts
        k = (bisect_left(starts, at) if is_end else bisect_right(starts, at)) - 1
        return min(max(k, 0), len(starts) - 1)

    def original_time(self, seconds: float, *, is_end: bool = False, region: int | None = None) -> float:
        """A time (s) in the joined speech -> the same instant in the original audio, kept inside
        ``region`` (default: the one it lies in)."""
        if not self.regions:
            return seconds
        k = self._region(seconds, is_end=is_end) if region is None else region
        start, end = self.regions[k]
        return min(max(start + seconds * SAMPLE_RATE - self._joined_starts[k], start), end) / SAMPLE_RATE

    def original_span(self, start: float, end: float) -> tuple[float, float]:
        """A word's span (s) of the joined speech in original seconds, inside one region: the one
        holding most of it. Whisper stretches a word over the quiet next to it, so without this a
        word beside a join would reach into the next region, seconds away in the original."""
        k, k_end = self._region(start, is_end=False), self._region(end, is_end=True)
        if k != k_end:
            join = self._joined_starts[k_end] / SAMPLE_RATE
            k = k if join - start >= end - join else k_end
        first, last = self.original_time(start, region=k), self.original_time(end, region=k)
        return round(first, 3), round(max(first, last), 3)

    def restore(self, transcript: Transcript) -> Transcript:
        """``transcript`` of the joined speech with every time in original-audio seconds."""
        segments = []
        for s in transcript.segments:
            words = None
            if s.words is not None:
                words = [replace(w, **dict(zip(("start", "end"), self.original_span(w.start, w.end), strict=True)))
                         for w in s.words]
            start, end = round(self.original_time(s.start), 3), round(self.original_time(s.end, is_end=True), 3)
            if words:  # a segment spans its words, which may have been kept from crossing a join
                start, end = words[0].start, words[-1].end
            seek = round(self.original_time(s.seek / FRAMES_PER_SECOND) * FRAMES_PER_SECOND)
            segments.append(replace(s, seek=seek, start=start, end=end, words=words))
        return replace(transcript, segments=segments)


def _gather(blocks: Iterator[np.ndarray], regions: list[tuple[int, int]]) -> np.ndarray:
    """The samples of ``regions`` (sorted, disjoint), joined, from consecutive blocks."""
    pieces, offset = [], 0
    for block in blocks:
        stop = offset + len(block)
        for start, end in regions:
            if start < stop and end > offset:
                pieces.append(block[max(start - offset, 0) : min(end, stop) - offset])
        offset = stop
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)


def clip_regions(regions: list[tuple[int, int]], clips: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``regions`` (samples) inside ``clips`` (Mel frames, as
    :meth:`TranscribeOptions.clips` gives them)."""
    out = []
    for lo, hi in ((a * HOP_LENGTH, b * HOP_LENGTH) for a, b in clips):
        out += [(max(s, lo), min(e, hi)) for s, e in regions if min(e, hi) > max(s, lo)]
    return sorted(out)


def speech_audio(audio: AudioSource, options: TranscribeOptions) -> tuple[np.ndarray, SpeechTimeline]:
    """The speech of ``audio`` (a file or 16 kHz samples) found with ``options.vad_options``, inside
    ``options.clip_timestamps``, joined into one float32 signal; and where each piece came from."""
    if isinstance(audio, str | os.PathLike) and audio_duration(audio) > STREAM_ABOVE_SECONDS:
        blocks = lambda: stream_audio(audio)  # read twice, in bounded memory
    else:
        samples = load_audio(audio)
        blocks = lambda: iter([samples])
    energy, flatness, total = frame_features(blocks())
    regions = speech_regions(energy, flatness, total, options.vad_options)
    regions = clip_regions(regions, options.clips(total // HOP_LENGTH))
    return _gather(blocks(), regions), SpeechTimeline(tuple(regions), total)
