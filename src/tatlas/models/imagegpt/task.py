"""Training ImageGPT (Chen et al. 2020, §2 "Pre-training", the autoregressive objective):
next-pixel cross-entropy over colour tokens of the embedded handwritten digits
(:mod:`tatlas.data.digits`), evaluated as validation nats (and bits) per pixel.

The images: each 8x8 digit pasted at a seeded random offset on a black ``S x S`` canvas
(``S = image_size``; an 8x8 canvas holds the digits as they are). The palette: k-means with
``K = clusters`` on the training pixels (:func:`.palette.fit_palette`). The palette is a buffer of
the model, not a trained weight; the loss installs the task's palette into the model it trains
(before every step: K x 3 numbers), so the saved model decodes the tokens it was trained on.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from ...data import DigitsDataset
from ..spec import TrainTask
from .config import ImageGPTConfig
from .palette import fit_palette, nearest


def digit_images(split: str, *, size: int, seed: int = 0, copies: int = 1) -> tuple[Tensor, Tensor]:
    """Digits of ``split`` (``"train"``/``"test"`` of :class:`DigitsDataset` with ``seed``) as RGB
    images ``[N * copies, 3, size, size]`` in [0, 1], each at a random offset drawn with
    ``(seed, split)``, and their labels ``[N * copies]``. ``copies`` places every digit that many
    times (at independent offsets)."""
    if size < 8:
        raise ValueError(f"digit canvas: expected size >= 8 (the digits are 8x8), got {size}")
    digits = DigitsDataset(split, 8, seed)
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    n, room = len(digits), size - 8
    images = torch.zeros(n * copies, 1, size, size)
    for c in range(copies):
        offsets = rng.integers(0, room + 1, size=(n, 2))
        for i, (y, x) in enumerate(offsets):
            images[c * n + i, :, y : y + 8, x : x + 8] = digits.images[i]
    return images.expand(-1, 3, -1, -1).contiguous(), digits.labels.repeat(copies)


class PixelTokens(Dataset):
    """Colour tokens of images: sample ``{"pixels": int64 [S * S], "label": int}``."""

    def __init__(self, pixels: Tensor, labels: Tensor) -> None:
        self.pixels, self.labels = pixels, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, object]:
        return {"pixels": self.pixels[index], "label": int(self.labels[index])}


def pixel_loss(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """Mean next-pixel cross-entropy (nats) of ``batch["pixels"] [B, N]`` given ``[SOS, p_0 .. p_{N-2}]``."""
    pixels = batch["pixels"]
    logits = model(model.inputs(pixels))  # [B, N, K]
    return F.cross_entropy(logits.flatten(0, 1).float(), pixels.flatten())


class PaletteInstallingLoss:
    """:func:`pixel_loss`, after writing the task's ``palette [K, 3]`` into the model's palette
    buffer (a copy of K x 3 numbers per step: stateless, and right after a resume too)."""

    def __init__(self, palette: Tensor) -> None:
        self.palette = palette

    def __call__(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        model.palette.set_(self.palette)
        return pixel_loss(model, batch)


@torch.no_grad()
def evaluate_pixels(model: nn.Module, data: PixelTokens, *, batch_size: int = 128,
                    max_batches: int = 4) -> dict[str, float]:
    """Validation loss in nats per pixel and bits per pixel (the paper's bits/dim is per channel)."""
    device = next(model.parameters()).device
    n = min(len(data), batch_size * max_batches)
    total = 0.0
    for start in range(0, n, batch_size):
        pixels = data.pixels[start : min(n, start + batch_size)].to(device)
        total += pixel_loss(model, {"pixels": pixels}).item() * len(pixels)
    loss = total / max(1, n)
    return {"val_loss": loss, "val_bits_per_pixel": loss / math.log(2)}


def digit_tokens(config: ImageGPTConfig, seed: int = 0, *, copies: int = 2) -> tuple[Tensor, PixelTokens, PixelTokens]:
    """The palette fitted on the training digits and the train/test token datasets."""
    train_images, train_labels = digit_images("train", size=config.image_size, seed=seed, copies=copies)
    test_images, test_labels = digit_images("test", size=config.image_size, seed=seed)
    palette = fit_palette(train_images, config.clusters, seed=seed)

    def encode(images: Tensor) -> Tensor:
        return nearest(images.permute(0, 2, 3, 1).reshape(-1, 3), palette).reshape(len(images), -1)

    return palette, PixelTokens(encode(train_images), train_labels), PixelTokens(encode(test_images), test_labels)


def train_task(config: ImageGPTConfig, seed: int = 0) -> TrainTask:
    palette, train, test = digit_tokens(config, seed)
    return TrainTask(train_data=train, loss_fn=PaletteInstallingLoss(palette),
                     eval_fn=lambda model: evaluate_pixels(model, test))
