"""Drawing helpers of the world's renderers: shape distance fields, textures, blurs and the sound
envelope."""

from __future__ import annotations

import functools

import numpy as np

from .config import (
    SHAPES,
    TEXTURES,
    _TEXTURE_SHADE,
)


def _sdf(shape: str, x: np.ndarray, y: np.ndarray, r: float) -> np.ndarray:
    """Signed distance in pixels (negative inside) of ``shape`` with outer radius ``r``.

    ``x`` is ``[w]`` and ``y`` is ``[h, 1]`` (pixel centres relative to the object's centre;
    y grows downwards); the result is ``[h, w]``. Exact for circle, square, diamond and cross,
    close enough near the edge for triangle and star (used only for 1-pixel antialiasing).
    """
    ax, ay = np.abs(x), np.abs(y)
    if shape == "circle":
        return np.sqrt(x * x + y * y) - r
    if shape == "square":
        return np.maximum(ax, ay) - 0.8 * r
    if shape == "diamond":
        return (ax + ay - r) * np.float32(np.sqrt(0.5))
    if shape == "cross":
        w, d = 0.32 * r, 0.92 * r
        return np.minimum(np.maximum(ax - w, ay - d), np.maximum(ax - d, ay - w))
    if shape == "triangle":  # equilateral, pointing up, centred vertically
        yy = y - 0.2 * r
        return np.maximum(yy, 0.8660254 * ax - 0.5 * yy) - 0.55 * r
    if shape == "star":  # five points, one pointing up (Inigo Quilez's exact sdStar5)
        return _star_sdf(x, y, r, inner=0.45)
    raise ValueError(f"shape: expected one of {SHAPES}, got {shape!r}")


def _star_sdf(x: np.ndarray, y: np.ndarray, r: float, *, inner: float) -> np.ndarray:
    """Exact signed distance of a regular five-pointed star (outer radius ``r``, inner
    radius ratio ``inner``): fold the plane into one tenth by two reflections, then measure
    to one edge segment."""
    k1x, k1y = 0.809016994375, -0.587785252292  # (cos 36, -sin 36)
    px = np.abs(np.broadcast_to(x, np.broadcast_shapes(x.shape, y.shape))).astype(np.float32)
    py = np.broadcast_to(-y, px.shape).astype(np.float32)  # y up
    for kx in (k1x, -k1x):
        d = 2.0 * np.maximum(kx * px + k1y * py, 0.0)
        px, py = px - d * kx, py - d * k1y
    px = np.abs(px)
    py = py - r
    bax, bay = -inner * k1y, inner * k1x - 1.0
    h = np.clip((px * bax + py * bay) / (bax * bax + bay * bay), 0.0, r)
    return np.hypot(px - bax * h, py - bay * h) * np.sign(py * bax - px * bay)


def _texture(texture: str, x: np.ndarray, y: np.ndarray, r: float) -> np.ndarray:
    """Shade factor ``[h, w]`` in {_TEXTURE_SHADE, 1} for a striped or dotted pattern."""
    period = max(3.0, 0.6 * r)
    if texture == "striped":  # diagonal bands
        dark = ((x + y) / period) % 1.0 < 0.5
    elif texture == "dotted":  # a lattice of dots
        dx = (x / period) % 1.0 - 0.5
        dy = (y / period) % 1.0 - 0.5
        dark = dx * dx + dy * dy < 0.09
    else:
        raise ValueError(f"texture: expected one of {TEXTURES}, got {texture!r}")
    return np.where(dark, np.float32(_TEXTURE_SHADE), np.float32(1.0))


@functools.lru_cache(maxsize=16)
def _blur_matrix(size: int, sigma: float) -> np.ndarray:
    """``[size, size]`` row-normalised Gaussian blur: ``G @ X @ G.T`` blurs an image ``X``."""
    i = np.arange(size, dtype=np.float32)
    g = np.exp(-0.5 * ((i[:, None] - i[None, :]) / sigma) ** 2)
    g /= g.sum(axis=1, keepdims=True)
    g.setflags(write=False)
    return g


@functools.lru_cache(maxsize=16)
def _envelope(n: int, sample_rate: int) -> np.ndarray:
    """Attack-sustain-release envelope ``[n]`` (10 ms attack, 50 ms release), read-only."""
    env = np.ones(n, dtype=np.float32)
    attack, release = min(int(0.01 * sample_rate), n // 4), min(int(0.05 * sample_rate), n // 4)
    env[:attack] = np.linspace(0.0, 1.0, attack, dtype=np.float32)
    env[n - release:] = np.linspace(1.0, 0.0, release, dtype=np.float32)
    env.setflags(write=False)
    return env
