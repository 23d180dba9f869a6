"""Whisper's decoding loop and long-form transcription (the rules they apply are Whisper's own:
:mod:`tatlas.models.whisper.decoding`)."""

from .decode import WindowDecoder, decode, detect_language
from .transcribe import Transcript, TranscribeOptions, default_model, transcribe, transcribe_batch

__all__ = ["Transcript", "TranscribeOptions", "WindowDecoder", "decode", "default_model", "detect_language",
           "transcribe", "transcribe_batch"]
