"""ImageBind's own jobs on files, behind ``tatlas imagebind``: embed files of any of the six
modalities into the one space (Girdhar et al. 2023, §3: every modality aligned to images, so
audio, depth, thermal, IMU and text embeddings are comparable with each other), and search such an
index by cosine similarity with a file or a text as the query (the paper's cross-modal retrieval,
§4.1, "emergent" between modalities never paired in training).

Inputs, the modality read from the file type unless ``modality`` names it:

- audio (``.wav .flac .mp3 .ogg ...``, read as ``tatlas transcribe`` reads them): three 2-second
  clips of log-Mel features, their embeddings averaged (the official loader);
- images (``.png .jpg ...``) -> vision; with ``modality="depth"`` or ``"thermal"`` an image file is
  read as a one-channel map (depth: a 16-bit PNG in millimetres or a 32-bit float image in metres;
  thermal: converted to 8-bit grayscale);
- ``.npy`` / ``.csv``: an IMU recording ``[6, T]`` (accelerometer xyz, gyroscope xyz), or with
  ``modality="depth"`` / ``"thermal"`` a map ``[H, W]`` (depth in metres, thermal in [0, 1] or uint8);
- ``.txt`` files and text strings -> text (a file's whole content is one text).

The index is two files: ``NAME.npy``, float32 ``[N, out_dim]`` unit embeddings (before the
per-modality logit scale, which a cosine ignores), and ``NAME.json`` beside it: the model, the
embedding width and one ``{"source", "modality"}`` record per row, in row order.

Nothing is downloaded: the model is a path the user gives (the official ``imagebind_huge.pth`` or a
tatlas checkpoint), ``$TATLAS_IMAGEBIND_MODEL``, or for ``search`` the model the index records. A
preset name builds random weights (seeded), only for trying the commands."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..io.arrays import load_numpy

from ..models.imagebind.config import MODALITIES
from ..models.imagebind.model import ImageBind

MODEL_ENV = "TATLAS_IMAGEBIND_MODEL"
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".aiff", ".aif", ".au", ".m4a")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
ARRAY_SUFFIXES = (".npy", ".csv")
TEXT_SUFFIXES = (".txt",)
PRESET_PREFIX = "preset:"  # how an index records a model built from a preset


@dataclass(frozen=True)
class Item:
    """One input: ``source`` (a file path, or the text itself) and its ``modality``."""

    source: str
    modality: str
    is_file: bool


@dataclass(frozen=True)
class Hit:
    """One row of an index, as a search ranks it."""

    row: int
    score: float
    source: str
    modality: str


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


def resolve_model(path: str | Path | None, preset: str | None = None) -> str:
    """The model to use, as an index records it: ``path``, else ``preset:NAME``, else
    ``$TATLAS_IMAGEBIND_MODEL``; a clear one-line error when there is none."""
    if path is not None and preset is not None:
        raise ValueError("give --model or --preset, not both")
    if preset is not None:
        return PRESET_PREFIX + preset
    path = path if path is not None else (os.environ.get(MODEL_ENV) or None)
    if path is None:
        raise ValueError(
            f"no ImageBind model given: pass --model PATH (the official imagebind_huge.pth, or a tatlas checkpoint "
            f"from `tatlas train imagebind` / tatlas.save) or set {MODEL_ENV}; nothing is downloaded "
            f"(--preset tiny builds random weights, for trying the command only)")
    path = Path(path).expanduser()
    return str(path.resolve() if path.exists() else path)  # absolute: the index's search finds it from anywhere


def load_imagebind(model: str, *, device: str | None = None) -> ImageBind:
    """An ImageBind model in eval mode, float32, from :func:`resolve_model`'s answer: a ``.pth`` /
    ``.pt`` file is read as the official checkpoint, a ``.safetensors`` file as ours (or the
    official keys in safetensors), ``preset:NAME`` is built with random weights from seed 0."""
    import tatlas
    from tatlas.io import CheckpointError

    if model.startswith(PRESET_PREFIX):
        from ..models.imagebind.config import PRESETS

        name = model.removeprefix(PRESET_PREFIX)
        if name not in PRESETS:
            raise ValueError(f"--preset: expected one of {sorted(PRESETS)}, got {name!r}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return tatlas.create("imagebind", name, device=device, fast=True).eval()
    path = Path(model)
    if not path.is_file():
        raise ValueError(f"--model {path}: no such file")
    if path.suffix not in (".pth", ".pt", ".bin", ".safetensors"):
        raise ValueError(f"--model {path}: expected the official checkpoint (.pth) or a tatlas checkpoint "
                         f"(.safetensors), got a {path.suffix or 'suffix-less'} file")
    if path.is_file() and path.suffix in (".pth", ".pt", ".bin"):
        out = tatlas.load(path, format="imagebind", device=device, dtype=torch.float32, fast=True)
    else:
        try:
            out = tatlas.load(path, system="imagebind", device=device, dtype=torch.float32, fast=True)
        except CheckpointError as e:  # the official keys saved as safetensors: no tatlas metadata
            if "without tatlas metadata" not in str(e):
                raise
            out = tatlas.load(path, format="imagebind", device=device, dtype=torch.float32, fast=True)
    return out.eval()


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def _file_modality(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in AUDIO_SUFFIXES:
        return "audio"
    if suffix in IMAGE_SUFFIXES:
        return "vision"
    if suffix in ARRAY_SUFFIXES:
        return "imu"
    if suffix in TEXT_SUFFIXES:
        return "text"
    raise ValueError(f"{path}: unknown file type {suffix or '(no suffix)'!r}; name its modality with --modality "
                     f"{'|'.join(MODALITIES)} (audio: {' '.join(AUDIO_SUFFIXES[:4])} ...; images: .png .jpg ...; "
                     f"IMU: .npy .csv; text: .txt)")


def classify_inputs(files: Sequence[str | Path], texts: Sequence[str] = (), *,
                    modality: str | None = None) -> list[Item]:
    """Files (modality from the suffix, or ``modality`` for all of them) then ``texts`` -> items, in
    that order. A missing or empty file or an unknown suffix is a one-line ``ValueError``."""
    if modality is not None and modality not in MODALITIES:
        raise ValueError(f"--modality: expected one of {MODALITIES}, got {modality!r}")
    items = []
    for f in files:
        path = Path(f)
        if not path.is_file():
            raise ValueError(f"{path}: no such file" + (" (for a text, use --text)" if not path.suffix else ""))
        if path.stat().st_size == 0:
            raise ValueError(f"{path}: empty file (0 bytes)")
        items.append(Item(str(path), modality or _file_modality(path), True))
    for t in texts:
        if modality not in (None, "text"):
            raise ValueError(f"--text {t!r}: a text is always embedded as text, not --modality {modality}")
        if not t.strip():
            raise ValueError("--text: expected a non-empty text")
        items.append(Item(t, "text", False))
    if not items:
        raise ValueError("give at least one file or --text")
    return items


def classify_query(query: str, *, modality: str | None = None) -> Item:
    """A search query: an existing file (as :func:`classify_inputs`), else a text. A name with a known
    file suffix that does not exist is an error, not silently a text."""
    path = Path(query)
    if path.is_file():
        return classify_inputs([path], modality=modality)[0]
    if modality not in (None, "text"):
        raise ValueError(f"{query}: no such file (--modality {modality} needs a file)")
    known = AUDIO_SUFFIXES + IMAGE_SUFFIXES + ARRAY_SUFFIXES + TEXT_SUFFIXES
    if path.suffix.lower() in known and " " not in query:
        raise ValueError(f"{query}: no such file")
    return classify_inputs([], [query])[0]


def _read_array(path: Path) -> np.ndarray:
    try:
        if path.suffix.lower() == ".csv":
            return np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
        return load_numpy(path)
    except (ValueError, OSError, EOFError) as e:
        kind = "CSV of numbers" if path.suffix.lower() == ".csv" else ".npy array"
        raise ValueError(f"{path}: not a readable {kind} ({' '.join(str(e).split())})") from None


def _depth_image(path: Path) -> np.ndarray:
    """A one-channel image file -> a depth map in metres (16-bit: millimetres; 32-bit float: metres)."""
    from ..data.images import open_image

    img = open_image(path)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        return np.asarray(img, dtype=np.float64) / 1000.0
    if img.mode == "F":
        return np.asarray(img, dtype=np.float64)
    raise ValueError(f"{path}: a depth image must be one channel of 16-bit millimetres or 32-bit float metres, "
                     f"got PIL mode {img.mode!r} (save metres as a .npy [H, W] instead)")


def prepare(item: Item, model: ImageBind) -> Tensor:
    """One item -> the model's input for it, without the batch axis (audio: ``[clips, 1, M, T]``)."""
    from ..models.imagebind import preprocess as pre

    c = model.config
    if item.modality not in model.encoders:
        raise ValueError(f"{item.source}: this model has no {item.modality} encoder (it has {tuple(model.encoders)})")
    path = Path(item.source)
    try:
        if item.modality == "audio":
            return pre.load_audio_clips(path, num_mel_bins=c.mel_bins, target_frames=c.audio_frames)
        if item.modality == "vision":
            return pre.image_pixels(path, size=c.image_size, mean=c.image_mean, std=c.image_std)
        if item.modality == "depth":
            a = _read_array(path) if path.suffix.lower() in ARRAY_SUFFIXES else _depth_image(path)
            return pre.depth_pixels(a, size=c.depth_size)
        if item.modality == "thermal":
            src = _read_array(path) if path.suffix.lower() in ARRAY_SUFFIXES else path
            return pre.thermal_pixels(src, size=c.thermal_size)
        if item.modality == "imu":
            if path.suffix.lower() not in ARRAY_SUFFIXES:
                raise ValueError(f"expected a .npy or .csv file of shape [{c.imu_channels}, T], got a "
                                 f"{path.suffix or 'suffix-less'} file")
            a = _read_array(path)
            if a.ndim == 2 and a.shape[1] == c.imu_channels and a.shape[0] != c.imu_channels:
                raise ValueError(f"imu: expected shape [{c.imu_channels}, T] (channels first), got shape "
                                 f"{list(a.shape)}: transpose it")
            if not np.issubdtype(a.dtype, np.number):
                raise ValueError(f"imu: expected float readings, got dtype {a.dtype}")
            return pre.imu_window(a.astype(np.float32, copy=False), steps=c.imu_steps)
    except ValueError as e:
        message = " ".join(str(e).split())
        raise ValueError(message if message.startswith(str(path)) else f"{path}: {message}") from None
    raise AssertionError(item.modality)  # text is tokenised in batches by embed()


def _text(item: Item) -> str:
    if not item.is_file:
        return item.source
    try:
        text = Path(item.source).read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        raise ValueError(f"{item.source}: not a UTF-8 text file") from None
    if not text:
        raise ValueError(f"{item.source}: no text in the file")
    return text


# ---------------------------------------------------------------------------------------------
# Embedding and search
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def embed(model: ImageBind, items: Sequence[Item], *, batch_size: int = 8) -> Tensor:
    """Items -> float32 ``[N, out_dim]`` unit embeddings in item order (each modality's encoder, no
    logit scale). Every input is read and checked before the first is encoded."""
    from ..models.clip.tokenizer import CLIPTokenizer

    inputs: list[Tensor | None] = [None] * len(items)
    texts = [(i, _text(it)) for i, it in enumerate(items) if it.modality == "text"]
    if texts and "text" not in model.encoders:
        raise ValueError(f"this model has no text encoder (it has {tuple(model.encoders)})")
    for i, it in enumerate(items):
        if it.modality != "text":
            inputs[i] = prepare(it, model)
    if texts:
        tokens = CLIPTokenizer(context_length=model.config.context_length)([t for _, t in texts], truncate=True)
        for (i, _), row in zip(texts, tokens, strict=True):
            inputs[i] = row
    device = next(model.parameters()).device
    out = torch.empty(len(items), model.config.out_dim)
    for m in MODALITIES:
        rows = [i for i, it in enumerate(items) if it.modality == m]
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            x = torch.stack([inputs[i] for i in chunk]).to(device)  # [B, ...] (audio: [B, clips, 1, M, T])
            out[chunk] = model.encode(m, x, normalize=True, scale=False).float().cpu()
    return F.normalize(out, dim=-1)  # audio clips' averages back to unit length


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def write_index(path: str | Path, embeddings: Tensor, items: Sequence[Item], model: str) -> tuple[Path, Path]:
    """``path`` (``.npy``: the ``[N, E]`` array) and its sidecar ``.json`` (model, dim, rows)."""
    path = Path(path)
    if path.suffix != ".npy":
        raise ValueError(f"--out {path}: expected a .npy file name (the rows' names go to {path.stem}.json beside it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, embeddings.numpy().astype(np.float32))
    meta = {"model": model, "dim": int(embeddings.shape[1]),
            "rows": [{"source": it.source, "modality": it.modality} for it in items]}
    side = _sidecar(path)
    side.write_text(json.dumps(meta, indent=1) + "\n")
    return path, side


def read_index(path: str | Path) -> tuple[np.ndarray, dict]:
    """An index written by :func:`write_index` -> (``[N, E]`` float32, its sidecar)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--in {path}: no such file")
    side = _sidecar(path)
    if not side.is_file():
        raise ValueError(f"--in {path}: no {side.name} beside it (the rows' names; write the index with "
                         f"`tatlas imagebind embed --out {path.name}`)")
    try:
        array = load_numpy(path)
        meta = json.loads(side.read_text())
        rows = meta["rows"]
    except (ValueError, OSError, EOFError, KeyError, TypeError) as e:
        raise ValueError(f"--in {path}: not an index written by `tatlas imagebind embed` ({e})") from None
    if array.ndim != 2 or array.shape[0] != len(rows) or array.shape[0] == 0:
        raise ValueError(f"--in {path}: expected [{len(rows)}, E] embeddings as {side.name} lists, got shape "
                         f"{list(array.shape)}")
    return array.astype(np.float32, copy=False), meta


def search(query: Tensor, index: np.ndarray, meta: dict, *, top: int = 5) -> list[Hit]:
    """The ``top`` rows of ``index`` closest to ``query`` ``[E]`` by cosine similarity, best first."""
    if top < 1:
        raise ValueError(f"--top: expected at least 1, got {top}")
    rows = torch.from_numpy(np.ascontiguousarray(index))
    if rows.shape[1] != query.shape[-1]:
        raise ValueError(f"the index holds {rows.shape[1]}-wide embeddings, the model gives {query.shape[-1]}-wide "
                         f"ones: search with the model the index was made with ({meta.get('model')})")
    scores = F.normalize(rows, dim=-1) @ F.normalize(query.reshape(-1).float(), dim=0)  # [N]
    k = min(top, scores.numel())
    best = scores.topk(k)
    return [Hit(int(i), float(s), meta["rows"][int(i)]["source"], meta["rows"][int(i)]["modality"])
            for s, i in zip(best.values, best.indices, strict=True)]
