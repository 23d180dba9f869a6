"""LLaVA-NeXT's "anyres" image preprocessing (Liu et al. 2024, *LLaVA-NeXT: Improved reasoning, OCR,
and world knowledge*), step for step as transformers' ``LlavaNextImageProcessor`` (PIL backend) does
it, plus the ``<image>`` token count of ``LlavaNextProcessor`` and the model's feature unpadding.

For one image of original size ``(H, W)``:

1. any mode to RGB (transparency over white), as CLIP's reading does (``tatlas.data.images``);
2. pick the grid pinpoint ``(h, w)`` that keeps the most of the image's pixels once scaled to fit
   inside it, then the one that wastes the least area (:func:`select_best_resolution`);
3. scale the image to fit that pinpoint (the limiting side exactly, the other ``ceil``-ed), bicubic,
   and paste it centred on a **black** ``h x w`` canvas; cut the canvas into ``crop``-sized tiles,
   row-major;
4. the base view: the whole image squashed to ``size x size`` (aspect ratio not kept);
5. every view (base first, then the tiles) then goes through CLIP's path: shortest side to ``size``,
   centre crop ``crop``, ``x * rescale_factor``, ``(x - mean) / std``.

LLaVA-1.5 needs none of this: it is CLIP's preprocessing (``tatlas.models.clip.preprocess``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ...data.images import open_rgb, to_rgb
from ..clip.config import CLIP_MEAN, CLIP_STD
from ..clip.preprocess import normalise, resize_crop

BICUBIC = 3  # PIL.Image.Resampling.BICUBIC; transformers' ``resample`` uses PIL's integer codes

#: llava-v1.6 checkpoints' pinpoints, each (height, width)
LLAVA_NEXT_PINPOINTS: tuple[tuple[int, int], ...] = ((336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008))

# transformers' ``LlavaNextImageProcessor`` class defaults: what a preprocessor_config.json that
# leaves a key out gets there (and so in :meth:`AnyresSettings.from_hf`)
_HF_DEFAULTS: dict[str, Any] = {
    "size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224},
    "image_grid_pinpoints": [list(p) for p in LLAVA_NEXT_PINPOINTS],
    "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD), "do_pad": True, "do_resize": True,
    "do_center_crop": True, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
    "resample": BICUBIC,
}


# ---------------------------------------------------------------------------------------------
# Reading images (shared with InternVL's tiling)
# ---------------------------------------------------------------------------------------------


def as_rgb(image: Any) -> Any:
    """A path, a ``PIL.Image`` (any mode) or a ``uint8`` array ``[H, W]`` / ``[H, W, C]`` (C in 1, 3,
    4; channels last) -> an RGB ``PIL.Image`` of at least 1 x 1 pixel. One-line ``ValueError``
    otherwise (an unreadable file is named)."""
    from PIL import Image

    if isinstance(image, (str, Path)):
        img = open_rgb(image)
    elif isinstance(image, Image.Image):
        img = image
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"image array must be uint8 (channels last), got dtype {image.dtype}")
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[..., 0]
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
            raise ValueError(f"image array must be [H, W] or [H, W, 3|4] (channels last), got shape {image.shape}")
        if min(image.shape[:2]) < 1:
            raise ValueError(f"image is {image.shape[0]}x{image.shape[1]} pixels (height x width); need at least 1x1")
        img = Image.fromarray(np.ascontiguousarray(image))
    else:
        raise ValueError(f"expected an image path, PIL.Image or uint8 array, got {type(image).__name__}")  # noqa: TRY004
    if img.width < 1 or img.height < 1:
        raise ValueError(f"image is {img.height}x{img.width} pixels (height x width); need at least 1x1")
    return to_rgb(img)


def to_pixels(img: Any, rescale_factor: float | None, mean: Sequence[float] | None,
              std: Sequence[float] | None) -> Tensor:
    """RGB ``PIL.Image`` -> ``float32 [3, H, W]``: ``x * rescale_factor`` (in float64, then to
    float32, as transformers rescales) and ``(x - mean) / std`` (skipped where ``None``)."""
    array = np.asarray(img, dtype=np.float64 if rescale_factor is not None else np.float32)
    if rescale_factor is not None:
        array = array * rescale_factor
    pixels = torch.from_numpy(array.astype(np.float32)).permute(2, 0, 1).contiguous()
    return normalise(pixels, mean, std) if mean is not None else pixels


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


def _pair(value: Any, what: str) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, dict) and "height" in value and "width" in value:
        return (int(value["height"]), int(value["width"]))
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return (int(value[0]), int(value[1]))
    raise ValueError(f"{what} must be an int, (height, width) or {{'height': .., 'width': ..}}, got {value!r}")


@dataclass(frozen=True)
class AnyresSettings:
    """What ``LlavaNextImageProcessor`` honours. ``size``: an int is the shortest edge each view is
    resized to (and the base view's square side), a pair an exact ``(height, width)``; ``crop``:
    ``(height, width)`` of the centre crop, and ``crop[0]`` is also the side of the tiles the padded
    canvas is cut into; ``grid_pinpoints``: candidate canvases ``(height, width)``, for the model
    multiples of ``crop[0]`` (else the canvas's last row/column of tiles is cut short, as
    transformers does, and :func:`anyres_grid` refuses it); ``resample``: PIL's filter code
    (3 = bicubic)."""

    size: int | tuple[int, int] = 336
    crop: tuple[int, int] = (336, 336)
    grid_pinpoints: tuple[tuple[int, int], ...] = LLAVA_NEXT_PINPOINTS
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD
    do_pad: bool = True
    do_resize: bool = True
    do_center_crop: bool = True
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    resample: int = BICUBIC

    def __post_init__(self) -> None:
        sides = (self.size,) if isinstance(self.size, int) else tuple(self.size)
        if min(sides) < 1 or min(self.crop) < 1:
            raise ValueError(f"size {self.size} and crop {self.crop} must be positive")
        if not self.grid_pinpoints:
            raise ValueError("grid_pinpoints is empty; LLaVA-NeXT needs at least one (height, width)")
        for h, w in self.grid_pinpoints:
            if h < 1 or w < 1:
                raise ValueError(f"grid pinpoint ({h}, {w}) must have a positive height and width")

    @property
    def tile(self) -> int:
        """Side of the tiles the canvas is cut into (transformers' ``patch_size``: the crop height)."""
        return self.crop[0]

    @property
    def base_hw(self) -> tuple[int, int]:
        """``(height, width)`` the whole image is squashed to for the base view."""
        return (self.size, self.size) if isinstance(self.size, int) else tuple(self.size)

    @classmethod
    def from_hf(cls, d: dict) -> AnyresSettings:
        """From a ``preprocessor_config.json`` dict of ``LlavaNextImageProcessor``; keys left out take
        that class's defaults (224, not 336). ``size`` may be ``{"shortest_edge": n}``,
        ``{"height": h, "width": w}`` or an int; ``crop_size`` ``{"height": h, "width": w}`` or an int."""
        d = {**_HF_DEFAULTS, **{k: v for k, v in d.items() if v is not None}}
        size = d["size"]
        if isinstance(size, dict) and set(size) == {"shortest_edge"}:
            size = int(size["shortest_edge"])
        elif not isinstance(size, int):
            size = _pair(size, "size")
        return cls(
            size=size, crop=_pair(d["crop_size"], "crop_size"),
            grid_pinpoints=tuple((int(h), int(w)) for h, w in d["image_grid_pinpoints"]),
            mean=tuple(float(x) for x in d["image_mean"]), std=tuple(float(x) for x in d["image_std"]),
            do_pad=bool(d["do_pad"]), do_resize=bool(d["do_resize"]), do_center_crop=bool(d["do_center_crop"]),
            do_rescale=bool(d["do_rescale"]), rescale_factor=float(d["rescale_factor"]),
            do_normalize=bool(d["do_normalize"]), resample=int(d["resample"]),
        )


# ---------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------


def select_best_resolution(image_hw: tuple[int, int], pinpoints: Sequence[Sequence[int]]) -> tuple[int, int]:
    """LLaVA-NeXT's canvas choice: scale the image to fit each pinpoint ``(h, w)``; keep the one whose
    fitted image has the most pixels (capped at the original's count: no credit for upscaling), ties
    to the least canvas area left over, further ties to the first listed. Returns ``(h, w)``."""
    height, width = image_hw
    if height < 1 or width < 1:
        raise ValueError(f"image is {height}x{width} pixels (height x width); need at least 1x1")
    best, best_key = None, (0, 0.0)
    for h, w in pinpoints:
        scale = min(w / width, h / height)
        kept = min(int(width * scale) * int(height * scale), width * height)
        key = (kept, -(h * w - kept))
        if best is None or key > best_key:
            best, best_key = (int(h), int(w)), key
    if best is None:
        raise ValueError("no grid pinpoints to choose from")
    return best


def anyres_grid(image_hw: tuple[int, int], pinpoints: Sequence[Sequence[int]], tile: int) -> tuple[int, int]:
    """``(rows, cols)`` of ``tile x tile`` tiles covering the best canvas for ``image_hw``. A canvas
    that is not a multiple of ``tile`` is refused: transformers' processor would cut ``ceil`` tiles
    (the last ones short) while the model and the token count expect ``floor``."""
    h, w = select_best_resolution(image_hw, pinpoints)
    if h % tile or w % tile:
        raise ValueError(f"grid pinpoint ({h}, {w}) is not a multiple of the tile size {tile}: "
                         f"the processor's tiles and the model's feature grid would disagree")
    return h // tile, w // tile


def fit_within(image_hw: tuple[int, int], canvas_hw: tuple[int, int]) -> tuple[int, int]:
    """Size ``(h, w)`` the image is scaled to inside the canvas, aspect kept: the limiting side
    matches the canvas, the other is ``ceil``-ed (and capped at the canvas)."""
    height, width = image_hw
    canvas_h, canvas_w = canvas_hw
    scale_w, scale_h = canvas_w / width, canvas_h / height
    if scale_w < scale_h:
        return min(math.ceil(height * scale_w), canvas_h), canvas_w
    return canvas_h, min(math.ceil(width * scale_h), canvas_w)


def unpadded_shape(h_cur: int, w_cur: int, image_hw: tuple[int, int]) -> tuple[int, int]:
    """LLaVA-NeXT's ``unpad_image`` on a ``[C, h_cur, w_cur]`` feature grid of an image of original
    ``image_hw``: the grid was padded symmetrically along one axis; scale the original to the grid's
    other side, round to 7 decimals and truncate, and drop ``(pad // 2)`` rows/cols from *each* end
    (so an odd remainder leaves one padding row/col). Returns the kept ``(h, w)``."""
    height, width = image_hw
    if width / height > w_cur / h_cur:
        new_h = int(round(height * (w_cur / width), 7))
        return h_cur - 2 * ((h_cur - new_h) // 2), w_cur
    new_w = int(round(width * (h_cur / height), 7))
    return h_cur, w_cur - 2 * ((w_cur - new_w) // 2)


def anyres_token_count(image_hw: tuple[int, int], *, tile: int, patch: int, pinpoints: Sequence[Sequence[int]],
                       newline: bool = True, keep_class: bool = False) -> int:
    """Number of ``<image>`` tokens one image of original ``image_hw`` becomes in LLaVA-NeXT:
    the base view's ``(tile // patch)**2`` features (``+1`` with ``keep_class``: the CLS feature
    kept, ``vision_feature_select_strategy="full"``), plus the tiles' features merged into one
    ``rows*g x cols*g`` grid, unpadded (:func:`unpadded_shape`), with one newline feature per row."""
    grid = tile // patch
    rows, cols = anyres_grid(image_hw, pinpoints, tile)
    h, w = unpadded_shape(rows * grid, cols * grid, image_hw)
    return grid * grid + int(keep_class) + h * w + (h if newline else 0)


# ---------------------------------------------------------------------------------------------
# Pixels
# ---------------------------------------------------------------------------------------------


def clip_view(img: Any, s: AnyresSettings) -> Tensor:
    """One view (base or tile, an RGB ``PIL.Image``) through CLIP's path -> ``[3, S, S]``: what
    ``CLIPImageProcessor`` does to a LLaVA-1.5 image."""
    if s.do_resize and s.do_center_crop and isinstance(s.size, int) and s.crop == (s.size, s.size) \
            and s.resample == BICUBIC:
        img = resize_crop(img, s.size)  # the checkpoints' case: exactly CLIP's resize + crop
    else:
        if s.do_resize:
            w, h = img.size
            if isinstance(s.size, int):  # shortest side to size, the long one truncated
                short, long = min(h, w), max(h, w)
                new_long = int(s.size * long / short)
                new_h, new_w = (new_long, s.size) if w <= h else (s.size, new_long)
            else:
                new_h, new_w = s.size
            img = img.resize((new_w, new_h), resample=s.resample)
        if s.do_center_crop:  # off-image parts of the box (crop bigger than view) come back black
            w, h = img.size
            top, left = (h - s.crop[0]) // 2, (w - s.crop[1]) // 2
            img = img.crop((left, top, left + s.crop[1], top + s.crop[0]))
    return to_pixels(img, s.rescale_factor if s.do_rescale else None,
                     s.mean if s.do_normalize else None, s.std if s.do_normalize else None)


def anyres_tiles(image: Any, s: AnyresSettings) -> Tensor:
    """One image -> ``float32 [1 + rows*cols, 3, S, S]``: the base view, then the tiles of the
    padded best-fit canvas in row-major order, each normalised (``S`` = ``crop`` side). A canvas
    side that is not a multiple of the tile gives a short last tile there, stretched by the views'
    resize as transformers does."""
    from PIL import Image

    img = as_rgb(image)
    canvas_hw = select_best_resolution((img.height, img.width), s.grid_pinpoints)
    fit_h, fit_w = fit_within((img.height, img.width), canvas_hw)
    canvas = Image.new("RGB", canvas_hw[::-1], (0, 0, 0))
    canvas.paste(img.resize((fit_w, fit_h), resample=s.resample),
                 ((canvas_hw[1] - fit_w) // 2, (canvas_hw[0] - fit_h) // 2))
    base_h, base_w = s.base_hw
    views = [img.resize((base_w, base_h), resample=s.resample)]
    views += [canvas.crop((x, y, min(x + s.tile, canvas_hw[1]), min(y + s.tile, canvas_hw[0])))
              for y in range(0, canvas_hw[0], s.tile) for x in range(0, canvas_hw[1], s.tile)]
    return torch.stack([clip_view(v, s) for v in views])


def preprocess_anyres(images: Sequence[Any], s: AnyresSettings) -> tuple[Tensor, Tensor, list[int]]:
    """Images -> ``(pixel_values [B, P_max, 3, S, S], image_sizes int64 [B, 2], tiles_per_image)``.
    ``pixel_values[i, n:]`` is zeros for an image with ``n < P_max`` views (``do_pad``);
    ``image_sizes`` holds each original ``(height, width)``."""
    if len(images) == 0:
        raise ValueError("no images to preprocess")
    rgb = [as_rgb(im) for im in images]
    per_image = [anyres_tiles(im, s) for im in rgb]
    counts = [len(t) for t in per_image]
    if not s.do_pad and len(set(counts)) > 1:
        raise ValueError(f"images have different tile counts {counts}; batching them needs do_pad=True")
    p_max = max(counts)
    out = per_image[0].new_zeros((len(per_image), p_max, *per_image[0].shape[1:]))
    for i, tiles in enumerate(per_image):
        out[i, : len(tiles)] = tiles
    sizes = torch.tensor([[im.height, im.width] for im in rgb], dtype=torch.long)
    return out, sizes, counts
