"""The ``imagebind`` system's record (:class:`~tatlas.models.spec.System`)."""

from __future__ import annotations

import torch

from ..spec import System
from .config import PRESETS, ImageBindConfig
from .convert import from_official
from .model import ImageBind
from .task import train_task


def _sample(model: ImageBind, gen: torch.Generator) -> dict:
    """Two samples of every modality the model has (text: ``<start>`` ids ``<end>`` then zeros)."""
    c = model.config
    device = next(model.parameters()).device
    text = torch.zeros(2, c.context_length, dtype=torch.long)
    text[:, 1:4] = torch.randint(0, c.vocab_size - 2, (2, 3), generator=gen)
    text[:, 4] = c.vocab_size - 1
    shapes = {"vision": (2, 3, c.image_size, c.image_size), "audio": (2, 1, c.mel_bins, c.audio_frames),
              "depth": (2, 1, c.depth_size, c.depth_size), "thermal": (2, 1, c.thermal_size, c.thermal_size),
              "imu": (2, c.imu_channels, c.imu_steps)}
    inputs = {m: torch.randn(*s, generator=gen) for m, s in shapes.items() if m in c.modalities}
    if "text" in c.modalities:
        inputs["text"] = text
    return {m: x.to(device) for m, x in inputs.items()}


SYSTEM = System(
    name="imagebind",
    summary="ImageBind: vision, text, audio, depth, thermal and IMU encoders bound into one space through images",
    config_cls=ImageBindConfig,
    model_cls=ImageBind,
    presets=PRESETS,
    sample_input=_sample,
    formats={"imagebind": from_official},
    train_task=train_task,
    train_preset="tiny-world",
    diagram=(
        "image/video [B,3,(T,)S,S] -> 2x14x14 tubelets (image repeated) -> [CLS]+pos -> LN -> blocks -> LN(CLS) -> W\n"
        "text [B,77] -> embed+pos -> causal blocks -> LN(state at <end_of_text>) -> W -> *learned scale\n"
        "audio [B,1,128,204] log-mel -> 16x16 patches every 10 -> LN -> [CLS]+pos -> blocks (+bias k/v) -> W -> *20\n"
        "depth / thermal [B,1,S,S] -> 16x16 patches -> LN -> ... -> *5 / *10;  IMU [B,6,2000] -> 8-step windows -> *5\n"
        "every embedding L2-normalised; trained image-anchored: InfoNCE(image, m) for each other modality m"
    ),
    idea=(
        'One embedding space for six modalities without data that pairs all of them: every modality is trained '
        'contrastively against images only (image-text, image-audio, image-depth, ...), and because images are '
        'the common anchor, modalities that were never paired (audio and text) become comparable: emergent '
        'alignment.'
    ),
    paper='Girdhar et al. 2023, ImageBind: One Embedding Space To Bind Them All (CVPR 2023)',
    question='Audio and text were never trained against each other: why does audio-to-text retrieval still work?',
    highlight=('VisionStem', 'TextStem', 'MapStem', 'IMUStem'),
)
