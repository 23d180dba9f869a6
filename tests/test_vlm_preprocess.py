"""LLaVA-NeXT's anyres preprocessing and InternVL's dynamic tiling against transformers' PIL image
processors (``LlavaNextImageProcessorPil``, ``GotOcr2ImageProcessorPil``), ``LlavaNextProcessor``'s
``<image>`` expansion and the LLaVA-NeXT model's ``unpad_image``, on real photographs cut to several
aspect ratios; and the one-line errors on bad input. Every processor is built here with explicit
settings (nothing from the hub)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tatlas.models.internvl.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TilingSettings,
    closest_grid,
    preprocess_tiles,
    tile_count,
    tile_image,
)
from tatlas.models.llava.preprocess import (
    AnyresSettings,
    anyres_grid,
    anyres_tiles,
    anyres_token_count,
    preprocess_anyres,
    select_best_resolution,
    unpadded_shape,
)

PINS_336 = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
PINS_32 = [[32, 64], [64, 32], [64, 64], [96, 32], [32, 96], [96, 96], [32, 128], [128, 32]]

LLAVA_CONFIGS = {  # LlavaNextImageProcessor kwargs, as a preprocessor_config.json holds them
    "llava-v1.6 336": {"size": {"shortest_edge": 336}, "crop_size": {"height": 336, "width": 336},
                       "image_grid_pinpoints": PINS_336},
    "small 32": {"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32},
                 "image_grid_pinpoints": PINS_32},
    # off the checkpoints' path: views resized to 40 then cropped to 32, bilinear, other statistics
    "size 40 crop 32 bilinear": {"size": {"shortest_edge": 40}, "crop_size": {"height": 32, "width": 32},
                                 "image_grid_pinpoints": PINS_32, "resample": 2,
                                 "image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.3, 0.4]},
    "size 40x40 no centre crop": {"size": {"height": 40, "width": 40}, "crop_size": {"height": 32, "width": 32},
                                  "image_grid_pinpoints": PINS_32[:4], "do_center_crop": False},
}
INTERNVL_CONFIGS = {  # GotOcr2ImageProcessor kwargs (crop_to_patches=True, as InternVLProcessor passes)
    "internvl 448": {"size": {"height": 448, "width": 448}, "crop_to_patches": True, "min_patches": 1,
                     "max_patches": 12, "image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD)},
    "tile 64 max 6": {"size": {"height": 64, "width": 64}, "crop_to_patches": True, "max_patches": 6},
    "tile 64 min 3 max 12": {"size": {"height": 64, "width": 64}, "crop_to_patches": True, "min_patches": 3,
                             "max_patches": 12},
}


def _sample_folder() -> Path:
    import sklearn.datasets

    return Path(sklearn.datasets.__file__).parent / "images"


@pytest.fixture(scope="module")
def photos() -> dict[str, tuple[object, Image.Image]]:
    """name -> (what our code is given: path / uint8 array / PIL, the same image as a PIL for transformers)."""
    from sklearn.datasets import load_sample_image

    china, flower = load_sample_image("china.jpg"), load_sample_image("flower.jpg")  # both 427 x 640
    arrays = {
        "wide 3:1": flower[:200, :600], "tall 1:2.5": china[:400, 240:400], "square": flower[:427, 100:527],
        "tiny 20x31": china[200:220, 300:331], "rotated 90": np.ascontiguousarray(np.rot90(flower)),
    }
    out: dict[str, tuple[object, Image.Image]] = {"china.jpg (path)": (_sample_folder() / "china.jpg",
                                                                      Image.open(_sample_folder() / "china.jpg"))}
    out.update({name: (a, Image.fromarray(a)) for name, a in arrays.items()})
    gray = Image.fromarray(flower[100:260, 50:610]).convert("L")  # 160 x 560 grayscale, converted to RGB
    out["gray 2:7"] = (gray, gray)
    return out


# ---------------------------------------------------------------------------------------------
# LLaVA-NeXT
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(LLAVA_CONFIGS))
def test_anyres_pixels_equal_transformers(name, photos):
    from transformers import LlavaNextImageProcessorPil
    from transformers.models.llava_next.modeling_llava_next import (
        image_size_to_num_patches,
    )

    cfg = LLAVA_CONFIGS[name]
    s = AnyresSettings.from_hf(cfg)
    ref = LlavaNextImageProcessorPil(**cfg)(images=[p for _, p in photos.values()], return_tensors="pt")
    pixels, sizes, counts = preprocess_anyres([x for x, _ in photos.values()], s)

    assert pixels.dtype == torch.float32 and pixels.shape == ref["pixel_values"].shape
    assert (pixels - ref["pixel_values"]).abs().max().item() <= 1e-6  # same views, same order
    assert torch.equal(sizes, ref["image_sizes"]) and sizes.dtype == torch.long
    assert sizes.tolist() == [[p.height, p.width] for _, p in photos.values()]
    for i, (h, w) in enumerate(sizes.tolist()):
        rows, cols = anyres_grid((h, w), s.grid_pinpoints, s.tile)
        assert counts[i] == 1 + rows * cols == image_size_to_num_patches((h, w), cfg["image_grid_pinpoints"], s.tile)
        assert not pixels[i, counts[i]:].any()  # padded over the tile axis with zeros, as do_pad
    assert len(set(counts)) > 1  # the photos really give different grids
    x, _ = photos["tall 1:2.5"]
    torch.testing.assert_close(anyres_tiles(x, s), pixels[2, : counts[2]], rtol=0, atol=0)


def test_best_resolution_and_grid_equal_transformers():
    from transformers.image_processing_utils import select_best_resolution as hf_select
    from transformers.models.llava_next.modeling_llava_next import (
        get_anyres_image_grid_shape,
    )

    rng = random.Random(0)
    sizes = [(rng.randint(1, 2000), rng.randint(1, 2000)) for _ in range(400)]
    sizes += [(336, 672), (672, 336), (1, 1), (1, 3000), (3000, 1), (500, 500)]
    for pins, tile in ((PINS_336, 336), (PINS_32, 32)):
        for hw in sizes:
            assert select_best_resolution(hw, pins) == tuple(hf_select(hw, pins))
            assert anyres_grid(hw, pins, tile) == tuple(get_anyres_image_grid_shape(hw, pins, tile))


def test_unpadded_shape_equals_modeling_unpad_image():
    from transformers.models.llava_next.modeling_llava_next import unpad_image

    rng = random.Random(1)
    for _ in range(3000):
        h_cur, w_cur = rng.randint(1, 96), rng.randint(1, 96)
        image_hw = (rng.randint(1, 3000), rng.randint(1, 3000))
        features = torch.randn(2, h_cur, w_cur)
        assert unpadded_shape(h_cur, w_cur, image_hw) == tuple(unpad_image(features, torch.tensor(image_hw)).shape[1:])


def _tiny_tokenizer():
    """A word-level tokenizer built here: ``<pad>``, ``<image>`` (special) and one word."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({"<pad>": 0, "<image>": 1, "describe": 2}, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<pad>", pad_token="<pad>",
                                   additional_special_tokens=["<image>"])


STRATEGIES = [("default", 1, False), ("full", 1, True), ("full", 0, False)]  # (strategy, extra tokens, keep_class)


@pytest.mark.parametrize("name, patch", [("llava-v1.6 336", 14), ("small 32", 4)])
def test_token_count_equals_llava_next_processor_text(name, patch, photos):
    """The count of ``<image>`` ids ``LlavaNextProcessor`` writes into the text (a real tokenizer
    call, with a tokenizer built locally), for each feature-selection strategy."""
    from transformers import LlavaNextImageProcessorPil, LlavaNextProcessor

    cfg = LLAVA_CONFIGS[name]
    tok, images = _tiny_tokenizer(), [p for _, p in photos.values()]
    for strategy, extra, keep_class in STRATEGIES:
        proc = LlavaNextProcessor(image_processor=LlavaNextImageProcessorPil(**cfg), tokenizer=tok, patch_size=patch,
                                  vision_feature_select_strategy=strategy, num_additional_image_tokens=extra)
        out = proc(images=images, text=["describe <image>"] * len(images), padding=True, return_tensors="pt")
        got = (out["input_ids"] == tok.convert_tokens_to_ids("<image>")).sum(1).tolist()
        want = [anyres_token_count((p.height, p.width), tile=cfg["crop_size"]["height"], patch=patch,
                                   pinpoints=cfg["image_grid_pinpoints"], keep_class=keep_class) for p in images]
        assert got == want


def test_token_count_equals_processor_feature_count_for_many_sizes():
    """``LlavaNextProcessor._get_num_multimodal_tokens`` (its feature count without images) over
    random sizes; and ``newline=False`` drops exactly one token per kept feature row."""
    from transformers import LlavaNextImageProcessorPil, LlavaNextProcessor

    rng = random.Random(2)
    sizes = [(rng.randint(1, 2500), rng.randint(1, 2500)) for _ in range(300)]
    cfg = LLAVA_CONFIGS["llava-v1.6 336"]
    for strategy, extra, keep_class in STRATEGIES:
        proc = LlavaNextProcessor(image_processor=LlavaNextImageProcessorPil(**cfg), tokenizer=_tiny_tokenizer(),
                                  patch_size=14, vision_feature_select_strategy=strategy,
                                  num_additional_image_tokens=extra)
        want = proc._get_num_multimodal_tokens(image_sizes=sizes).num_image_tokens
        assert [anyres_token_count(hw, tile=336, patch=14, pinpoints=PINS_336, keep_class=keep_class)
                for hw in sizes] == want
    for hw in sizes[:50]:
        rows, cols = anyres_grid(hw, PINS_336, 336)
        h, w = unpadded_shape(rows * 24, cols * 24, hw)
        assert anyres_token_count(hw, tile=336, patch=14, pinpoints=PINS_336, newline=False) == 576 + h * w


def test_anyres_class_defaults_cut_short_tiles_like_transformers(photos):
    """transformers' class defaults pair 224 tiles with pinpoints that are multiples of 336: the
    processor then cuts ``ceil`` tiles, the last ones short and stretched; the pixels follow it,
    but the grid (which the model takes as ``floor``) is refused."""
    from transformers import LlavaNextImageProcessorPil

    s = AnyresSettings.from_hf({})
    images = [photos[k] for k in ("wide 3:1", "rotated 90")]
    ref = LlavaNextImageProcessorPil()(images=[p for _, p in images], return_tensors="pt")["pixel_values"]
    pixels, _, counts = preprocess_anyres([x for x, _ in images], s)
    assert counts == [1 + 2 * 3, 1 + 3 * 3]  # canvases (336, 672) and (672, 672): ceil(336 / 224) = 2
    assert pixels.shape == ref.shape and (pixels - ref).abs().max().item() <= 1e-6
    _one_line_error(anyres_grid, ((200, 600,), s.grid_pinpoints, s.tile), "not a multiple")


def test_anyres_settings_from_hf_forms_and_defaults():
    full = AnyresSettings.from_hf({"size": {"shortest_edge": 336}, "crop_size": {"height": 336, "width": 336},
                                   "image_grid_pinpoints": PINS_336, "do_pad": True, "resample": 3})
    assert full == AnyresSettings()  # the llava-v1.6 checkpoints' values are the defaults
    assert full.grid_pinpoints[0] == (336, 672) and full.tile == 336
    bare = AnyresSettings.from_hf({})  # keys left out: transformers' class defaults (224)
    assert bare.size == 224 and bare.crop == (224, 224) and bare.grid_pinpoints == full.grid_pinpoints
    assert AnyresSettings.from_hf({"size": {"height": 40, "width": 48}, "crop_size": 32,
                                   "image_grid_pinpoints": PINS_32}).size == (40, 48)


# ---------------------------------------------------------------------------------------------
# InternVL
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(INTERNVL_CONFIGS))
def test_tiles_equal_transformers(name, photos):
    from transformers import GotOcr2ImageProcessorPil

    cfg = INTERNVL_CONFIGS[name]
    s = TilingSettings.from_hf(cfg)
    hf = GotOcr2ImageProcessorPil(**cfg)
    ref = hf(images=[p for _, p in photos.values()], return_tensors="pt")
    pixels, counts = preprocess_tiles([x for x, _ in photos.values()], s)

    assert pixels.dtype == torch.float32 and pixels.shape == ref["pixel_values"].shape
    assert (pixels - ref["pixel_values"]).abs().max().item() <= 1e-6  # same tiles, same order, thumbnail last
    assert counts == ref["num_patches"].tolist()
    assert counts == [hf.get_number_of_image_patches(p.height, p.width) for _, p in photos.values()]
    assert counts == [tile_count((p.height, p.width), s) for _, p in photos.values()]
    assert len(set(counts)) > 1
    x, _ = photos["wide 3:1"]
    start = sum(counts[:1])
    torch.testing.assert_close(tile_image(x, s), pixels[start: start + counts[1]], rtol=0, atol=0)


def test_closest_grid_equals_transformers_including_ties():
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import (
        get_optimal_tiled_canvas,
    )

    rng = random.Random(3)
    sizes = [(rng.randint(1, 3000), rng.randint(1, 3000)) for _ in range(300)]
    # squares tie (1x1, 2x2, 3x3 ... all have aspect 1): the image's area decides how far up it goes
    sizes += [(n, n) for n in (1, 10, 100, 300, 448, 634, 700, 1000, 1500, 2000, 4000)]
    sizes += [(400, 500), (500, 400), (448, 896), (100, 350)]  # aspect ties between different grids
    for tile, lo, hi in ((448, 1, 12), (448, 1, 6), (64, 1, 12), (64, 3, 12), (448, 4, 4)):
        for hw in sizes:
            cols, rows = get_optimal_tiled_canvas(hw, (tile, tile), lo, hi)
            assert closest_grid(hw, min_tiles=lo, max_tiles=hi, tile=tile) == (rows, cols)


def test_tiling_settings_from_hf_follow_the_internvl_processor():
    # an InternVL checkpoint's preprocessor_config.json: its file says crop_to_patches false ...
    d = {"size": {"height": 448, "width": 448}, "crop_to_patches": False, "min_patches": 1, "max_patches": 12,
         "image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD), "resample": 3}
    assert TilingSettings.from_hf(d) == TilingSettings()  # ... but InternVLProcessor passes True
    bare = TilingSettings.from_hf(d, internvl_processor=False)
    assert not bare.tiles and tile_count((427, 1280), bare) == 1
    photo = np.zeros((100, 300, 3), np.uint8)
    assert tile_image(photo, bare).shape == (1, 3, 448, 448)
    assert TilingSettings.from_hf({}, internvl_processor=False).tile == 384  # transformers' class default
    assert tile_count((100, 300), TilingSettings(max_tiles=1)) == 1


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def _one_line_error(fn, args: tuple, *match: str) -> str:
    """``fn(*args)`` raises a one-line ``ValueError`` holding every ``match``; its message."""
    with pytest.raises(ValueError) as info:
        fn(*args)
    message = str(info.value)
    assert "\n" not in message and all(m in message for m in match), message
    return message


def test_bad_input_is_a_one_line_value_error(tmp_path):
    s, t = AnyresSettings.from_hf(LLAVA_CONFIGS["small 32"]), TilingSettings(tile=64)
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "broken.jpg").write_bytes((_sample_folder() / "china.jpg").read_bytes()[:300])
    for name in ("notes.png", "broken.jpg", "missing.png"):
        path = tmp_path / name
        assert _one_line_error(preprocess_anyres, ([path], s)).startswith(str(path))
        assert _one_line_error(preprocess_tiles, ([str(path)], t)).startswith(str(path))
    for empty in (np.zeros((0, 5, 3), np.uint8), Image.new("RGB", (7, 0))):
        _one_line_error(anyres_tiles, (empty, s), "need at least 1x1")
        _one_line_error(tile_image, (empty, t), "need at least 1x1")
    _one_line_error(tile_image, (np.zeros((8, 8, 3), np.float32), t), "uint8")
    _one_line_error(tile_image, (np.zeros((8, 8, 2), np.uint8), t), "shape")
    _one_line_error(tile_image, (torch.zeros(3, 8, 8), t), "Tensor")
    _one_line_error(lambda: TilingSettings(min_tiles=4, max_tiles=2), (), "max_tiles (2)", "min_tiles (4)")
    _one_line_error(lambda: TilingSettings(min_tiles=0), (), "min_tiles")
    _one_line_error(lambda: closest_grid((10, 10), min_tiles=3, max_tiles=2, tile=8), (), "max_tiles=2")
    _one_line_error(TilingSettings.from_hf, ({"size": {"height": 448, "width": 224}},), "non-square")
    _one_line_error(anyres_grid, ((300, 500), ((336, 500),), 336), "(336, 500)", "multiple of the tile size 336")
    _one_line_error(lambda: AnyresSettings(grid_pinpoints=((0, 336),)), (), "(0, 336)")
    _one_line_error(lambda: AnyresSettings(grid_pinpoints=()), (), "grid_pinpoints")
    _one_line_error(AnyresSettings.from_hf, ({"size": {"shortest_edge": 336, "longest_edge": 672}},), "size")
    _one_line_error(select_best_resolution, ((0, 10), PINS_336), "0x10")
    _one_line_error(preprocess_anyres, ([], s), "no images")
    _one_line_error(preprocess_tiles, ([], t), "no images")
    unpadded = AnyresSettings.from_hf({**LLAVA_CONFIGS["small 32"], "do_pad": False})
    wide, square = np.zeros((20, 90, 3), np.uint8), np.zeros((50, 50, 3), np.uint8)
    _one_line_error(preprocess_anyres, ([wide, square], unpadded), "do_pad")
