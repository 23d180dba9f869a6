"""CLIP's image preprocessing (Radford et al. 2021, §2.5 / OpenAI's ``_transform``), step for step
as transformers' ``CLIPImageProcessor`` (PIL backend) does it:

1. any mode to RGB, transparency composited over white (grayscale, RGBA, LA, palette, CMYK ...);
2. resize so the shortest side is ``size`` (the long side ``int(size * long / short)``), bicubic, in
   PIL on the 8-bit image;
3. centre crop ``size x size`` (offsets ``(H - size) // 2``, ``(W - size) // 2``);
4. to float in [0, 1], then ``(x - mean) / std`` per channel (OpenAI's dataset statistics).

Unreadable files raise one ``ValueError`` line naming the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ...data.images import normalise as _normalise
from ...data.images import open_rgb, to_rgb  # noqa: F401  (re-exported: CLIP's image reading)
from .config import CLIP_MEAN, CLIP_STD


def resize_crop(img: Any, size: int) -> Any:
    """Shortest side to ``size`` (bicubic), then the centre ``size x size`` crop. ``PIL -> PIL``."""
    from PIL import Image

    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), resample=Image.Resampling.BICUBIC)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return img.crop((left, top, left + size, top + size))


def normalise(pixels: Tensor, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> Tensor:
    """``[*, 3, H, W]`` in [0, 1] -> ``(x - mean) / std`` with CLIP's statistics by default."""
    return _normalise(pixels, tuple(mean), tuple(std))


def preprocess(
    image: Any, size: int = 224, *, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD,
) -> Tensor:
    """One image (a path or a ``PIL.Image``) -> normalised ``float32 [3, size, size]``."""
    img = open_rgb(image) if isinstance(image, (str, Path)) else to_rgb(image)
    array = np.asarray(resize_crop(img, size), dtype=np.float32) / 255.0  # [size, size, 3]
    return normalise(torch.from_numpy(array).permute(2, 0, 1), mean, std)


def preprocess_batch(images: Sequence[Any], config) -> Tensor:
    """Images -> ``[B, 3, S, S]`` for a model with vision config ``config`` (its size, mean, std)."""
    return torch.stack([preprocess(im, config.image_size, mean=config.image_mean, std=config.image_std)
                        for im in images])
