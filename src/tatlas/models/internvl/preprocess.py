"""InternVL's image tiling, "dynamic high resolution" (InternVL 1.5, Chen et al. 2024, §3.2), step for
step as transformers' ``GotOcr2ImageProcessor`` (PIL backend) does it under ``InternVLProcessor``:

1. any mode to RGB (transparency over white), as CLIP's reading does (``tatlas.data.images``);
2. among the grids of ``cols x rows`` tiles with ``min_tiles <= cols*rows <= max_tiles``, take the one
   whose aspect ratio ``cols / rows`` is closest to the image's ``W / H`` (:func:`closest_grid`);
3. resize the image (bicubic, aspect **not** kept) to ``rows*tile x cols*tile`` and cut it into
   ``tile x tile`` tiles, row-major; when there is more than one tile, append a thumbnail: the whole
   image resized to ``tile x tile``;
4. each tile ``x * rescale_factor``, then ``(x - mean) / std`` (ImageNet statistics for InternVL).

Each tile then costs ``image_seq_length`` (256 for 448 px tiles) ``<IMG_CONTEXT>`` tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..clip.config import CLIP_MEAN, CLIP_STD
from ..llava.preprocess import BICUBIC, as_rgb, to_pixels

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# transformers' ``GotOcr2ImageProcessor`` class defaults, for keys a preprocessor_config.json leaves out
_HF_DEFAULTS: dict[str, Any] = {
    "size": {"height": 384, "width": 384}, "min_patches": 1, "max_patches": 12, "crop_to_patches": False,
    "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD), "do_resize": True, "do_rescale": True,
    "rescale_factor": 1 / 255, "do_normalize": True, "resample": BICUBIC,
}


@dataclass(frozen=True)
class TilingSettings:
    """What ``GotOcr2ImageProcessor`` honours, with InternVL checkpoints' values as defaults.
    ``tile``: side of the square tiles; ``crop_to_patches=False`` (or ``max_tiles == 1``): the whole
    image resized to one tile (``do_resize``), no tiling; ``thumbnail``: append the whole-image
    thumbnail when an image gives more than one tile (transformers always does);
    ``resample``: PIL's filter code (3 = bicubic)."""

    tile: int = 448
    min_tiles: int = 1
    max_tiles: int = 12
    thumbnail: bool = True
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    crop_to_patches: bool = True
    do_resize: bool = True
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    resample: int = BICUBIC

    def __post_init__(self) -> None:
        if self.tile < 1:
            raise ValueError(f"tile must be a positive size, got {self.tile}")
        if self.min_tiles < 1:
            raise ValueError(f"min_tiles must be at least 1, got {self.min_tiles}")
        if self.max_tiles < self.min_tiles:
            raise ValueError(f"max_tiles ({self.max_tiles}) is smaller than min_tiles ({self.min_tiles})")

    @property
    def tiles(self) -> bool:
        """Whether images are cut into tiles at all (transformers: ``crop_to_patches and max > 1``)."""
        return self.crop_to_patches and self.max_tiles > 1

    @classmethod
    def from_hf(cls, d: dict, *, internvl_processor: bool = True) -> TilingSettings:
        """From a ``preprocessor_config.json`` dict of ``GotOcr2ImageProcessor`` (``size``,
        ``min_patches``, ``max_patches``, ``crop_to_patches``, ``image_mean``, ...); keys left out take
        that class's defaults. ``InternVLProcessor`` passes ``crop_to_patches=True`` whatever the
        file says (InternVL checkpoints' files say ``false``): ``internvl_processor=True`` does the
        same, ``False`` reads the file, as the bare image processor does."""
        d = {**_HF_DEFAULTS, **{k: v for k, v in d.items() if v is not None}}
        size = d["size"]
        if isinstance(size, dict) and "height" in size and "width" in size:
            if size["height"] != size["width"]:
                raise ValueError(f"non-square tiles are not supported: size {size}")
            tile = int(size["height"])
        elif isinstance(size, int):
            tile = size
        else:
            raise ValueError(f"size must be {{'height': n, 'width': n}} or an int, got {size!r}")
        return cls(
            tile=tile, min_tiles=int(d["min_patches"]), max_tiles=int(d["max_patches"]),
            crop_to_patches=True if internvl_processor else bool(d["crop_to_patches"]),
            mean=tuple(float(x) for x in d["image_mean"]), std=tuple(float(x) for x in d["image_std"]),
            do_resize=bool(d["do_resize"]), do_rescale=bool(d["do_rescale"]),
            rescale_factor=float(d["rescale_factor"]), do_normalize=bool(d["do_normalize"]),
            resample=int(d["resample"]),
        )


def closest_grid(image_hw: tuple[int, int], *, min_tiles: int, max_tiles: int, tile: int) -> tuple[int, int]:
    """InternVL 1.5's grid choice -> ``(rows, cols)``. Candidates ``cols x rows`` in order of tile
    count (within one count, fewer columns first); the one whose ``cols / rows`` is nearest
    ``W / H`` wins. On an exact tie a later (so not smaller) grid replaces the current best only
    while the image's area exceeds half the grid's pixel area ``cols*rows*tile**2``."""
    height, width = image_hw
    if height < 1 or width < 1:
        raise ValueError(f"image is {height}x{width} pixels (height x width); need at least 1x1")
    if min_tiles < 1 or max_tiles < min_tiles:
        raise ValueError(f"need 1 <= min_tiles <= max_tiles, got min_tiles={min_tiles}, max_tiles={max_tiles}")
    grids = sorted(((c, r) for c in range(1, max_tiles + 1) for r in range(1, max_tiles + 1)
                    if min_tiles <= c * r <= max_tiles), key=lambda g: g[0] * g[1])
    aspect, area = width / height, width * height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in grids:
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and area > 0.5 * tile * tile * cols * rows:
            best = (cols, rows)
    return best[1], best[0]


def tile_count(image_hw: tuple[int, int], s: TilingSettings) -> int:
    """How many tiles :func:`tile_image` gives an image of ``image_hw`` (thumbnail included)."""
    if not s.tiles:
        return 1
    rows, cols = closest_grid(image_hw, min_tiles=s.min_tiles, max_tiles=s.max_tiles, tile=s.tile)
    return rows * cols + int(s.thumbnail and rows * cols > 1)


def tile_image(image: Any, s: TilingSettings) -> Tensor:
    """One image -> ``float32 [n, 3, tile, tile]``: the ``rows x cols`` tiles row-major, then the
    thumbnail when ``rows * cols > 1`` (``n = 1`` without tiling)."""
    img = as_rgb(image)
    if s.tiles:
        rows, cols = closest_grid((img.height, img.width), min_tiles=s.min_tiles, max_tiles=s.max_tiles, tile=s.tile)
        canvas = img.resize((cols * s.tile, rows * s.tile), resample=s.resample)
        views = [canvas.crop((c * s.tile, r * s.tile, (c + 1) * s.tile, (r + 1) * s.tile))
                 for r in range(rows) for c in range(cols)]
        if s.thumbnail and len(views) > 1:
            views.append(img.resize((s.tile, s.tile), resample=s.resample))
    else:
        views = [img.resize((s.tile, s.tile), resample=s.resample) if s.do_resize else img]
    rescale = s.rescale_factor if s.do_rescale else None
    mean, std = (s.mean, s.std) if s.do_normalize else (None, None)
    return torch.stack([to_pixels(v, rescale, mean, std) for v in views])


def preprocess_tiles(images: Sequence[Any], s: TilingSettings) -> tuple[Tensor, list[int]]:
    """Images -> ``(pixel_values [sum n_i, 3, tile, tile], tiles_per_image [n_i])``, images' tiles
    concatenated in order."""
    if len(images) == 0:
        raise ValueError("no images to preprocess")
    per_image = [tile_image(im, s) for im in images]
    if len({t.shape[1:] for t in per_image}) > 1:
        raise ValueError("images kept at different sizes (do_resize=False without tiling) cannot be concatenated")
    return torch.cat(per_image), [len(t) for t in per_image]
