"""The ``llm`` system's record (:class:`~tatlas.models.spec.System`)."""

from __future__ import annotations

import torch

from ..spec import System
from .config import PRESETS, LLMConfig
from .convert import HF_ARCHITECTURES, from_hf
from .gguf import from_gguf
from .model import LLM
from .task import train_task


def _sample(model: LLM, gen: torch.Generator) -> dict:
    c = model.config
    device = model.embed.weight.device
    tokens = torch.randint(0, min(c.vocab_size, c.image_token_id or c.vocab_size), (2, 12), generator=gen)
    if c.vision is None:
        return {"tokens": tokens.to(device)}
    n = c.vision.tokens_per_image  # one image per row, after two text tokens
    tokens = torch.cat([tokens[:, :2], torch.full((2, n), c.image_token_id), tokens[:, 2:]], dim=1)
    pixels = torch.randn(2, c.vision.channels, c.vision.image_size, c.vision.image_size, generator=gen)
    return {"tokens": tokens.to(device), "pixels": pixels.to(device)}


SYSTEM = System(
    name="llm",
    summary="GPT-4/Gemini-style decoder LM: RoPE, GQA, gated MLP, RMSNorm, interleaved images (Llama, Mistral, Qwen2, Gemma 3)",
    config_cls=LLMConfig,
    model_cls=LLM,
    presets=PRESETS,
    sample_input=_sample,
    hf_model_types={t: from_hf for t in HF_ARCHITECTURES},
    formats={"gguf": from_gguf},
    train_task=train_task,
    diagram=(
        "tokens -> embed -> [ RMSNorm -> GQA attention (RoPE on q,k; KV cache) -> + ->\n"
        "                     RMSNorm -> SwiGLU MLP -> + ] x layers -> RMSNorm -> lm_head -> logits\n"
        "images (Gemma 3): pixels -> ViT -> avg-pool -> RMSNorm -> linear -> replace <image> tokens;\n"
        "                  tokens of one image attend to each other bidirectionally, the rest causally"
    ),
    idea=(
        'Predicting the next token of a very large amount of text is a task whose best solution needs much of '
        'what the text is about, and a decoder-only transformer gets better at it smoothly as parameters, data '
        'and compute grow. The modern recipe keeps the 2017 block and changes its parts: rotary positions '
        '(relative, extrapolate), grouped-query attention (a smaller KV cache), SwiGLU MLPs and RMSNorm; a '
        'mixture of experts adds parameters without adding compute per token, a router sending each token to k of'
        ' E expert MLPs.'
    ),
    paper=(
        'Touvron et al. 2023, LLaMA (arXiv:2302.13971); Jiang et al. 2024, Mixtral of Experts (arXiv:2401.04088);'
        ' Gemma Team 2025, Gemma 3 (arXiv:2503.19786)'
    ),
    question=(
        'Why does a top-2-of-8 MoE layer hold about 4x the MLP parameters of a dense layer but cost only about 2x'
        ' its FLOPs per token, and which tensor does grouped-query attention make smaller?'
    ),
    highlight=(
        'TopKRouter', 'SwitchRouter', 'DeepSeekRouter', 'ExpertChoiceRouter', 'Experts', 'LatentAttention',
        'ImageProjector', 'GatedMLP', 'rotary',
    ),
)
