"""Text generation from a model on disk: load model and tokenizer, build the prompt (with an
image block for image-text models, or a chat template for conversations), and stream the
continuation as text. The one call behind ``tatlas generate`` and ``tatlas chat``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..data import normalise, read_rgb, resize_square
from ..models.llm.tokenizer import TextTokenizer, load_tokenizer
from ..generate.config import GenerationConfig
from ..generate.loop import generate


@dataclass
class TextModel:
    model: nn.Module
    tokenizer: TextTokenizer
    notes: list[str]


def load_text_model(path: str | Path, *, int8: bool = False) -> TextModel:
    import tatlas
    from tatlas.nn import quantize_int8_

    model = tatlas.load(path, system="llm", fast=True).eval()
    notes = []
    if int8:
        quantize_int8_(model)
        notes.append("weights quantised to int8 (weight-only)")
    return TextModel(model, load_tokenizer(path, model.config.vocab_size), notes)


def image_block(tm: TextModel) -> list[int]:
    """The placeholder tokens one image occupies (framed by begin/end-of-image tokens if the
    tokenizer has them, as Gemma 3's processor writes)."""
    c = tm.model.config
    if c.vision is None:
        raise ValueError("this model is text-only: it cannot take an image")
    begin, end = tm.tokenizer.token_id("<start_of_image>"), tm.tokenizer.token_id("<end_of_image>")
    return ([begin] if begin is not None else []) + [c.image_token_id] * c.vision.tokens_per_image + (
        [end] if end is not None else [])


def load_pixels(tm: TextModel, image: str | Path) -> tuple[torch.Tensor, str | None]:
    v = tm.model.config.vision
    if v is None:
        raise ValueError("this model is text-only: it cannot take an image")
    pixels, note = read_rgb(image)
    if pixels.shape[-2:] != (v.image_size, v.image_size):
        size = f"resized {pixels.shape[-1]}x{pixels.shape[-2]} to {v.image_size}x{v.image_size}"
        note = f"{note}; {size}" if note else size
        pixels = resize_square(pixels, v.image_size)
    return normalise(pixels, v.image_mean, v.image_std)[None], note


def generate_text(
    tm: TextModel, prompt: str, config: GenerationConfig, *, image: str | Path | None = None,
    on_text: Callable[[str], None] | None = None, chat: list[dict[str, str]] | None = None,
) -> str:
    """Continue ``prompt`` (or, with ``chat``, answer the conversation), streaming text pieces to
    ``on_text`` as they become decodable."""
    text = tm.tokenizer.render_chat(chat) if chat is not None else prompt
    ids = tm.tokenizer.encode(text, add_bos=chat is None or not tm.tokenizer.chat_template)
    kwargs = {}
    if image is not None:
        pixels, note = load_pixels(tm, image)
        if note:
            tm.notes.append(f"{image}: {note}")
        bos = ids[:1] if tm.tokenizer.bos_id is not None and ids[:1] == [tm.tokenizer.bos_id] else []
        ids = bos + image_block(tm) + ids[len(bos):]
        kwargs["pixels"] = pixels.to(next(tm.model.parameters()).device)
    limit = tm.model.config.max_positions
    if len(ids) + config.max_new_tokens > limit:
        raise ValueError(f"prompt of {len(ids)} tokens + {config.max_new_tokens} new tokens exceeds the model's "
                         f"{limit} positions")
    if not config.stop_tokens and tm.tokenizer.stop_tokens:
        from dataclasses import replace

        config = replace(config, stop_tokens=tm.tokenizer.stop_tokens)
    produced: list[int] = []
    shown = ""

    def stream(step: torch.Tensor) -> None:
        nonlocal shown
        token = int(step[0])
        if token in config.stop_tokens:
            return
        produced.append(token)
        decoded = tm.tokenizer.decode(produced)
        if on_text is not None and not decoded.endswith("\ufffd") and len(decoded) > len(shown):
            on_text(decoded[len(shown):])
            shown = decoded

    out = generate(tm.model, [ids], config, streamer=stream if config.num_beams == 1 else None, **kwargs)
    final = tm.tokenizer.decode(out.as_lists(stop_tokens=config.stop_tokens)[0])
    if on_text is not None and len(final) > len(shown):
        on_text(final[len(shown):])
    return final
