"""What long-form transcription takes and gives: :class:`TranscribeOptions` (openai-whisper's
``transcribe`` arguments) and :class:`Transcript` (its result)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from typing import Any

from ...models.whisper.audio import FRAMES_PER_SECOND, HOP_LENGTH, SAMPLE_RATE
from ...models.whisper.decoding import DecodingOptions, Segment
from ...models.whisper.timing import APPEND_PUNCTUATIONS, PREPEND_PUNCTUATIONS
from ...models.whisper.vad import VadOptions

INPUT_STRIDE = 2  # Mel frames per encoder position
TIME_PRECISION = INPUT_STRIDE * HOP_LENGTH / SAMPLE_RATE  # 0.02 s per timestamp step
STREAM_ABOVE_SECONDS = 600.0  # files longer than this are read window by window


@dataclass
class Transcript:
    text: str
    segments: list[Segment]
    language: str

    def as_dict(self) -> dict[str, Any]:
        """openai-whisper's result: ``{"text", "segments": [{"id", "seek", …, "words"?}], "language"}``."""
        segments = []
        for s in self.segments:
            d = dataclasses.asdict(s)
            if s.words is None:
                del d["words"]
            segments.append(d)
        return {"text": self.text, "segments": segments, "language": self.language}


@dataclass(frozen=True, kw_only=True)
class TranscribeOptions:
    """openai-whisper's ``transcribe`` arguments; ``decode`` holds the per-window
    :class:`DecodingOptions` (its ``temperature`` and ``prompt`` are set per window). ``vad``
    (faster-whisper's ``vad_filter``): transcribe only the speech that :mod:`~tatlas.models.whisper.vad`
    finds (``True``: its default :class:`VadOptions`; off by default, as openai-whisper and
    faster-whisper)."""

    temperature: float | tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    compression_ratio_threshold: float | None = 2.4
    logprob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    condition_on_previous_text: bool = True
    initial_prompt: str | None = None
    carry_initial_prompt: bool = False
    word_timestamps: bool = False
    prepend_punctuations: str = PREPEND_PUNCTUATIONS
    append_punctuations: str = APPEND_PUNCTUATIONS
    clip_timestamps: str | tuple[float, ...] = "0"
    hallucination_silence_threshold: float | None = None
    vad: bool | VadOptions = False
    decode: DecodingOptions = field(default_factory=DecodingOptions)

    def __post_init__(self) -> None:
        if not isinstance(self.vad, bool | VadOptions):
            raise TypeError(f"TranscribeOptions.vad: expected True, False or VadOptions, got {self.vad!r}")
        temps = self.temperatures
        if not temps or any(t < 0 for t in temps):
            raise ValueError(f"TranscribeOptions.temperature: expected temperatures >= 0, got {self.temperature!r}")
        self.clips(10**9)  # validates clip_timestamps

    @property
    def vad_options(self) -> VadOptions | None:
        """The voice-activity detector's options, None when ``vad`` is off."""
        return VadOptions() if self.vad is True else (self.vad or None)

    @property
    def temperatures(self) -> tuple[float, ...]:
        t = self.temperature
        return (float(t),) if isinstance(t, int | float) else tuple(float(x) for x in t)

    def clips(self, content_frames: int) -> list[tuple[int, int]]:
        """``clip_timestamps`` as ``(start, end)`` Mel frames; the last end defaults to the audio's end."""
        stamps = self.clip_timestamps
        if isinstance(stamps, str):
            try:
                stamps = [float(s) for s in stamps.split(",")] if stamps.strip() else []
            except ValueError:
                raise ValueError(f"clip_timestamps: expected comma-separated seconds, got {stamps!r}") from None
        points = [round(float(s) * FRAMES_PER_SECOND) for s in stamps] or [0]
        if len(points) % 2:
            points.append(content_frames)
        return list(zip(points[::2], points[1::2]))

    @classmethod
    def create(cls, **kwargs) -> TranscribeOptions:
        """Options from openai-whisper's keyword arguments: ``transcribe`` ones and ``DecodingOptions`` ones."""
        own = {f.name for f in dataclasses.fields(cls)} - {"decode"}
        decode = {k: kwargs.pop(k) for k in list(kwargs) if k not in own}
        base = kwargs.pop("decode", DecodingOptions())
        unknown = set(decode) - {f.name for f in dataclasses.fields(DecodingOptions)}
        if unknown:
            raise TypeError(f"unknown transcription options: {sorted(unknown)}")
        return cls(decode=replace(base, **decode), **kwargs)
