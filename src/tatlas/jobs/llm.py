"""Text generation from a model on disk: load model, tokenizer and image processor settings,
build the prompt (each image's placeholder block where the prompt marks it, or at its start; a
chat template for conversations), and stream the continuation as text. The one call behind
``tatlas generate`` and ``tatlas chat``, for the ``llm`` system (Gemma 3's images), the
vision-language rows ``llava`` (1.5 and NeXT) and ``internvl``, and ``flamingo`` (interleaved
``<image> ... <|endofchunk|>`` prompts, IDEFICS and OpenFlamingo checkpoints)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import normalise, read_rgb, resize_square
from ..generate.config import GenerationConfig
from ..generate.loop import generate
from ..io.gguf import is_gguf
from ..models.llm.gguf import gguf_tokenizer
from ..models.llm.tokenizer import TextTokenizer, load_tokenizer

SYSTEMS = ("llm", "llava", "internvl", "flamingo")
END_OF_CHUNK = "<|endofchunk|>"  # Flamingo: ends the text of one image
IMAGE_MARKER = "<image>"  # where a prompt puts an image (the processors' own marker)


@dataclass
class TextModel:
    model: nn.Module
    tokenizer: TextTokenizer
    notes: list[str]
    system: str = "llm"
    image_settings: Any = None  # the folder's image processor settings (AnyresSettings / TilingSettings)


@dataclass
class ImageInputs:
    """Images made ready for a prompt: each one's placeholder token ids, in order, and the model's
    image keyword inputs."""

    blocks: list[list[int]]
    kwargs: dict[str, torch.Tensor] = field(default_factory=dict)


def _preprocessor(path: Path) -> dict[str, Any]:
    """A model folder's ``preprocessor_config.json`` (a tatlas checkpoint file has none)."""
    file = path / "preprocessor_config.json"
    return json.loads(file.read_text()) if file.is_file() else {}


def _image_settings(system: str, model: nn.Module, path: Path) -> Any:
    """The folder's image processor settings (``preprocessor_config.json``), else the model's own
    (its tower's size and statistics); checked against the tower's input size."""
    c = model.config
    if system == "llava":
        from ..models.llava.preprocess import AnyresSettings

        size = c.vision.image_size
        own = {"size": {"shortest_edge": size}, "crop_size": {"height": size, "width": size},
               "image_mean": list(c.vision.image_mean), "image_std": list(c.vision.image_std)}
        if c.grid_pinpoints:
            own["image_grid_pinpoints"] = [list(p) for p in c.grid_pinpoints]
        settings = AnyresSettings.from_hf({**own, **_preprocessor(path)})
        if settings.crop != (size, size):
            raise ValueError(f"{path}: preprocessor_config.json crops {settings.crop[0]}x{settings.crop[1]} but the "
                             f"vision tower takes {size}x{size}")
        return settings
    if system == "internvl":
        from ..models.internvl.preprocess import TilingSettings

        size = c.vision.image_size
        own = {"size": {"height": size, "width": size}, "image_mean": list(c.vision.image_mean),
               "image_std": list(c.vision.image_std)}
        settings = TilingSettings.from_hf({**own, **_preprocessor(path)})
        if settings.tile != size:
            raise ValueError(f"{path}: preprocessor_config.json tiles at {settings.tile} px but the vision tower "
                             f"takes {size}")
        return settings
    return None


def load_text_model(path: str | Path, *, int8: bool = False, dequantize: bool = False) -> TextModel:
    """A text-generating model (``llm``, ``llava``, ``internvl`` or ``flamingo``) with its tokenizer
    and image processor settings; ``path`` may be a named real model (``"smollm2"``, :mod:`.named`).
    A GGUF file's quantised layers run on their own blocks (:func:`~tatlas.models.llm.gguf_quant.quantize_gguf_`:
    decode steps read in float32 by ``matvec.c``, prompts on torch's int4 kernels with bfloat16 activations)
    unless ``dequantize`` (float32 weights throughout)."""
    import tatlas
    from tatlas.models import system_of
    from tatlas.nn import quantize_int8_
    from tatlas.nn.memory import release_free_heap

    from .named import NAMED, resolve_model

    named = NAMED.get(str(path))
    path = resolve_model(path, systems=SYSTEMS)
    on_blocks = is_gguf(path) and not (int8 or dequantize)  # (a GGUF file is always an llm)
    if on_blocks:
        from ..models.llm.gguf_quant import load_quantized

        model = load_quantized(path, lambda p: tatlas.load(p, fast=True).eval())
    else:
        model = tatlas.load(path, fast=True).eval()
    system = system_of(model).name
    if system not in SYSTEMS:
        raise ValueError(f"{path}: a {system} model does not generate text; generate and chat take {', '.join(SYSTEMS)}")
    notes = [named.opt_in] if named is not None and named.opt_in else []
    if int8:
        quantize_int8_(model)
        notes.append("weights quantised to int8 (weight-only)")
    elif on_blocks:
        notes.append("GGUF layers run on their quantised blocks (decode in float32, prompts with bfloat16 activations; "
                     "--dequantize for float32)")
    release_free_heap()  # what loading made and freed (de-quantised and repacked copies) leaves the process
    text_config = model.config if system == "llm" else model.config.text
    if is_gguf(path):  # llama.cpp's file: the tokenizer is in its metadata
        tokenizer = gguf_tokenizer(path)
    else:
        tokenizer = load_tokenizer(path, text_config.vocab_size)
    return TextModel(model, tokenizer, notes, system,
                     _image_settings(system, model, Path(path)))


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


def _square_pixels(tm: TextModel, images: Sequence[str | Path]) -> torch.Tensor:
    """Each image through :func:`load_pixels` (resize notes kept) -> ``[N, 3, S, S]``."""
    loaded = []
    for image in images:
        pixels, note = load_pixels(tm, image)
        if note:
            tm.notes.append(f"{image}: {note}")
        loaded.append(pixels)
    return torch.cat(loaded)


def _image_token(tm: TextModel, name: str) -> int:
    """The model's placeholder id, checked against the tokenizer's ``name`` token (a byte-level
    tokenizer has none: the id is the model's alone)."""
    image_id = tm.model.config.image_token_id
    found = tm.tokenizer.token_id(name)
    if found is None and not _byte_level(tm):
        raise ValueError(f"the tokenizer has no {name} token (the model's image token id is {image_id}): this "
                         "folder's tokenizer.json is not the image-text model's")
    if found is not None and found != image_id:
        raise ValueError(f"the tokenizer's {name} is id {found} but the model's image token id is {image_id}")
    return image_id


def _byte_level(tm: TextModel) -> bool:
    from ..data import ByteTokenizer

    return isinstance(tm.tokenizer.backend, ByteTokenizer)


def prepare_images(tm: TextModel, images: Sequence[str | Path]) -> ImageInputs:
    """Read ``images`` and preprocess them as the model's processor does -> their placeholder
    blocks and the model's keyword inputs. Unreadable files are one ``ValueError`` line naming them."""
    device = next(tm.model.parameters()).device
    if tm.system == "llm":
        if tm.model.config.vision is None:
            raise ValueError("this model is text-only: it cannot take an image")
        return ImageInputs([image_block(tm) for _ in images], {"pixels": _square_pixels(tm, images).to(device)})
    if tm.system == "flamingo":
        return _flamingo_images(tm, images, device)
    if tm.system == "llava":
        from ..models.llava.preprocess import as_rgb, clip_view, preprocess_anyres

        image_id, c = _image_token(tm, IMAGE_MARKER), tm.model.config
        if c.grid_pinpoints is None:
            pixels = torch.stack([clip_view(as_rgb(Path(i)), tm.image_settings) for i in images])
            return ImageInputs([[image_id] * c.tokens_per_tile for _ in images], {"pixels": pixels.to(device)})
        padded, sizes, counts = preprocess_anyres([Path(i) for i in images], tm.image_settings)
        tiles = torch.cat([p[:n] for p, n in zip(padded, counts, strict=True)])
        blocks = [[image_id] * tm.model.image_token_count((h, w)) for h, w in sizes.tolist()]
        return ImageInputs(blocks, {"pixels": tiles.to(device), "image_sizes": sizes.to(device)})
    from ..models.internvl.preprocess import preprocess_tiles

    image_id = _image_token(tm, "<IMG_CONTEXT>")
    begin, end = tm.tokenizer.token_id("<img>"), tm.tokenizer.token_id("</img>")
    pixels, counts = preprocess_tiles([Path(i) for i in images], tm.image_settings)
    blocks = [([begin] if begin is not None else []) + [image_id] * tm.model.image_token_count(n)
              + ([end] if end is not None else []) for n in counts]
    return ImageInputs(blocks, {"pixels": pixels.to(device)})


def _flamingo_images(tm: TextModel, images: Sequence[str | Path], device: torch.device) -> ImageInputs:
    """Flamingo: each image resized to the tower's square and normalised (IDEFICS's processor;
    OpenFlamingo's centre crop of a square image is the same), all in one row ``[1, N, 3, S, S]``;
    its place in the text is its ``<image>`` token, framed by ``<fake_token_around_image>`` where
    the tokenizer has it (IDEFICS)."""
    c = tm.model.config
    if c.media_token_id is None:
        raise ValueError("this Flamingo has no <image> token id (media_token_id): its folder has no tokenizer.json "
                         "naming <image>")
    found = tm.tokenizer.token_id(IMAGE_MARKER)
    if found is not None and found != c.media_token_id:
        raise ValueError(f"the tokenizer's <image> is id {found} but the model's is {c.media_token_id}")
    fake = tm.tokenizer.token_id("<fake_token_around_image>")
    block = [fake, c.media_token_id, fake] if fake is not None else [c.media_token_id]
    return ImageInputs([block for _ in images], {"pixels": _square_pixels(tm, images)[None].to(device)})


def _encode_text(tm: TextModel, text: str, *, add_bos: bool = False) -> list[int]:
    """``text`` -> ids; for Flamingo each ``<|endofchunk|>`` becomes the model's token even where
    the tokenizer does not know it (the byte-level one)."""
    eoc = getattr(tm.model.config, "eoc_token_id", None) if tm.system == "flamingo" else None
    if eoc is None or END_OF_CHUNK not in text or tm.tokenizer.token_id(END_OF_CHUNK) == eoc:
        return tm.tokenizer.encode(text, add_bos=add_bos)
    first, *rest = text.split(END_OF_CHUNK)
    ids = tm.tokenizer.encode(first, add_bos=add_bos)
    for piece in rest:
        ids += [eoc] + tm.tokenizer.encode(piece)
    return ids


def _markers(tm: TextModel) -> list[str]:
    """The strings that mark an image's place in a prompt: ``<image>``, and the tokenizer's own
    image token (InternVL's chat template writes ``<IMG_CONTEXT>``)."""
    own = {"llava": IMAGE_MARKER, "internvl": "<IMG_CONTEXT>", "llm": "<start_of_image>",
           "flamingo": IMAGE_MARKER}[tm.system]
    return [IMAGE_MARKER] + ([own] if own != IMAGE_MARKER else [])


def encode_with_images(tm: TextModel, text: str, blocks: list[list[int]], *, add_bos: bool) -> list[int]:
    """``text`` -> token ids with each image marker replaced by the next image's block; with no
    marker in ``text``, the images go first (after BOS). More markers than images (or images than
    markers) is an error naming both counts."""
    pattern = "|".join(re.escape(m) for m in _markers(tm))
    pieces = re.split(pattern, text)
    n_markers = len(pieces) - 1
    if n_markers == 0:
        ids = _encode_text(tm, text, add_bos=add_bos)
        bos = ids[:1] if tm.tokenizer.bos_id is not None and ids[:1] == [tm.tokenizer.bos_id] else []
        return bos + [t for b in blocks for t in b] + ids[len(bos):]
    if n_markers != len(blocks):
        raise ValueError(f"the prompt marks {n_markers} image place(s) ({' or '.join(_markers(tm))}) but "
                         f"{len(blocks)} image(s) were given")
    ids = _encode_text(tm, pieces[0], add_bos=add_bos)
    for block, piece in zip(blocks, pieces[1:], strict=True):
        ids += block + _encode_text(tm, piece)
    return ids


def _chat_messages(messages: list[dict[str, Any]], images: int) -> list[dict[str, Any]]:
    """Messages in the content-list form image-text chat templates read (images in the first user turn)."""
    out, placed = [], False
    for m in messages:
        content: list[dict[str, Any]] = [{"type": "text", "text": m["content"]}]
        if images and m["role"] == "user" and not placed:
            content = [{"type": "image"} for _ in range(images)] + content
            placed = True
        out.append({"role": m["role"], "content": content})
    return out


def encode_request(
    tm: TextModel, prompt: str, config: GenerationConfig, *, images: Sequence[str | Path] = (),
    chat: list[dict[str, str]] | None = None,
) -> tuple[list[int], dict[str, torch.Tensor], GenerationConfig]:
    """What :func:`generate_text` decodes: the prompt's token ids (chat template applied, image
    blocks placed), the model's image keyword inputs, and ``config`` with the model's stop tokens.
    Too long for the model's positions is a ``ValueError`` naming both counts."""
    inputs = prepare_images(tm, images) if images else ImageInputs([])
    if chat is not None and tm.tokenizer.chat_template and tm.system != "llm":  # templates that read content lists
        text = tm.tokenizer.render_chat(_chat_messages(chat, len(images)))
    elif chat is not None:
        text = tm.tokenizer.render_chat(chat)
    else:
        text = prompt
    ids = encode_with_images(tm, text, inputs.blocks, add_bos=chat is None or not tm.tokenizer.chat_template)
    kwargs = inputs.kwargs
    text_config = tm.model.config if tm.system == "llm" else tm.model.config.text
    limit = text_config.max_positions
    if len(ids) + config.max_new_tokens > limit:
        raise PromptTooLong(f"prompt of {len(ids)} tokens + {config.max_new_tokens} new tokens exceeds the model's "
                            f"{limit} positions")
    if not config.stop_tokens and tm.tokenizer.stop_tokens:
        config = replace(config, stop_tokens=tm.tokenizer.stop_tokens)
    eoc = getattr(tm.model.config, "eoc_token_id", None) if tm.system == "flamingo" else None
    if eoc is not None and eoc not in config.stop_tokens:  # OpenFlamingo's generate stops at <|endofchunk|>
        config = replace(config, stop_tokens=(*config.stop_tokens, eoc))
    return ids, kwargs, config


class PromptTooLong(ValueError):
    """The prompt and the tokens asked for do not fit in the model's positions."""


def fit_chat(
    tm: TextModel, chat: list[dict[str, str]], config: GenerationConfig, *, images: Sequence[str | Path] = (),
) -> tuple[list[dict[str, str]], int]:
    """``chat`` with its oldest turns dropped until it and ``config.max_new_tokens`` fit in the model's
    positions: system messages stay, the oldest user turn goes with the replies that followed it, and
    the newest user turn is never dropped (alone too long: :class:`PromptTooLong`). Returns the kept
    messages and how many were dropped."""
    kept = list(chat)
    while True:
        try:
            encode_request(tm, "", config, images=images, chat=kept)
            return kept, len(chat) - len(kept)
        except PromptTooLong:
            users = [i for i, m in enumerate(kept) if m.get("role") == "user"]
            if len(users) < 2:
                raise
            first, second = users[0], users[1]
            kept = kept[:first] + [m for m in kept[first:second] if m.get("role") == "system"] + kept[second:]


def generate_text(
    tm: TextModel, prompt: str, config: GenerationConfig, *, images: Sequence[str | Path] = (),
    on_text: Callable[[str], None] | None = None, chat: list[dict[str, str]] | None = None,
) -> str:
    """Continue ``prompt`` (or, with ``chat``, answer the conversation), streaming text pieces to
    ``on_text`` as they become decodable. ``images``: files, placed where the prompt writes
    ``<image>`` (in order), else before the text; in a chat, in the first user turn."""
    ids, kwargs, config = encode_request(tm, prompt, config, images=images, chat=chat)
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
