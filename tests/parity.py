"""The parity harness every row uses: build a tiny random reference model, re-randomise every
parameter (zero-initialised gates and projections would make a comparison blind), save it the way
users have it on disk, load it through tatlas' own converter, and compare."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


@torch.no_grad()
def perturb_(module: nn.Module, *, seed: int = 0, std: float = 0.1) -> nn.Module:
    """Re-randomise every floating parameter and buffer-free weight: weights ~ N(0, std); 1-D
    parameters (biases, norm scales, gates) ~ N(0, std) added to their current value, so norm scales
    stay near 1 while zero-initialised gates and biases become non-zero."""
    gen = torch.Generator().manual_seed(seed)
    for _, p in sorted(module.named_parameters(), key=lambda kv: kv[0]):
        if not p.dtype.is_floating_point:
            continue
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.dtype) * std
        if p.dim() <= 1:
            p.add_(noise)
        else:
            p.copy_(noise)
    return module


def save_hf(model, folder: Path) -> Path:
    """``save_pretrained`` into ``folder`` (safetensors), as users have Hugging Face checkpoints."""
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        raise AssertionError(f"shape mismatch: ours {list(a.shape)} vs reference {list(b.shape)}")
    return (a.float() - b.float()).abs().max().item()


def assert_close(ours: torch.Tensor, ref: torch.Tensor, *, atol: float, what: str) -> float:
    diff = max_abs_diff(ours, ref)
    assert diff <= atol, f"{what}: max abs diff {diff:.3g} > {atol:g}"
    assert ref.abs().max().item() > 10 * atol, f"{what}: reference is ~0, the comparison proves nothing"
    return diff


@torch.no_grad()
def hf_greedy(model, prompt: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` greedy tokens from a transformers model, by its own ``generate``."""
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, min_new_tokens=n, do_sample=False, num_beams=1,
                         pad_token_id=0, eos_token_id=None)
    return out[:, prompt.shape[1]:]
