"""Training CLIP (Radford et al. 2021, §2.3 and Figure 3): the symmetric cross-entropy over the
in-batch similarity matrix, with the learnable temperature capped so that ``exp(logit_scale)``
stays at or below 100 (§2.5: "clipped to prevent scaling the logits by more than 100").

The cap is a functional clamp inside the loss (zero gradient beyond it), which trains the same as
OpenAI's in-place clamp after each optimiser step and keeps the model's own ``forward`` equal to
the references (they do not clamp at inference).

Data: the embedded world's (image, caption) pairs (:mod:`tatlas.data.world`), ``"train"`` split,
where whole colour-shape combinations are held out; captions are tokenised with the real CLIP BPE
(so the text tower's vocabulary must be CLIP's 49,408 tokens), padded to the context length.
Evaluation: zero-shot accuracy on ``"test"`` scenes, whose captioned (main) object is always a
held-out colour-shape pair, with one class per colour-shape pair built from prompts that never
appear in training (:func:`world_zero_shot`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from ...data.world import WorldConfig, WorldDataset, combinations, held_out_pairs
from ...nn import contrastive_accuracy, info_nce
from ..spec import TrainTask
from .config import CLIPConfig
from .preprocess import normalise
from .tokenizer import CLIPTokenizer
from .zeroshot import build_classifier

MAX_LOGIT_SCALE = math.log(100.0)

# Prompts for the world's zero-shot classes: captions always name a size (and sometimes a
# texture) before "colour shape", so the templates ensemble over those; none of these prompts is
# ever a training caption for a held-out pair.
WORLD_TEMPLATES: tuple[str, ...] = (
    "a small {}", "a large {}", "a small striped {}", "a large striped {}", "a small dotted {}", "a large dotted {}",
)


def clip_loss(model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Symmetric InfoNCE over ``B`` (image, text) pairs (Figure 3 of the paper):
    ``(CE(logits, arange) + CE(logits^T, arange)) / 2`` with ``logits = exp(min(s, ln 100)) * cos``.

    Under ``torchrun`` the negatives are the *global* batch: embeddings are gathered from every rank
    with gradients (:func:`tatlas.nn.info_nce`), so the loss and, after DDP's averaging, the
    gradients equal one process on all ranks' samples; ``batch_accuracy`` is over the global batch too.

    One generalisation: when captions repeat within the batch (the world has a few hundred
    distinct single-object captions), every copy of an image's caption counts as right, with equal
    target weight, instead of all but one being pushed away as negatives. With distinct captions,
    as in web-scale data, this is exactly the paper's loss."""
    image = F.normalize(model.encode_image(batch["pixels"]).float(), dim=-1)  # [B, E]
    text = F.normalize(model.encode_text(batch["tokens"]).float(), dim=-1)  # [B, E]
    scale = model.logit_scale.float().clamp(max=MAX_LOGIT_SCALE).exp()
    tokens = batch["tokens"]  # [B, T] the keys: identical captions are positives of each other
    loss = info_nce(image, text, scale, keys=tokens)
    accuracy = contrastive_accuracy(image, text, scale, keys=tokens)
    return {"loss": loss, "logit_scale": scale.detach(), "batch_accuracy": accuracy}


@functools.lru_cache(maxsize=1)
def world_tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer()


def check_vocabulary(config: CLIPConfig) -> None:
    t = config.text
    if t.vocab_size < 49_408 or (t.pool == "eos" and t.eos_token_id != 49_407):
        raise ValueError(
            f"training on the world's captions uses the CLIP BPE (49,408 tokens, end-of-text 49,407); this text "
            f"tower has vocab_size={t.vocab_size}" + (f", eos_token_id={t.eos_token_id}" if t.pool == "eos" else "")
        )


class CaptionDataset(Dataset):
    """World scenes as CLIP samples: ``pixels [3, S, S]`` (normalised with the model's statistics),
    ``tokens [context_length]`` (the caption), ``label`` (main object's colour-shape pair)."""

    def __init__(self, config: CLIPConfig, *, split: str = "train", seed: int = 0, length: int = 10_000,
                 world: WorldConfig | None = None, cache: bool = False) -> None:
        check_vocabulary(config)
        v = config.vision
        world = world or WorldConfig()
        world = replace(world, image_size=v.image_size, modalities=("image", "caption"))
        self.scenes = WorldDataset(split, world, seed=seed, length=length)
        self.mean, self.std = v.image_mean, v.image_std
        self.context_length = config.text.context_length
        # cache=True keeps every rendered sample (12 KB per 32x32 scene) for runs of several epochs
        self._cache: dict[int, dict[str, Any]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.scenes)

    @functools.lru_cache(maxsize=4096)  # noqa: B019  (a few thousand captions, tokenised once)
    def _tokens(self, caption: str) -> Tensor:
        return world_tokenizer()(caption, context_length=self.context_length)[0]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        scene = self.scenes[index]
        item = {"pixels": normalise(scene["image"], self.mean, self.std), "tokens": self._tokens(scene["caption"]),
                "label": scene["label"]}
        if self._cache is not None:
            self._cache[index] = item
        return item


@dataclass(frozen=True)
class ZeroShotReport:
    accuracy: float  # over every colour-shape pair (chance 1 / pairs)
    chance: float
    held_out_accuracy: float  # restricted to the held-out pairs (chance 1 / held-out pairs)
    held_out_chance: float
    colour_accuracy: float
    shape_accuracy: float
    n: int


@torch.no_grad()
def world_zero_shot(
    model: nn.Module, *, seed: int = 0, n: int = 256, templates: tuple[str, ...] = WORLD_TEMPLATES,
    world: WorldConfig | None = None, batch_size: int = 128,
) -> ZeroShotReport:
    """Zero-shot classification of ``n`` single-object ``"test"`` scenes (every one a held-out
    colour-shape pair, never seen in training) into all colour-shape classes, from prompts."""
    config: CLIPConfig = model.config
    world = replace(world or WorldConfig(), min_objects=1, max_objects=1)
    data = CaptionDataset(config, split="test", seed=seed + 1, length=n, world=world)
    pairs = combinations(data.scenes.config)
    held = held_out_pairs(data.scenes.config)
    classifier = build_classifier(model, world_tokenizer(), [f"{c} {s}" for c, s in pairs], templates)
    was_training = model.training
    model.eval()
    device = model.logit_scale.device
    logits, labels = [], []
    for start in range(0, n, batch_size):
        items = [data[i] for i in range(start, min(n, start + batch_size))]
        pixels = torch.stack([it["pixels"] for it in items]).to(device)
        logits.append(classifier.logits(model, model.encode_image(pixels)).float().cpu())
        labels.extend(it["label"] for it in items)
    model.train(was_training)
    scores, target = torch.cat(logits), torch.tensor(labels)
    pred = scores.argmax(1)
    held_idx = torch.tensor([pairs.index(p) for p in held])
    held_pred = held_idx[scores[:, held_idx].argmax(1)]
    colour = torch.tensor([pairs[int(p)][0] == pairs[int(t)][0] for p, t in zip(pred, target)]).float()
    shape = torch.tensor([pairs[int(p)][1] == pairs[int(t)][1] for p, t in zip(pred, target)]).float()
    return ZeroShotReport(
        accuracy=float((pred == target).float().mean()), chance=1 / len(pairs),
        held_out_accuracy=float((held_pred == target).float().mean()), held_out_chance=1 / len(held),
        colour_accuracy=float(colour.mean()), shape_accuracy=float(shape.mean()), n=n,
    )


def make_task(config: CLIPConfig, seed: int = 0, *, length: int = 10_000, world: WorldConfig | None = None,
              eval_n: int = 256, cache: bool = False) -> TrainTask:
    """The world's image-caption pairs (held-out pairs removed) with :func:`clip_loss`; evaluation
    is :func:`world_zero_shot` on held-out pairs."""
    data = CaptionDataset(config, split="train", seed=seed, length=length, world=world, cache=cache)

    def evaluate(model: nn.Module) -> dict[str, float]:
        r = world_zero_shot(model, seed=seed, n=eval_n, world=world)
        return {"zero_shot_acc": r.accuracy, "held_out_acc": r.held_out_accuracy, "colour_acc": r.colour_accuracy,
                "shape_acc": r.shape_accuracy}

    def collate(items: list[dict[str, Any]]) -> dict[str, Tensor]:
        return {"pixels": torch.stack([it["pixels"] for it in items]), "tokens": torch.stack([it["tokens"] for it in items])}

    return TrainTask(train_data=data, loss_fn=clip_loss, eval_fn=evaluate, collate_fn=collate)


def train_task(config: CLIPConfig, seed: int = 0) -> TrainTask:
    """``tatlas train clip``: :func:`make_task` with its defaults."""
    return make_task(config, seed)
