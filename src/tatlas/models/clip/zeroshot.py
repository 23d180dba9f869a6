"""Zero-shot classification (Radford et al. 2021, §3.1.2 and §3.1.4): the text encoder turns class
names into classifier weights. Each class is embedded through several prompt templates ("a photo
of a {}."); the normalised template embeddings are averaged and normalised again (prompt
ensembling, "computed once per dataset", §3.1.4). An image's class probabilities are the softmax of
its scaled cosine similarities to those weights."""

from __future__ import annotations

import string

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .model import CLIP
from .tokenizer import CLIPTokenizer

DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)
# A few of OpenAI's 80 ImageNet templates (OpenAI's notebook "Prompt_Engineering_for_ImageNet")
IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "a photo of a {}.", "a bright photo of a {}.",
    "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.", "a drawing of a {}.",
    "a photo of my {}.", "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.",
    "a pixelated photo of the {}.", "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.",
    "a photo of the {}.", "a good photo of the {}.", "a photo of one {}.", "a close-up photo of the {}.",
    "a photo of a large {}.", "a photo of a small {}.", "itap of a {}.", "a origami {}.", "a toy {}.",
)


@dataclass(frozen=True)
class ZeroShotClassifier:
    """Unit-norm class embeddings ``weights [K, E]`` for ``classes``, from ``templates``."""

    classes: tuple[str, ...]
    templates: tuple[str, ...]
    weights: Tensor

    def logits(self, model: CLIP, image_embeds: Tensor) -> Tensor:
        """``image_embeds [B, E]`` (projected) -> ``[B, K]``: ``exp(logit_scale) * cos``."""
        image = F.normalize(image_embeds, dim=-1)
        return model.logit_scale.exp() * image @ self.weights.to(image.dtype).t()

    @torch.no_grad()
    def probabilities(self, model: CLIP, pixels: Tensor) -> Tensor:
        """``pixels [B, 3, S, S]`` (preprocessed) -> class probabilities ``[B, K]``."""
        return self.logits(model, model.encode_image(pixels)).float().softmax(dim=-1)

    @torch.no_grad()
    def predict(self, model: CLIP, pixels: Tensor) -> Tensor:
        """``pixels [B, 3, S, S]`` -> class indices ``[B]``."""
        return self.logits(model, model.encode_image(pixels)).argmax(dim=-1)


@torch.no_grad()
def build_classifier(
    model: CLIP, tokenizer: CLIPTokenizer, classes: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES,
    *, batch_size: int = 256,
) -> ZeroShotClassifier:
    """Class names -> a :class:`ZeroShotClassifier`: per class, the normalised mean of the
    normalised embeddings of ``template.format(name)`` over ``templates``."""
    classes, templates = tuple(classes), tuple(templates)
    if not classes:
        raise ValueError("zero-shot classification needs at least one class name")
    if not templates:
        raise ValueError("templates: expected at least one prompt with a '{}' for the class name")
    for t in templates:
        try:
            slots = [name for _, name, _, _ in string.Formatter().parse(t) if name is not None]
        except ValueError:
            slots = None
        if slots != [""]:
            raise ValueError(f"templates: expected strings with a '{{}}' for the class name, exactly one in each "
                             f"(write {{{{ and }}}} for literal braces), got {t!r}")
    was_training = model.training
    model.eval()
    device = model.logit_scale.device
    texts = [t.format(c) for c in classes for t in templates]  # class-major
    n_ctx = model.config.text.context_length
    embeds = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenizer(texts[start : start + batch_size], context_length=n_ctx).to(device)
        embeds.append(F.normalize(model.encode_text(tokens).float(), dim=-1))
    per_template = torch.cat(embeds).view(len(classes), len(templates), -1)  # [K, n_templates, E]
    weights = F.normalize(per_template.mean(dim=1), dim=-1)  # [K, E]
    model.train(was_training)
    return ZeroShotClassifier(classes, templates, weights)
