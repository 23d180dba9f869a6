"""The ``clip`` system's record (:class:`~tatlas.models.spec.System`)."""

from __future__ import annotations

import torch

from ..spec import System
from .config import PRESETS, CLIPConfig
from .convert import from_hf, from_open_clip, from_openai
from .model import CLIP, FastCLIP
from .task import train_task


def _sample(model: CLIP, gen: torch.Generator) -> dict:
    """Three images and two texts (their logits pair every image with every text)."""
    c = model.config
    device = model.logit_scale.device
    t = c.text
    end = t.eos_token_id if t.pool == "eos" else t.vocab_size - 1
    body = torch.randint(0, end, (2, min(8, t.context_length - 2)), generator=gen)
    tokens = torch.cat([body[:, :1], body, torch.full((2, 1), end)], dim=1)
    tokens[1, 4:] = end  # a shorter text: padding after its end token
    pixels = torch.randn(3, c.vision.channels, c.vision.image_size, c.vision.image_size, generator=gen)
    return {"pixels": pixels.to(device), "tokens": tokens.to(device)}


def _all_pairs(sample: dict) -> list:
    """Batch invariance of CLIP: the logit of image ``i`` and text ``j`` computed in the batch equals
    the logit of that one pair computed alone."""
    views = []
    for i in range(sample["pixels"].shape[0]):
        for j in range(sample["tokens"].shape[0]):
            part = {"pixels": sample["pixels"][i : i + 1], "tokens": sample["tokens"][j : j + 1]}
            views.append((part, lambda outs, i=i, j=j: [outs[0][i : i + 1, j : j + 1], outs[1][j : j + 1, i : i + 1]]))
    return views


SYSTEM = System(
    name="clip",
    summary="CLIP: ViT image and causal text towers, contrastive loss, zero-shot classification",
    config_cls=CLIPConfig,
    model_cls=CLIP,
    presets=PRESETS,
    sample_input=_sample,
    hf_model_types={"clip": from_hf},
    formats={"open_clip": from_open_clip, "openai-clip": from_openai},
    train_task=train_task,
    fast_variants={CLIP: FastCLIP},
    batch_views=_all_pairs,
    diagram=(
        "pixels [B,3,S,S] -> patch conv (no bias) -> [CLS] + patches + positions -> ln_pre\n"
        "  -> [ LN -> MHA -> + -> LN -> MLP (QuickGELU) -> + ] x L -> ln_post(CLS) -> W_i -> image embedding\n"
        "tokens [B,T] (<SOT> ... <EOT>) -> embed + positions\n"
        "  -> [ LN -> causal MHA -> + -> LN -> MLP -> + ] x L -> LN -> state at <EOT> -> W_t -> text embedding\n"
        "logits = exp(logit_scale) * cos(image, text); loss = symmetric cross-entropy over the batch"
    ),
    idea=(
        'Train an image encoder and a text encoder together so that, in a batch of N (image, caption) pairs, each'
        " image's embedding is closest to its own caption's among the N: a symmetric cross-entropy over the N x N"
        ' cosine similarities. The captions are free supervision; afterwards a class name written as a sentence '
        'is a classifier, so the model classifies images into labels it was never trained on (zero-shot).'
    ),
    paper='Radford et al. 2021, Learning Transferable Visual Models From Natural Language Supervision (ICML 2021)',
    question=(
        'What is the loss computed over, and how does CLIP classify an image into classes it never saw as labels?'
    ),
    highlight=('image_proj', 'text_proj'),
)
