"""Registers the ``llm`` system."""

from __future__ import annotations

import torch

from ..registry import System, register
from .config import PRESETS, LLMConfig
from .convert import HF_ARCHITECTURES, from_hf
from .model import LLM
from .task import train_task


def _sample(model: LLM, gen: torch.Generator) -> dict:
    tokens = torch.randint(0, model.config.vocab_size, (2, 12), generator=gen)
    return {"tokens": tokens.to(model.embed.weight.device)}


SYSTEM = register(System(
    name="llm",
    summary="GPT-4/Gemini-style decoder LM: RoPE, GQA, SwiGLU, RMSNorm (Llama, Mistral, Qwen2)",
    config_cls=LLMConfig,
    model_cls=LLM,
    presets=PRESETS,
    sample_input=_sample,
    hf_model_types={t: from_hf for t in HF_ARCHITECTURES},
    train_task=train_task,
    diagram=(
        "tokens -> embed -> [ RMSNorm -> GQA attention (RoPE on q,k; KV cache) -> + ->\n"
        "                     RMSNorm -> SwiGLU MLP -> + ] x layers -> RMSNorm -> lm_head -> logits"
    ),
))
