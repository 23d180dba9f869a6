"""Whisper: speech recognition and translation over 30-second log-Mel windows."""

from .config import PRESETS, WhisperConfig
from .model import Whisper

__all__ = ["PRESETS", "Whisper", "WhisperConfig"]
