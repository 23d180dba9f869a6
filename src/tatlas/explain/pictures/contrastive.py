"""CLIP and ImageBind: the similarity matrices their contrastive losses shape, and where CLIP's
image tower looks. Models: the tiny presets trained for a few seconds on the world's scenes (no
real CLIP or ImageBind weights ship with tatlas)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ._common import heatmap, pyplot, save, trained

CLIP_STEPS, BIND_STEPS = 60, 60


def _clip_scenes(model, n: int = 8):
    """``n`` single-object training-split scenes of ``n`` different colour-shape pairs: images (for
    the model and for display) and captions."""
    from ...data.world import WorldConfig
    from ...models.clip.task import CaptionDataset

    data = CaptionDataset(model.config, split="train", seed=123, length=400, world=WorldConfig(max_objects=1))
    picked, seen = [], set()
    for i in range(len(data)):
        scene = data.scenes[i]
        if scene["label"] not in seen:
            seen.add(scene["label"])
            picked.append(i)
        if len(picked) == n:
            break
    items = [data[i] for i in picked]
    shown = [data.scenes[i]["image"] for i in picked]
    captions = [data.scenes[i]["caption"] for i in picked]
    return torch.stack([it["pixels"] for it in items]), torch.stack([it["tokens"] for it in items]), shown, captions


@torch.no_grad()
def clip_similarity(out_dir: Path) -> list[Path]:
    model = trained("clip", "tiny", CLIP_STEPS, 96)
    pixels, tokens, shown, captions = _clip_scenes(model)
    img = torch.nn.functional.normalize(model.encode_image(pixels), dim=-1)
    txt = torch.nn.functional.normalize(model.encode_text(tokens), dim=-1)
    sim = (img @ txt.T).numpy()  # [images, texts] cosine
    plt = pyplot()
    fig = plt.figure(figsize=(10, 8.2))
    grid = fig.add_gridspec(2, len(shown), height_ratios=[1, 5.5], hspace=0.25, top=0.93, bottom=0.3)
    for i, im in enumerate(shown):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(im.permute(1, 2, 0).clamp(0, 1).numpy())
        ax.set_title(f"image {i}", fontsize=7)
        ax.axis("off")
    ax = fig.add_subplot(grid[1, :])
    heatmap(ax, sim, title="CLIP: cosine similarity of every image with every caption", xlabel="caption",
            ylabel="image", cmap="magma", colorbar="cosine similarity", annotate=True,
            xticks=[f"{j}: {c}" for j, c in enumerate(captions)], yticks=[f"image {i}" for i in range(len(shown))])
    fig.suptitle("CLIP (tiny): the contrastive loss pushes each image's own caption to the diagonal", fontsize=11)
    wins = float((sim.argmax(1) == np.arange(len(sim))).mean())
    caption = (f"Weights: the tiny preset trained for {CLIP_STEPS} steps (batch 96) on the world's image-caption "
               f"pairs here (no real CLIP weights ship). The diagonal is the highest entry of its row for "
               f"{wins:.0%} of the images.")
    return save(fig, out_dir, "clip-similarity", caption, {"similarity": sim, "captions": captions,
                                                           "diagonal_wins": wins})


@torch.no_grad()
def clip_attention(out_dir: Path) -> list[Path]:
    from ..capture import attention_weights

    model = trained("clip", "tiny", CLIP_STEPS, 96)
    pixels, _, shown, captions = _clip_scenes(model, 4)
    vision = model.vision
    last = len(vision.blocks) - 1
    with attention_weights(vision, where=lambda name: name == f"blocks.{last}.attn") as rec:
        model.encode_image(pixels)
    w = rec[f"blocks.{last}.attn"][0]  # [B, H, T, T], token 0 the class token
    g = vision.grid
    maps = w[:, :, 0, 1:].mean(1).reshape(-1, g, g).numpy()  # class token -> patches, mean over heads
    plt = pyplot()
    fig, axes = plt.subplots(2, len(shown), figsize=(2.6 * len(shown), 5.6))
    for i, im in enumerate(shown):
        axes[0, i].imshow(im.permute(1, 2, 0).clamp(0, 1).numpy())
        axes[0, i].set_title(captions[i], fontsize=7)
        axes[0, i].axis("off")
        pic = axes[1, i].imshow(maps[i], cmap="inferno", interpolation="nearest")
        axes[1, i].set_title(f"class token -> {g}x{g} patches", fontsize=7)
        axes[1, i].axis("off")
        fig.colorbar(pic, ax=axes[1, i], fraction=0.046, pad=0.02).set_label("attention weight", fontsize=7)
    fig.suptitle(f"CLIP (tiny): where the image tower's class token looks (block {last}, mean over heads)",
                 fontsize=11)
    fig.subplots_adjust(bottom=0.1, top=0.88)
    caption = (f"Weights: tiny preset trained {CLIP_STEPS} steps on the world's scenes. Attention weights recorded "
               "from the shared Attention block (tatlas.explain.capture).")
    return save(fig, out_dir, "clip-attention", caption, {"maps": maps, "captions": captions})


@torch.no_grad()
def imagebind_similarity(out_dir: Path) -> list[Path]:
    from ...models.imagebind.task import BindDataset

    model = trained("imagebind", "tiny-world", BIND_STEPS, 64)
    data = BindDataset(model.config, split="train", seed=321, length=64)
    picked, seen = [], set()
    for i in range(len(data)):
        key = tuple(data[i]["attributes"][:2].tolist())
        if key not in seen:
            seen.add(key)
            picked.append(i)
        if len(picked) == 8:
            break
    batch = {k: torch.stack([data[i][k] for i in picked]) for k in data[0] if k != "attributes"}
    emb = {m: model.encode(m, x, scale=False) for m, x in batch.items()}
    pairs = [(a, b) for a, b in (("vision", "text"), ("vision", "audio"), ("audio", "text"), ("depth", "thermal"))
             if a in emb and b in emb]
    plt = pyplot()
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.3 * len(pairs), 4.6))
    numbers = {}
    for ax, (a, b) in zip(np.atleast_1d(axes), pairs, strict=True):
        sim = (emb[a] @ emb[b].T).numpy()
        wins = float((sim.argmax(1) == np.arange(len(sim))).mean())
        never = " (never trained together)" if "vision" not in (a, b) else ""
        heatmap(ax, sim, title=f"{a} vs {b}{never}\ndiagonal wins {wins:.0%}", xlabel=f"{b} of scene",
                ylabel=f"{a} of scene", cmap="magma", colorbar="cosine similarity")
        numbers[f"{a}-{b}"] = {"similarity": sim, "diagonal_wins": wins}
    fig.suptitle("ImageBind (tiny-world): cross-modal cosine similarity of 8 scenes (diagonal: the same scene)",
                 fontsize=11)
    fig.subplots_adjust(bottom=0.22, top=0.8, wspace=0.45)
    caption = (f"Weights: tiny-world preset trained {BIND_STEPS} steps (batch 64) image-anchored on the world's "
               "scenes (no real ImageBind weights ship). Rows and columns: the same 8 scenes.")
    return save(fig, out_dir, "imagebind-similarity", caption, numbers)
