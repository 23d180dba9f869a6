"""A real English corpus that ships with CPython, a byte-level tokenizer, and LM windows.

The corpus is :data:`pydoc_data.topics.topics`: 79 topics of the Python language reference
(about 466 kB of English prose and code) that every CPython installs for ``help()``. Topics are
taken in sorted order; each becomes one document (its UTF-8 bytes followed by ``EOS``). The
validation split is the shortest trailing run of topics holding at least 10 % of the bytes (on
CPython 3.11: 9 topics, ``"typesmapping"`` .. ``"yield"``, ~50 k tokens; training ~416 k
tokens); training is the rest. Optionally the world's captions
(:mod:`.world`; ``"train"`` scenes for training, ``"test"`` scenes, whose main objects are
held-out colour-shape pairs, for validation) are appended as further documents.

:class:`ByteTokenizer` maps text to its UTF-8 bytes (ids 0-255) plus three special ids:
``BOS = 256``, ``EOS = 257``, ``PAD = 258``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from .world import WorldConfig, make_scene

BOS, EOS, PAD = 256, 257, 258
TEXT_SPLITS: tuple[str, ...] = ("train", "val")
VAL_FRACTION = 0.1


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map of the 256 byte values to printable unicode characters."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = list(bs)
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


@dataclass(frozen=True)
class ByteTokenizer:
    """UTF-8 bytes as tokens (0-255) plus ``bos_id = 256``, ``eos_id = 257``, ``pad_id = 258``."""

    bos_id: int = BOS
    eos_id: int = EOS
    pad_id: int = PAD

    @property
    def vocab_size(self) -> int:
        return 259

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        """``text`` -> its UTF-8 byte values, optionally framed by ``BOS``/``EOS``."""
        ids = list(text.encode("utf-8"))
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids: Iterable[int]) -> str:
        """Byte ids -> text; special ids are dropped, invalid UTF-8 becomes U+FFFD."""
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token ids: expected 0..{self.vocab_size - 1}, got {bad[:5]}")
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


def corpus_text(split: str = "train") -> list[str]:
    """The documents (pydoc topic texts, in sorted-topic order) of ``split``."""
    if split not in TEXT_SPLITS:
        raise ValueError(f"split: expected one of {TEXT_SPLITS}, got {split!r}")
    return list(_documents()[split])


@functools.lru_cache(maxsize=1)
def _documents() -> dict[str, tuple[str, ...]]:
    from pydoc_data.topics import topics  # imported on first use: no import-time cost

    names = sorted(topics)
    sizes = [len(topics[n].encode("utf-8")) for n in names]
    total, tail, cut = sum(sizes), 0, len(names)
    while tail < VAL_FRACTION * total:
        cut -= 1
        tail += sizes[cut]
    return {
        "train": tuple(topics[n] for n in names[:cut]),
        "val": tuple(topics[n] for n in names[cut:]),
    }


def corpus_tokens(split: str = "train", *, world_captions: int = 0, seed: int = 0) -> np.ndarray:
    """The tokenised ``split`` as a read-only int64 array ``[N]``: every document's bytes then
    ``EOS``, followed by ``world_captions`` captions of world scenes (each then ``EOS``) drawn
    with ``seed`` from the world's ``"train"`` (for ``"train"``) or ``"test"`` (for ``"val"``)
    split."""
    if split not in TEXT_SPLITS:
        raise ValueError(f"split: expected one of {TEXT_SPLITS}, got {split!r}")
    if world_captions < 0:
        raise ValueError(f"world_captions: expected >= 0, got {world_captions}")
    return _tokens(split, world_captions, seed)


@functools.lru_cache(maxsize=8)
def _tokens(split: str, world_captions: int, seed: int) -> np.ndarray:
    docs = list(_documents()[split])
    if world_captions:
        config = WorldConfig(modalities=("caption",))
        world_split = "train" if split == "train" else "test"
        docs += [
            make_scene(config, seed=seed, split=world_split, index=i).caption() for i in range(world_captions)
        ]
    eos = bytes([0])  # placeholder byte, replaced by EOS below
    parts = [np.frombuffer(d.encode("utf-8") + eos, dtype=np.uint8).astype(np.int64) for d in docs]
    for p in parts:
        p[-1] = EOS
    out = np.concatenate(parts)
    out.setflags(write=False)
    return out


class TextDataset(Dataset):
    """Windows of the tokenised corpus for next-token prediction.

    Window ``i`` is ``tokens[i * stride : i * stride + block_size + 1]``; with the default
    ``stride = block_size`` consecutive windows share exactly one token, so every token of the
    split is a target exactly once. ``len = (N - block_size - 1) // stride + 1``.

    Sample: ``{"tokens": LongTensor [block_size + 1]}``; the input is ``tokens[:-1]`` and the
    target ``tokens[1:]``. ``seed`` only matters with ``world_captions > 0`` (which captions).
    """

    def __init__(
        self,
        split: str = "train",
        block_size: int = 128,
        seed: int = 0,
        *,
        stride: int | None = None,
        world_captions: int = 0,
    ) -> None:
        if block_size < 1:
            raise ValueError(f"block_size: expected >= 1, got {block_size}")
        stride = block_size if stride is None else stride
        if stride < 1:
            raise ValueError(f"stride: expected >= 1, got {stride}")
        self.tokens = corpus_tokens(split, world_captions=world_captions, seed=seed)
        if block_size + 1 > len(self.tokens):
            raise ValueError(
                f"block_size: expected <= {len(self.tokens) - 1} (the {split!r} corpus has "
                f"{len(self.tokens)} tokens), got {block_size}"
            )
        self.split = split
        self.block_size = block_size
        self.stride = stride
        self.seed = seed
        self.tokenizer = ByteTokenizer()

    def __len__(self) -> int:
        return (len(self.tokens) - self.block_size - 1) // self.stride + 1

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"window index: expected in [{-n}, {n}), got {index}")
        start = (index % n) * self.stride
        return {"tokens": torch.from_numpy(self.tokens[start:start + self.block_size + 1].copy())}


def unigram_cross_entropy(
    train: Sequence[int] | np.ndarray | None = None,
    val: Sequence[int] | np.ndarray | None = None,
    *,
    vocab_size: int = 259,
    smoothing: float = 1.0,
) -> float:
    """The unigram baseline: cross-entropy (nats/token) of ``val`` under token frequencies
    counted on ``train`` with add-``smoothing`` smoothing. Defaults: the corpus splits.

    A language model is learning context once its validation loss falls below this number
    (about 3.2 nats/token on the bundled corpus, against ln 259 = 5.56 for uniform guessing).
    """
    train = corpus_tokens("train") if train is None else np.asarray(train, dtype=np.int64)
    val = corpus_tokens("val") if val is None else np.asarray(val, dtype=np.int64)
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"tokens: expected non-empty train and val, got {len(train)} and {len(val)}")
    if smoothing <= 0:
        raise ValueError(f"smoothing: expected > 0, got {smoothing}")
    top = max(int(train.max()), int(val.max()))
    if min(int(train.min()), int(val.min())) < 0 or top >= vocab_size:
        raise ValueError(f"token ids: expected 0..{vocab_size - 1}, got up to {top}")
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64) + smoothing
    logp = np.log(counts / counts.sum())
    return float(-logp[val].mean())
