"""CLIP's own jobs on files, behind ``tatlas clip``: zero-shot classification of image files and
embedding of images and texts. Nothing is downloaded: the model is a path the user gives (a tatlas
checkpoint, a Hugging Face CLIP folder, or an OpenAI/open_clip file with its format named), or the
``TATLAS_CLIP_MODEL`` environment variable."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models.clip.model import CLIP
from ..models.clip.preprocess import preprocess_batch
from ..models.clip.tokenizer import CLIPTokenizer
from ..models.clip.zeroshot import DEFAULT_TEMPLATES, build_classifier

MODEL_ENV = "TATLAS_CLIP_MODEL"
FORMATS = ("open_clip", "openai-clip")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def resolve_model(path: str | Path | None) -> Path:
    """The model path: ``path``, else ``$TATLAS_CLIP_MODEL``; a clear error when neither is set."""
    if path is None:
        path = os.environ.get(MODEL_ENV) or None
    if path is None:
        raise ValueError(
            f"no CLIP model given: pass --model PATH (a tatlas CLIP checkpoint, a Hugging Face CLIP folder, or an "
            f"OpenAI/open_clip file with --format {'|'.join(FORMATS)}) or set {MODEL_ENV}; nothing is downloaded"
        )
    return Path(path)


def load_clip(path: str | Path | None, *, format: str | None = None, device: str | None = None) -> CLIP:
    """A CLIP model in eval mode, float32, from a path (see :func:`resolve_model`)."""
    import tatlas

    path = resolve_model(path)
    if format is not None and format not in FORMATS:
        raise ValueError(f"--format: expected one of {FORMATS}, got {format!r}")
    if path.is_file() and path.suffix in {".pt", ".pth", ".bin"} and format is None:
        raise ValueError(f"{path}: a .pt/.bin file is not a tatlas checkpoint; name its format: --format "
                         f"{'|'.join(FORMATS)}")
    model = tatlas.load(path, format=format, system="clip", device=device, dtype=torch.float32, fast=True)
    return model.eval()


@dataclass(frozen=True)
class Ranked:
    """One image's classes, most probable first."""

    image: str
    labels: tuple[str, ...]
    probabilities: tuple[float, ...]


def split_labels(labels: str) -> list[str]:
    out = [s.strip() for s in labels.split(",")]
    if not all(out):
        raise ValueError(f"--labels: expected comma-separated non-empty class names, got {labels!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"--labels: class names repeat in {labels!r}")
    return out


def _pixels(model: CLIP, images: Sequence[str | Path]) -> Tensor:
    return preprocess_batch(images, model.config.vision)


@torch.no_grad()
def zero_shot(
    model: CLIP, images: Sequence[str | Path], labels: Sequence[str], *,
    templates: Sequence[str] = DEFAULT_TEMPLATES, batch_size: int = 32,
) -> list[Ranked]:
    """Each image's probabilities over ``labels`` (prompt-ensembled over ``templates``), ranked."""
    if not images:
        raise ValueError("zero-shot: give at least one image")
    classifier = build_classifier(model, CLIPTokenizer(), labels, templates)
    device = model.logit_scale.device
    out = []
    for start in range(0, len(images), batch_size):
        chunk = list(images[start : start + batch_size])
        probs = classifier.probabilities(model, _pixels(model, chunk).to(device)).cpu()
        for path, p in zip(chunk, probs, strict=True):
            order = p.argsort(descending=True).tolist()
            out.append(Ranked(str(path), tuple(labels[i] for i in order), tuple(float(p[i]) for i in order)))
    return out


def classify_inputs(inputs: Sequence[str], *, text: bool = False) -> list[str]:
    """``"image"`` or ``"text"`` per input: an existing file is an image; a name with an image
    suffix that does not exist is an error (not silently text); anything else is text."""
    kinds = []
    for item in inputs:
        if text:
            kinds.append("text")
        elif Path(item).is_file():
            kinds.append("image")
        elif Path(item).suffix.lower() in IMAGE_SUFFIXES:
            raise ValueError(f"{item}: no such image file")
        else:
            kinds.append("text")
    return kinds


@torch.no_grad()
def embed(
    model: CLIP, inputs: Sequence[str], *, text: bool = False, normalise: bool = True, truncate: bool = True,
    batch_size: int = 32,
) -> tuple[Tensor, list[str]]:
    """Image files and texts -> ``[N, E]`` embeddings in input order (unit-norm when ``normalise``)."""
    if not inputs:
        raise ValueError("embed: give at least one image or text")
    kinds = classify_inputs(inputs, text=text)
    device = model.logit_scale.device
    tokenizer = CLIPTokenizer(context_length=model.config.text.context_length)
    out = torch.empty(len(inputs), model.config.embed_dim)
    for kind in ("image", "text"):
        idx = [i for i, k in enumerate(kinds) if k == kind]
        for start in range(0, len(idx), batch_size):
            rows = idx[start : start + batch_size]
            items = [inputs[i] for i in rows]
            if kind == "image":
                e = model.encode_image(_pixels(model, items).to(device))
            else:
                e = model.encode_text(tokenizer(items, truncate=truncate).to(device))
            out[rows] = e.float().cpu()
    return (F.normalize(out, dim=-1) if normalise else out), kinds


def write_embeddings(path: str | Path, embeddings: Tensor, inputs: Sequence[str], kinds: Sequence[str],
                     model: str) -> Path:
    """``.npy`` (the ``[N, E]`` array) or ``.safetensors`` (``embeddings`` plus the inputs, their
    kinds and the model path as metadata)."""
    path = Path(path)
    if path.suffix == ".npy":
        import numpy as np

        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, embeddings.numpy())
    elif path.suffix == ".safetensors":
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"embeddings": embeddings.contiguous()}, str(path),
                  metadata={"inputs": json.dumps(list(inputs)), "kinds": json.dumps(list(kinds)), "model": model})
    else:
        raise ValueError(f"--out {path}: expected a .npy or .safetensors file name")
    return path
