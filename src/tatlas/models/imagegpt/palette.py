"""Colour quantisation (Chen et al. 2020, "Context Reduction" in §3): k-means clusters of RGB
pixel values form a palette of K colours, and every pixel becomes the index of its nearest
cluster, so a ``[B, 3, H, W]`` image is a raster-ordered sequence of ``H * W`` tokens.

Colours here live in ``[0, 1]`` RGB. Hugging Face keeps ImageGPT's clusters in its image
processor, normalised to ``[-1, 1]`` (:func:`from_signed` / :func:`to_signed` convert).
The palette is a persistent buffer of the model (:class:`Palette`), so a saved model carries it.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import Tensor, nn


def default_colours(k: int) -> Tensor:
    """The palette of a model that was never given one: an RGB lattice when ``k`` is a cube
    (512 = 8 levels per channel), else a grey ramp of ``k`` levels. ``-> [k, 3]`` in [0, 1]."""
    side = round(k ** (1 / 3))
    target = torch.get_default_device()
    # computed on the CPU even while a model is built on the meta device to receive a checkpoint:
    # there torch.stack runs torch's Python references, whose first use imports torch._dynamo
    # (~1 s of the first ImageGPT load in a process); moving the [k, 3] result to meta is free
    with torch.device("cpu"):
        if side**3 == k and side > 1:
            levels = torch.linspace(0.0, 1.0, side)
            r, g, b = torch.meshgrid(levels, levels, levels, indexing="ij")
            colours = torch.stack([r, g, b], dim=-1).reshape(k, 3)
        else:
            colours = torch.linspace(0.0, 1.0, k)[:, None].expand(k, 3).contiguous()
    return colours.to(target)


def to_signed(colours: Tensor) -> Tensor:
    """[0, 1] colours -> Hugging Face's [-1, 1]."""
    return colours * 2.0 - 1.0


def from_signed(colours: Tensor) -> Tensor:
    """Hugging Face's [-1, 1] colours -> [0, 1]."""
    return (colours + 1.0) / 2.0


def _pixels(images: Tensor) -> Tensor:
    """``[B, 3, H, W]`` -> ``[B * H * W, 3]`` in raster order (row by row, channels last)."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images: expected [B, 3, H, W] RGB in [0, 1], got {list(images.shape)}")
    return images.permute(0, 2, 3, 1).reshape(-1, 3)


def fit_palette(images: Tensor, k: int, *, seed: int = 0, max_pixels: int = 200_000) -> Tensor:
    """k-means colour clusters of ``images [B, 3, H, W]`` in [0, 1] -> ``[k, 3]``.

    Seeded and deterministic: pixels are subsampled with ``seed`` (at most ``max_pixels``), then
    sklearn's ``KMeans`` (``MiniBatchKMeans`` above 64 clusters) runs with ``random_state=seed``.
    Clusters are sorted by luminance, darkest first. If the images hold fewer than ``k`` distinct
    colours, those colours are the palette, the last one repeated to fill ``k`` rows.
    """
    if k < 1:
        raise ValueError(f"palette size: expected k >= 1, got {k}")
    x = _pixels(images).detach().float().cpu().numpy()
    rng = np.random.default_rng(seed)
    if len(x) > max_pixels:
        x = x[rng.choice(len(x), max_pixels, replace=False)]
    unique = np.unique(x.round(6), axis=0)
    if len(unique) <= k:
        centres = np.concatenate([unique, np.repeat(unique[-1:], k - len(unique), axis=0)])
    else:
        from sklearn.cluster import KMeans, MiniBatchKMeans  # imported on first use

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn's convergence chatter on duplicate pixels
            if k > 64:
                km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=4096)
            else:
                km = KMeans(n_clusters=k, random_state=seed, n_init=4)
            centres = km.fit(x).cluster_centers_
    luminance = centres @ np.array([0.299, 0.587, 0.114])
    centres = centres[np.lexsort((centres[:, 2], centres[:, 1], centres[:, 0], luminance))]
    return torch.from_numpy(np.clip(centres, 0.0, 1.0).astype(np.float32))


def nearest(pixels: Tensor, colours: Tensor, *, chunk: int = 65_536) -> Tensor:
    """Index of the nearest colour for each of ``pixels [N, 3]`` given ``colours [K, 3]`` -> ``[N]``.
    Squared Euclidean distance; ties go to the lower index. Computed ``chunk`` pixels at a time."""
    c = colours.float()
    c2 = c.pow(2).sum(-1)  # [K]
    out = []
    for start in range(0, pixels.shape[0], chunk):
        p = pixels[start : start + chunk].float()
        d = p.pow(2).sum(-1, keepdim=True) - 2 * p @ c.T + c2  # [n, K]
        out.append(d.argmin(dim=-1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=pixels.device)


class Palette(nn.Module):
    """``clusters [K, 3]``: the model's colours in [0, 1], a persistent buffer (saved and loaded
    with the weights, never trained). ``encode``: images -> tokens; ``decode``: tokens -> images."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("clusters", default_colours(size), persistent=True)

    def set_(self, colours: Tensor) -> Palette:
        """Replace the colours in place; a palette of another size is a ``ValueError``."""
        colours = torch.as_tensor(colours, dtype=torch.float32)
        if colours.dim() != 2 or colours.shape[1] != 3:
            raise ValueError(f"palette: expected colours [K, 3], got {list(colours.shape)}")
        if colours.shape[0] != self.size:
            raise ValueError(
                f"palette of {colours.shape[0]} colours does not fit a model with {self.size} colour clusters "
                f"(vocabulary {self.size + 1} = clusters + SOS); fit a palette with k={self.size} or build the "
                f"model with clusters={colours.shape[0]}"
            )
        with torch.no_grad():
            self.clusters.copy_(colours.to(self.clusters.device))
        return self

    def encode(self, images: Tensor) -> Tensor:
        """``images [B, 3, H, W]`` in [0, 1] -> tokens ``[B, H * W]`` (raster order)."""
        b = images.shape[0]
        return nearest(_pixels(images), self.clusters).reshape(b, -1)

    def decode(self, tokens: Tensor, height: int | None = None, width: int | None = None) -> Tensor:
        """Tokens ``[B, H * W]`` -> images ``[B, 3, H, W]`` (a square image if no size is given)."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens: expected [B, H * W], got {list(tokens.shape)}")
        n = tokens.shape[1]
        if height is None or width is None:
            side = math.isqrt(n)
            if side * side != n:
                raise ValueError(f"tokens: {n} per image is not a square image; pass height and width")
            height = width = side
        if height * width != n:
            raise ValueError(f"tokens: expected {height} x {width} = {height * width} per image, got {n}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.size):
            raise ValueError(f"tokens: expected colour indices in [0, {self.size - 1}], got values in "
                             f"[{int(tokens.min())}, {int(tokens.max())}]")
        rgb = self.clusters[tokens]  # [B, H*W, 3]
        return rgb.reshape(tokens.shape[0], height, width, 3).permute(0, 3, 1, 2).contiguous()

    def extra_repr(self) -> str:
        return f"{self.size} colours"
