"""Image files in and out for ImageGPT completion (Chen et al. 2020, Figure 1: the model is given
the top half of an image and samples the rest): reading any image as RGB at the model's
resolution, the completion prompt, masking, and a PNG grid of originals, masked inputs and samples.

The sampling itself runs through :mod:`tatlas.generate` (see :func:`tatlas.jobs.imagegpt.complete`):
``generate`` sits above ``models`` in the layering, so it is not imported here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ...data.images import ImageReadError, open_image  # noqa: F401  (ImageReadError: re-exported)


def read_image(path: str | Path, size: int) -> tuple[Tensor, list[str]]:
    """An image file -> ``([3, size, size] float32 in [0, 1], notes)``.

    Read by the shared reader (:func:`tatlas.data.images.open_image`: any format Pillow reads, the
    pixel budget checked from the header) and turned into an array as ``matplotlib.image.imread``
    does. Any mode becomes RGB: grey is repeated over the channels, an alpha channel is composited
    over black (palette images become RGBA), 8- and 16-bit integers are scaled to [0, 1].
    Any size is resized to ``size x size`` (bilinear with antialiasing; a non-square image is
    stretched, as Hugging Face's ImageGPT processor does). ``notes`` says what was done.
    """
    from matplotlib.image import pil_to_array

    img = open_image(path)
    array = np.asarray(pil_to_array(img))
    notes: list[str] = []
    if array.dtype == np.uint8:
        x = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        x = array.astype(np.float32) / 65535.0
    elif np.issubdtype(array.dtype, np.floating):
        x = array.astype(np.float32)
    else:
        raise ImageReadError(f"{path}: unsupported pixel type {array.dtype}")
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3 or x.shape[2] not in (1, 2, 3, 4) or min(x.shape[:2]) < 1:
        raise ImageReadError(f"{path}: unsupported image shape {list(array.shape)}")
    channels = x.shape[2]
    if channels in (2, 4):
        alpha = x[:, :, -1:]
        x = x[:, :, :-1] * alpha
        if float(alpha.min()) < 1.0:
            notes.append("alpha channel composited over black")
        else:
            notes.append("opaque alpha channel dropped")
    if x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
        notes.append("greyscale converted to RGB")
    image = torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1).clamp(0.0, 1.0)  # [3, H, W]
    h, w = image.shape[1:]
    if (h, w) != (size, size):
        image = F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True,
                              align_corners=False)[0].clamp(0.0, 1.0)
        notes.append(f"resized {w}x{h} -> {size}x{size}" + (" (aspect ratio changed)" if h != w else ""))
    return image.contiguous(), notes


def kept_pixels(n: int, fraction: float) -> int:
    """How many of ``n`` raster-ordered pixels a completion keeps for ``fraction`` in [0, 1]."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction: expected a number in [0, 1], got {fraction}")
    return int(round(fraction * n))


def completion_prompt(pixels: Tensor, kept: int, sos: int, n_samples: int = 1) -> Tensor:
    """``pixels [B, N]`` -> the prompt ``[SOS, p_0 .. p_{kept-1}]`` once per sample, ``[B * n_samples, 1 + kept]``
    (the samples of image ``b`` are rows ``b * n_samples ..``)."""
    prompt = torch.cat([torch.full_like(pixels[:, :1], sos), pixels[:, :kept]], dim=1)
    return prompt.repeat_interleave(n_samples, dim=0)


def mask_images(images: Tensor, kept: int, *, fill: float = 0.5) -> Tensor:
    """``images [B, 3, H, W]`` with every pixel from raster index ``kept`` on set to ``fill`` grey."""
    b, c, h, w = images.shape
    flat = images.reshape(b, c, h * w).clone()
    flat[:, :, kept:] = fill
    return flat.reshape(b, c, h, w)


def grid_array(originals: Tensor, masked: Tensor, samples: Tensor, *, scale: int | None = None,
               gap: int = 2) -> np.ndarray:
    """One row per image: original, masked input, then its samples. ``originals``/``masked``
    ``[B, 3, H, W]``, ``samples [B, N, 3, H, W]`` -> an ``[rows, cols, 3]`` float array, each tile
    enlarged ``scale`` times (nearest; default: at least 64 pixels), white gaps between tiles."""
    b, n = samples.shape[:2]
    h, w = originals.shape[-2:]
    scale = scale or max(1, -(-64 // max(h, w)))
    tiles = torch.cat([originals[:, None], masked[:, None], samples], dim=1)  # [B, 2 + N, 3, H, W]
    tiles = tiles.float().clamp(0, 1).repeat_interleave(scale, -2).repeat_interleave(scale, -1)
    th, tw = h * scale, w * scale
    cols = 2 + n
    out = np.ones((b * th + (b + 1) * gap, cols * tw + (cols + 1) * gap, 3), dtype=np.float32)
    for i in range(b):
        for j in range(cols):
            y, x = gap + i * (th + gap), gap + j * (tw + gap)
            out[y : y + th, x : x + tw] = tiles[i, j].permute(1, 2, 0).cpu().numpy()
    return out


def write_grid(path: str | Path, originals: Tensor, masked: Tensor, samples: Tensor, *,
               scale: int | None = None) -> Path:
    """Write :func:`grid_array` as a PNG (``matplotlib.image.imsave``: no figure, no Pillow calls of ours)."""
    import matplotlib.image as mpimg

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mpimg.imsave(path, grid_array(originals, masked, samples, scale=scale), format="png")
    return path
