"""Reading images from disk for the systems' own jobs: any PIL-readable file, any mode (grayscale,
RGBA over white, palette, CMYK …) converted to RGB, with one-line errors naming the file."""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

PIXEL_BUDGET_ENV = "TATLAS_MAX_IMAGE_PIXELS"
DEFAULT_PIXEL_BUDGET = 89_478_485  # Pillow's own warning threshold: about 0.25 GiB of 24-bit pixels
_PIL_LIMIT = threading.Lock()  # Pillow's bomb limit is a module global: one reader changes it at a time


class ImageReadError(ValueError):
    """An image file that cannot be read, or that declares more pixels than the budget; the message
    is one line naming the file."""


def pixel_budget() -> int:
    """The most pixels (width x height) an image file may declare: ``$TATLAS_MAX_IMAGE_PIXELS``, else
    :data:`DEFAULT_PIXEL_BUDGET`."""
    text = os.environ.get(PIXEL_BUDGET_ENV, "").strip()
    if not text:
        return DEFAULT_PIXEL_BUDGET
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ImageReadError(f"{PIXEL_BUDGET_ENV}: expected a positive number of pixels, got {text!r}")
    return value


def open_image(path: str | Path, *, max_pixels: int | None = None):
    """A ``PIL.Image`` read from ``path`` and loaded, in its own mode; one-line errors naming the file.

    The width and height come from the file's header; an image declaring more than ``max_pixels``
    (default :func:`pixel_budget`) is refused before a pixel is decoded, naming its size and the
    budget (raise it with ``$TATLAS_MAX_IMAGE_PIXELS``). Pillow's own decompression-bomb limit is
    replaced by this budget for the read."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    budget = pixel_budget() if max_pixels is None else max_pixels
    if not path.is_file():
        raise ImageReadError(f"{path}: no such image file")
    try:
        with _PIL_LIMIT, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # the budget below decides
            try:
                img = Image.open(path)  # reads the header only
            finally:
                Image.MAX_IMAGE_PIXELS = saved
        with img:
            width, height = img.size
            if width * height > budget:
                raise ImageReadError(
                    f"{path}: the image declares {width}x{height} = {width * height:,} pixels, more than the "
                    f"budget of {budget:,}; set {PIXEL_BUDGET_ENV} to a larger number to read it")
            img.load()
            return img
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        if isinstance(e, ImageReadError):
            raise
        message = " ".join(str(e).split())
        raise ImageReadError(f"{path}: not a readable image ({type(e).__name__}: {message})") from None


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
