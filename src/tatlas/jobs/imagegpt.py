"""ImageGPT's job: complete images from their first pixels by sampling the pixel-token model
(Chen et al. 2020, Figure 1), behind ``tatlas imagegpt complete``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from ..generate import GenerationConfig, generate
from ..io import check_output_file
from ..models.imagegpt.sample import completion_prompt, kept_pixels, mask_images, read_image, write_grid


@torch.inference_mode()
def complete(
    model: nn.Module, pixels: Tensor, *, fraction: float = 0.5, n_samples: int = 1, temperature: float = 1.0,
    top_k: int | None = None, seed: int | None = None, static_cache: bool = True,
) -> Tensor:
    """Complete images from their first ``fraction`` of pixels (raster order: 0.5 keeps the top half).

    ``pixels [B, N]`` colour tokens -> ``[B, n_samples, N]``: the first ``round(fraction * N)`` tokens
    of every sample are the given ones, the rest are sampled by :func:`tatlas.generate.generate`
    (``temperature=0``: greedy; ``top_k``: sample among the k most likely colours; ``seed``: the
    sampling generator's seed).
    """
    c = model.config
    if pixels.dim() != 2 or pixels.shape[1] != c.max_positions:
        raise ValueError(f"pixels: expected [B, {c.max_positions}] colour tokens, got {list(pixels.shape)}")
    if pixels.numel() and (int(pixels.min()) < 0 or int(pixels.max()) >= c.clusters):
        raise ValueError(f"pixels: expected colour tokens in [0, {c.clusters - 1}], got values in "
                         f"[{int(pixels.min())}, {int(pixels.max())}]")
    if n_samples < 1:
        raise ValueError(f"n_samples: expected >= 1, got {n_samples}")
    n = pixels.shape[1]
    kept = kept_pixels(n, fraction)
    given = pixels.repeat_interleave(n_samples, dim=0)  # [B * S, N]
    if kept < n:
        prompt = completion_prompt(pixels, kept, c.sos_token, n_samples).to(next(model.parameters()).device)
        config = GenerationConfig(max_new_tokens=n - kept, temperature=temperature, top_k=top_k, seed=seed,
                                  static_cache=static_cache)
        new = generate(model, prompt, config).tokens.to(pixels.device)
        given = torch.cat([given[:, :kept], new], dim=1)
    return given.reshape(pixels.shape[0], n_samples, n)


@dataclass(frozen=True)
class CompletionReport:
    """What :func:`complete_image_file` did: the grid's path, pixels kept of the total, and notes
    on how the image was converted."""

    out: Path
    kept: int
    total: int
    notes: list[str] = field(default_factory=list)


def complete_image_file(
    image: str | Path, *, out: str | Path, model: str | Path | nn.Module | None = None,
    fraction: float | None = None, top_half: bool = False, samples: int = 4, temperature: float = 1.0,
    top_k: int | None = None, seed: int = 0,
) -> CompletionReport:
    """``tatlas imagegpt complete IMAGE``: read ``image`` (any mode and size: converted to RGB and
    resized to the model's resolution, with notes), keep its top half (``top_half``) or its first
    ``fraction`` of pixels, sample ``samples`` completions, and write a PNG grid (original,
    quantised and masked, samples) to ``out``. ``model``: a tatlas checkpoint or a Hugging Face
    ImageGPT folder (``tatlas.load``), or a loaded model."""
    import tatlas

    if model is None:
        raise ValueError("no model given: pass a tatlas ImageGPT checkpoint (e.g. the demo's "
                         "imagegpt/run/model.safetensors, or `tatlas train imagegpt`'s) or a Hugging Face "
                         "ImageGPT folder")
    if top_half and fraction is not None:
        raise ValueError("give either top_half or fraction, not both")
    check_output_file(out, "out")
    if not isinstance(model, nn.Module):
        model = tatlas.load(model, system="imagegpt", fast=True)
    model = model.eval()
    c = model.config
    picture, notes = read_image(image, c.image_size)
    if fraction is None:
        fraction = (c.image_size // 2) / c.image_size
        if not top_half:
            notes.append("no fraction given: keeping the top half")
    pixels = model.encode_images(picture[None].to(next(model.parameters()).device))
    tokens = complete(model, pixels, fraction=fraction, n_samples=samples, temperature=temperature, top_k=top_k,
                      seed=seed)
    kept = kept_pixels(pixels.shape[1], fraction)
    quantised = model.decode_images(pixels)
    completions = model.decode_images(tokens.flatten(0, 1)).unflatten(0, (1, samples))
    path = write_grid(out, picture[None], mask_images(quantised, kept), completions)
    return CompletionReport(out=path, kept=kept, total=pixels.shape[1], notes=notes)
