"""Reading images from disk for the systems' own jobs: any PIL-readable file, any mode (grayscale,
RGBA over white, palette, CMYK …) converted to RGB, with one-line errors naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def open_image(path: str | Path):
    """A ``PIL.Image`` read from ``path`` and loaded, in its own mode; one-line errors naming the file."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such image file")
    try:
        with Image.open(path) as img:
            img.load()
            return img
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None


def _open(path: str | Path):
    img = open_image(path)
    return to_rgb(img), img.mode


def to_rgb(img):
    """A ``PIL.Image`` of any mode -> RGB; transparency (an alpha band, or a palette/colour-key
    ``transparency``) is composited over white, as transformers' ``convert_to_rgb`` does."""
    from PIL import Image

    if "A" in img.getbands() or img.info.get("transparency") is not None:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def open_rgb(path: str | Path):
    """``path`` -> an RGB ``PIL.Image`` (any mode converted); one-line errors naming the file."""
    return _open(path)[0]


def read_rgb(path: str | Path) -> tuple[Tensor, str | None]:
    """``path`` -> ``(pixels [3, H, W] float in [0, 1], note)``; ``note`` says what conversion was
    done (``None`` if the file was already RGB)."""
    rgb, mode = _open(path)
    note = None if mode == "RGB" else f"converted {mode} to RGB" + (" over white" if "A" in mode or mode == "P" else "")
    array = np.asarray(rgb, dtype=np.float32) / 255.0  # [H, W, 3]
    return torch.from_numpy(array).permute(2, 0, 1).contiguous(), note


def resize_square(pixels: Tensor, size: int) -> Tensor:
    """``[3, H, W] -> [3, size, size]`` (bicubic with antialiasing, clamped to [0, 1])."""
    out = F.interpolate(pixels[None], size=(size, size), mode="bicubic", align_corners=False, antialias=True)[0]
    return out.clamp(0.0, 1.0)


def normalise(pixels: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """``[*, 3, H, W]`` in [0, 1] -> ``(x - mean) / std`` per channel."""
    m = torch.tensor(mean, dtype=pixels.dtype, device=pixels.device)[:, None, None]
    s = torch.tensor(std, dtype=pixels.dtype, device=pixels.device)[:, None, None]
    return (pixels - m) / s
