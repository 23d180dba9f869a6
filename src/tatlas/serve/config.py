"""What ``tatlas serve`` runs with: the models it serves (``NAME=SPEC``) and its limits, frozen."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

API_KEY_ENV = "TATLAS_API_KEY"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """One served model: ``name`` (what requests put in ``"model"``) and ``spec`` (a named real
    model such as ``tiny.en`` or ``smollm2``, or a path :func:`tatlas.load` reads)."""

    name: str
    spec: str

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        name, sep, spec = text.partition("=")
        if not sep or not spec.strip():
            raise ValueError(f"--model {text!r}: expected NAME=SPEC (e.g. whisper=tiny.en, chat=smollm2, "
                             "embed=/path/to/clip)")
        if not _NAME.match(name):
            raise ValueError(f"--model {text!r}: expected a NAME of letters, digits and . _ : - (at most 64), "
                             f"got {name!r}")
        return cls(name=name, spec=spec.strip())


@dataclass(frozen=True, kw_only=True)
class Limits:
    """What one request may ask, and how much work may wait."""

    max_upload_bytes: int = 25 * 1024 * 1024  # as OpenAI's audio endpoints
    max_audio_seconds: float = 600.0
    max_tokens: int = 512  # cap on a chat request's max_tokens (and its default)
    max_queue: int = 64  # requests waiting or running per model; more get 429

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_tokens", "max_queue"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.max_audio_seconds <= 0:
            raise ValueError(f"max_audio_seconds: expected > 0, got {self.max_audio_seconds}")


@dataclass(frozen=True, kw_only=True)
class Batching:
    """How the engines batch. ``enabled=False`` runs one request at a time everywhere (the
    baseline the benchmark compares with)."""

    enabled: bool = True
    chat_rows: int = 16  # sequences decoded together (continuous batching)
    whisper_batch: int = 8  # files whose windows are decoded together
    embed_batch: int = 64  # inputs encoded together
    wait_ms: float = 5.0  # how long a micro-batch waits for company after its first request

    def __post_init__(self) -> None:
        for name in ("chat_rows", "whisper_batch", "embed_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.wait_ms < 0:
            raise ValueError(f"wait_ms: expected >= 0, got {self.wait_ms}")

    def size(self, name: str) -> int:
        return getattr(self, name) if self.enabled else 1


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    models: tuple[ModelSpec, ...]
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    limits: Limits = field(default_factory=Limits)
    batching: Batching = field(default_factory=Batching)

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("no models to serve: give --model NAME=SPEC at least once")
        names = [m.name for m in self.models]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"--model: each NAME once, got {', '.join(repeated)} more than once")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port: expected 0..65535, got {self.port}")

    @staticmethod
    def key_from_env(given: str | None) -> str | None:
        """``--api-key``, else ``$TATLAS_API_KEY``; empty means none."""
        return given or os.environ.get(API_KEY_ENV) or None
