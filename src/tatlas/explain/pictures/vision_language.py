"""Vision-language models: how LLaVA-NeXT and InternVL cut a high-resolution image into tiles
(and what each tile costs in LLM tokens), which image patches a briefly trained LLaVA or InternVL
attended to while answering (:mod:`.answer_attention`), and Flamingo's tanh gates after a short
training run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ._common import pyplot, save, trained

FLAMINGO_STEPS = 40
SHAPES = ((336, 1008), (672, 672), (1000, 400))  # (height, width) in pixels of the three example images


def _world_image(h: int, w: int, seed: int) -> np.ndarray:
    """A world scene rendered square and stretched to ``h x w`` (nearest), ``[h, w, 3]`` in [0, 1]."""
    from ...data.world import WorldConfig, WorldDataset

    scene = WorldDataset("train", WorldConfig(image_size=64, modalities=("image",)), seed=seed, length=1)[0]
    img = scene["image"].permute(1, 2, 0).numpy()
    ys, xs = (np.arange(h) * 64 // h), (np.arange(w) * 64 // w)
    return img[ys][:, xs]


def _tiling(out_dir: Path, system: str, grids: list[tuple[int, int]], per_tile: int, extra: list[int], tile: int,
            rule: str, caption: str) -> list[Path]:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(SHAPES), figsize=(5 * len(SHAPES), 5.4))
    numbers = []
    for ax, (h, w), (rows, cols), more, seed in zip(axes, SHAPES, grids, extra, range(3), strict=True):
        ax.imshow(_world_image(h, w, seed), extent=(0, cols * tile, rows * tile, 0), interpolation="nearest")
        for r in range(1, rows):
            ax.axhline(r * tile, color="yellow", lw=1.5)
        for c in range(1, cols):
            ax.axvline(c * tile, color="yellow", lw=1.5)
        tokens = rows * cols * per_tile + more
        ax.set_title(f"{h}x{w} image -> {rows}x{cols} tiles of {tile} px\n{tokens} LLM tokens", fontsize=9)
        ax.set(xlabel="pixels", ylabel="pixels")
        numbers.append({"image_hw": [h, w], "grid": [rows, cols], "tokens": tokens})
    fig.suptitle(f"{system}: dynamic high-resolution tiling ({rule})", fontsize=11)
    fig.subplots_adjust(bottom=0.16, top=0.82, wspace=0.3)
    return save(fig, out_dir, f"{system}-tiling", caption, {"images": numbers, "tokens_per_tile": per_tile})


def llava_tiling(out_dir: Path) -> list[Path]:
    from ...models.llava.config import PRESETS
    from ...models.llava.preprocess import anyres_grid

    c = PRESETS["llava-v1.6-mistral-7b"]
    tile = c.vision.image_size
    grids = [anyres_grid((h, w), c.grid_pinpoints, tile) for h, w in SHAPES]
    per = c.tokens_per_tile
    base = [per for _ in SHAPES]  # the base (whole-image) view is one more tile
    caption = (f"The llava-v1.6-mistral-7b preset's rule (select_best_resolution over {len(c.grid_pinpoints)} grid "
               f"pinpoints), {per} tokens per {tile}-px tile plus the whole image once; newline and unpadding "
               "tokens not counted. Computed from the preprocessing code, no weights involved.")
    return _tiling(out_dir, "llava", [tuple(g) for g in grids], per, base, tile, "LLaVA-NeXT anyres", caption)


def internvl_tiling(out_dir: Path) -> list[Path]:
    from ...models.internvl.config import PRESETS
    from ...models.internvl.preprocess import closest_grid

    c = PRESETS["InternVL3-1B"]
    tile, per = c.vision.image_size, c.tokens_per_tile
    grids = [closest_grid((h, w), min_tiles=1, max_tiles=12, tile=tile) for h, w in SHAPES]
    thumbs = [per if r * k > 1 else 0 for r, k in grids]
    caption = (f"InternVL3-1B's rule: the grid of 1..12 tiles whose aspect ratio is closest to the image's, plus a "
               f"thumbnail; pixel shuffle leaves {per} tokens per {tile}-px tile. From the preprocessing code, no "
               "weights involved.")
    return _tiling(out_dir, "internvl", grids, per, thumbs, tile, "closest aspect ratio, <= 12 tiles", caption)


def llava_answer_attention(out_dir: Path) -> list[Path]:
    from .answer_attention import picture

    return picture("llava", out_dir)


def internvl_answer_attention(out_dir: Path) -> list[Path]:
    from .answer_attention import picture

    return picture("internvl", out_dir)


@torch.no_grad()
def flamingo_gates(out_dir: Path) -> list[Path]:
    from ...models.registry import get_system

    fresh = get_system("flamingo").model_cls(get_system("flamingo").preset("tiny-world"))
    model = trained("flamingo", "tiny-world", FLAMINGO_STEPS, 16)
    rows = []
    for m in (fresh, model):
        rows.append([(torch.tanh(b.attn_gate).abs().mean().item(), torch.tanh(b.mlp_gate).abs().mean().item())
                     for b in m.cross_layers])
    gates = np.array(rows)  # [before/after, layers, (attn, mlp)]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.6))
    layers = np.arange(gates.shape[1])
    for k, (name, colour) in enumerate((("cross-attention gate", "#e6550d"), ("dense (MLP) gate", "#3182bd"))):
        ax.bar(layers + (k - 0.5) * 0.38, gates[1, :, k], 0.36, label=f"|tanh({'a' if k == 0 else 'b'})| {name}",
               color=colour)
    ax.plot(layers, gates[0, :, 0], "k_", ms=20, label="at initialisation (0: the frozen LM alone)")
    ax.set(xlabel="gated cross-attention block (inserted before LM layer)", ylabel="|tanh(gate)|",
           title="Flamingo (tiny-world): how far each new block has opened", xticks=layers)
    ax.legend(fontsize=8)
    fig.subplots_adjust(bottom=0.2)
    caption = (f"Weights: tiny-world trained {FLAMINGO_STEPS} steps (batch 16) on the world's interleaved captions; "
               "the gates start at 0 so training begins from the frozen language model.")
    return save(fig, out_dir, "flamingo-gates", caption, {"initial": gates[0], "trained": gates[1]})
