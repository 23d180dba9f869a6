"""Whisper's decoding of 30-second windows (the rules it applies are Whisper's own:
:mod:`tatlas.models.whisper.decoding`); long-form transcription is Whisper's job,
:mod:`tatlas.jobs.whisper`."""

from .decode import WindowDecoder, decode, detect_language

__all__ = ["WindowDecoder", "decode", "detect_language"]
