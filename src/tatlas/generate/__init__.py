"""Decoding over any cached decoder: one loop (:func:`search`) with strategy objects (greedy and
sampling with temperature, top-k, top-p, min-p; beam search with transformers' or openai-whisper's
rules) and logit filters (repetition penalty), stop tokens, left-padded batches, streaming, a
compiled path; speculative decoding."""

from .config import GenerationConfig
from .loop import GenerationOutput, generate, left_pad, search
from .speculative import SpeculativeStats, speculative_generate
from .sampling import RepetitionPenalty, min_p_filter, repetition_penalty, top_k_filter, top_p_filter
from .search import BeamSearch, PatienceBeamSearch, Sampler, rank

__all__ = [
    "BeamSearch", "GenerationConfig", "GenerationOutput", "PatienceBeamSearch", "RepetitionPenalty", "Sampler",
    "SpeculativeStats", "generate", "left_pad", "min_p_filter", "rank", "repetition_penalty", "search",
    "speculative_generate", "top_k_filter", "top_p_filter",
]
