"""Which image patches a vision-language model's answer attended to (LLaVA, Liu et al. 2023 §3;
InternVL 1.5, Chen et al. 2024 §3.1 pixel shuffle).

A ``tiny-world`` model trained for a few seconds on the world's question answering
(:mod:`tatlas.models.vlm_task`) answers a question about a scene it was not trained on greedily
(:func:`tatlas.generate.generate`); one teacher-forced forward over the prompt and its answer, under
:func:`~tatlas.explain.capture.attention_weights`, gives the language model's attention ``[1, H, T, T]``
in each layer. Its rows at the decoding steps (the last prompt position and each answer token: the
positions whose outputs chose the answer and its ``EOS``), averaged over heads and steps, are split
between image tokens and text tokens, and the image tokens' part is mapped back onto the tower's
patch grid: a LLaVA image token is one ViT patch; an InternVL token, after pixel shuffle, a 2x2
block of them (:func:`token_patches` derives this from :func:`~tatlas.nn.pixel_shuffle_tokens`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._common import pyplot, save, trained

STEPS, BATCH, LR = {"llava": 90, "internvl": 150}, 16, 3e-3  # about 15 s each on one core
QUESTIONS = 16  # colour/shape questions about unseen one-object scenes averaged in the JSON


def token_patches(config: Any) -> np.ndarray:
    """``[image tokens of one view, patches per token]``: the ViT patch indices (row-major on the
    tower's ``grid x grid``) each image token of one view is made from, in the LLM's token order."""
    g = config.vision.grid
    if getattr(config, "grid_pinpoints", None) is not None:
        raise ValueError("answer-attention maps one view per image; this LLaVA preset tiles (anyres): use tiny-world")
    ids = torch.arange(g * g, dtype=torch.float64).reshape(1, g, g, 1)  # [1, grid, grid, 1]: each patch's index
    ratio = getattr(config, "downsample_ratio", None)
    if ratio is not None:  # InternVL: the same pixel shuffle as the model, on indices instead of features
        from ...nn import pixel_shuffle_tokens

        ids = pixel_shuffle_tokens(ids, ratio)  # [1, grid r, grid r, 1 / r²]
    return ids.flatten(0, 2).round().long().numpy()


def patch_grid(token_weights: np.ndarray, patches: np.ndarray, grid: int) -> np.ndarray:
    """``token_weights [image tokens]`` -> ``[grid, grid]``: each token's weight shared evenly among
    the patches it covers (so the grid sums to the tokens' total)."""
    out = np.zeros(grid * grid)
    np.add.at(out, patches, np.repeat(np.asarray(token_weights, float)[:, None] / patches.shape[1], patches.shape[1], 1))
    return out.reshape(grid, grid)


def object_patches(obj: dict[str, Any], grid: int) -> np.ndarray:
    """``bool [grid, grid]``: the patches that the object's disc (centre ``x``, ``y`` and ``radius``,
    fractions of the image side) touches."""
    lo = np.arange(grid) / grid  # each patch's [lo, lo + 1/grid) along an axis
    nearest = lambda c: np.clip(c, lo, lo + 1 / grid) - c
    dy, dx = nearest(obj["y"])[:, None], nearest(obj["x"])[None, :]
    return dy**2 + dx**2 < obj["radius"] ** 2


@dataclass(frozen=True)
class Looked:
    """One answered question: the answer, the image share ``[layers]`` of the decoding steps'
    attention, the patch grids ``[layers, grid, grid]`` and the object's patches ``[grid, grid]``."""

    question: str
    expected: str
    answer: str
    image_share: np.ndarray
    grids: np.ndarray
    on_object: np.ndarray
    obj: dict[str, Any]

    def object_share(self, layer: int | None = None) -> float:
        """The share of the image tokens' attention on the object's patches (``None``: layers' mean)."""
        g = self.grids.mean(0) if layer is None else self.grids[layer]
        return float(g[self.on_object].sum() / g.sum())


@torch.no_grad()
def look(model: nn.Module, item: Any, obj: dict[str, Any]) -> Looked:
    """Answer ``item`` greedily, then record where the decoding steps attended (see the module)."""
    from ...data import ByteTokenizer
    from ...demo.llava import generate_answers
    from ...models.vlm_task import image_inputs, prompt_tokens
    from ..capture import attention_weights

    config = model.config
    if len(item.pixels) != 1:
        raise ValueError(f"answer-attention maps one view per image, got {len(item.pixels)} views")
    answer = generate_answers(model, [item])[0]
    prompt = prompt_tokens(config, item)
    tokens = torch.tensor([prompt + ByteTokenizer().encode(answer)])  # [1, T]
    with attention_weights(model, lambda name: name.startswith("language_model.")) as rec:
        model(tokens, **image_inputs(config, [item]))
    steps = slice(len(prompt) - 1, tokens.shape[1])  # the positions that chose each answer token and EOS
    image = (tokens[0] == config.image_token_id).numpy()
    patches, grid = token_patches(config), config.vision.grid
    shares, grids = [], []
    for name in sorted(rec, key=lambda n: int(n.split(".")[2])):
        w = rec[name][0][0, :, steps].mean((0, 1)).numpy()  # [S]: heads and decoding steps averaged
        shares.append(w[image].sum())
        grids.append(patch_grid(w[image], patches, grid))
    return Looked(item.question, item.answer, answer, np.array(shares), np.stack(grids), object_patches(obj, grid), obj)


def one_object_questions(config: Any, n: int, seed: int = 1, split: str = "train") -> list[tuple[Any, dict[str, Any]]]:
    """The colour and shape questions about ``n`` one-object scenes of ``split`` (``seed`` 1: not the
    scenes trained on; ``"test"``: held-out colour-shape pairs, which a few seconds' training never
    answers), as :func:`~tatlas.models.vlm_task.vqa_items` asks them, each with its object."""
    from ...models.vlm_task import WORLD_QUESTIONS, VQAItem, WorldVLMData, question_kind

    qs = WORLD_QUESTIONS[0]  # one-object scenes: colour and shape
    data = WorldVLMData(config, qs, split=split, seed=seed, length=n, cache=False)
    out = []
    for i in range(n):
        pixels, hw, scene = data.views(i, data.rng(i))
        for q, a in scene["qa"]:
            kind = question_kind(q, scene["objects"])
            if kind in qs.kinds:
                out.append((VQAItem(pixels, hw, q, a, kind), scene["objects"][0]))
    return out


def picture(system: str, out_dir: Path, model: nn.Module | None = None, caption_weights: str | None = None
            ) -> list[Path]:
    """``{system}-answer-attention.png`` and its JSON (module docstring). ``model``: the trained
    ``tiny-world`` model (default: :data:`STEPS` steps of ``tatlas train``'s task)."""
    if model is None:
        model = trained(system, "tiny-world", STEPS[system], BATCH, lr=LR)
        caption_weights = (f"Weights: tiny-world trained {STEPS[system]} steps (batch {BATCH}, lr {LR}) from random "
                           "weights on the world's question answering (tatlas train's task)")
    pairs = one_object_questions(model.config, QUESTIONS // 2)
    looked = [look(model, it, obj) for it, obj in pairs]
    shown = next((k for k, (it, _) in enumerate(pairs) if it.kind == "colour"), 0)
    ex = looked[shown]
    uniform = [float(lk.on_object.mean()) for lk in looked]
    numbers = {
        "question": ex.question, "answer": ex.answer, "expected": ex.expected, "right": ex.answer == ex.expected,
        "image_share_per_layer": ex.image_share, "text_share_per_layer": 1 - ex.image_share,
        "object_share_last_layer": ex.object_share(-1), "object_share_layer_mean": ex.object_share(),
        "object_share_uniform": uniform[shown], "patch_grid_last_layer": ex.grids[-1],
        "patch_grid_layer_mean": ex.grids.mean(0),
        "mean_over_questions": {
            "questions": len(looked), "accuracy": float(np.mean([lk.answer == lk.expected for lk in looked])),
            "image_share_layer_mean": float(np.mean([lk.image_share.mean() for lk in looked])),
            "object_share_layer_mean": float(np.mean([lk.object_share() for lk in looked])),
            "object_share_last_layer": float(np.mean([lk.object_share(-1) for lk in looked])),
            "object_share_uniform": float(np.mean(uniform)),
        },
    }
    image = _display_image(pairs[shown][0].pixels[0], model.config)
    fig = _draw(system, model.config, ex, image)
    shuffle = ("each image token is a 2x2 block of ViT patches after pixel shuffle (its weight spread over the block)"
               if getattr(model.config, "downsample_ratio", None) else "each image token is one ViT patch")
    m = numbers["mean_over_questions"]
    caption = (f"{caption_weights}. Attention of the LLM's decoding steps (last prompt position and each answer "
               f"token), averaged over heads, to the {int(model.config.tokens_per_tile)} image tokens; {shuffle}. "
               f"Over {m['questions']} questions about unseen one-object scenes: {m['accuracy']:.0%} right, image share "
               f"{m['image_share_layer_mean']:.2f}, share on the object's patches {m['object_share_layer_mean']:.2f} "
               f"(uniform {m['object_share_uniform']:.2f}).")
    return save(fig, out_dir, f"{system}-answer-attention", caption, numbers)


def _display_image(pixels: torch.Tensor, config: Any) -> np.ndarray:
    """The tower's view ``[3, S, S]`` un-normalised to ``[S, S, 3]`` in [0, 1]."""
    mean, std = (torch.tensor(v)[:, None, None] for v in (config.vision.image_mean, config.vision.image_std))
    return (pixels * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


def _draw(system: str, config: Any, ex: Looked, image: np.ndarray):
    plt = pyplot()
    s, g = config.vision.image_size, config.vision.grid
    fig, axes = plt.subplots(1, 3, figsize=(14.5, 5.4))
    axes[0].imshow(image, extent=(0, s, s, 0), interpolation="nearest")
    axes[0].set(title=f"the image ({ex.on_object.sum()} of {g * g} patches touch\nthe object's disc, dashed)",
                xlabel="pixels", ylabel="pixels")
    for ax, grid, label in ((axes[1], ex.grids[-1], f"last layer ({len(ex.grids) - 1})"),
                            (axes[2], ex.grids.mean(0), f"mean over {len(ex.grids)} layers")):
        ax.imshow(image, extent=(0, s, s, 0), interpolation="nearest")
        im = ax.imshow(grid, extent=(0, s, s, 0), cmap="magma", alpha=0.7, interpolation="nearest", vmin=0)
        bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        bar.set_label("share of the answer's attention, per patch", fontsize=8)
        bar.ax.tick_params(labelsize=7)
        layer = -1 if grid is ex.grids[-1] else None
        share = ex.image_share[-1] if layer == -1 else ex.image_share.mean()
        ax.set(title=f"{label}: image {share:.0%}, text {1 - share:.0%}\non the object {ex.object_share(layer):.0%} "
                     f"of the image part (uniform {ex.on_object.mean():.0%})", xlabel="pixels", ylabel="pixels")
    for ax in axes:
        ax.add_patch(plt.Circle((ex.obj["x"] * s, ex.obj["y"] * s), ex.obj["radius"] * s, fill=False, color="white",
                                ls="--", lw=1.5))
        ax.set_xticks(np.arange(0, s + 1, s // g * 2))
        ax.set_yticks(np.arange(0, s + 1, s // g * 2))
    verdict = "right" if ex.answer == ex.expected else f"wrong, expected {ex.expected!r}"
    fig.suptitle(f"{system} (tiny-world): Q: {ex.question!r}  A: {ex.answer!r} ({verdict})", fontsize=11)
    fig.subplots_adjust(left=0.04, right=0.95, bottom=0.2, top=0.8, wspace=0.45)
    return fig
