"""Decoding over any cached decoder: greedy, sampling (temperature, top-k, top-p, min-p,
repetition penalty), stop tokens, left-padded batches, streaming, beam search, a compiled path."""

from .beam import beam_search
from .config import GenerationConfig
from .loop import GenerationOutput, generate, left_pad
from .speculative import SpeculativeStats, speculative_generate
from .sampling import min_p_filter, process_logits, repetition_penalty, select, top_k_filter, top_p_filter

__all__ = [
    "GenerationConfig", "GenerationOutput", "beam_search", "generate", "left_pad", "min_p_filter",
    "process_logits", "repetition_penalty", "select", "SpeculativeStats", "speculative_generate", "top_k_filter", "top_p_filter",
]
