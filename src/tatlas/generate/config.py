"""Run options of decoding, kept apart from any architecture config."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class GenerationConfig:
    """How to decode. ``temperature=0`` is greedy; ``num_beams > 1`` is beam search.

    Sampling filters (applied in this order after the repetition penalty and temperature):
    ``top_k`` keeps the k most likely tokens, ``top_p`` the smallest set whose probability reaches p
    (Holtzman et al. 2019), ``min_p`` drops tokens below ``min_p`` times the top probability
    (Nguyen et al. 2024). ``repetition_penalty`` follows Keskar et al. 2019 (CTRL).
    """

    max_new_tokens: int = 32
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float = 1.0
    stop_tokens: tuple[int, ...] = ()
    pad_token: int = 0
    num_beams: int = 1
    length_penalty: float = 1.0
    static_cache: bool = True
    compile: bool = False
    prefill_chunk: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        def bad(what: str, got: object) -> ValueError:
            return ValueError(f"GenerationConfig.{what}, got {got!r}")

        for name in ("temperature", "top_p", "min_p", "repetition_penalty", "length_penalty"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise bad(f"{name} must be a finite number", value)
        if self.max_new_tokens < 1:
            raise bad("max_new_tokens must be >= 1", self.max_new_tokens)
        if self.temperature < 0:
            raise bad("temperature must be >= 0", self.temperature)
        if self.top_k is not None and self.top_k < 1:
            raise bad("top_k must be >= 1", self.top_k)
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise bad("top_p must be in (0, 1]", self.top_p)
        if self.min_p is not None and not 0 <= self.min_p <= 1:
            raise bad("min_p must be in [0, 1]", self.min_p)
        if self.repetition_penalty <= 0:
            raise bad("repetition_penalty must be > 0", self.repetition_penalty)
        if self.num_beams < 1:
            raise bad("num_beams must be >= 1", self.num_beams)
        if self.num_beams > 1 and self.temperature > 0:
            raise bad("beam search is deterministic: temperature must be 0 with num_beams > 1", self.temperature)
        if self.compile and not self.static_cache:
            raise bad("compile needs static_cache=True (fixed shapes)", self.compile)
        if self.prefill_chunk is not None and self.prefill_chunk < 1:
            raise bad("prefill_chunk must be >= 1", self.prefill_chunk)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0
