"""Spoken sentences of a small vocabulary, for training a tiny Whisper from scratch in minutes.

The sentences come from a three-form grammar over the world's words (:mod:`tatlas.data.world`):

- objects: ``"{a|an|two|three|four} [small|large] {colour} {shape}"``, the shape plural after a
  number ("two large red circles", "an orange star");
- pairs: ``"{a|an} {colour} {shape} and {a|an} {colour} {shape}"`` ("a red circle and a blue
  square");
- digits: three or four digit words ("seven three nine").

They are spoken by eSpeak NG (:func:`tatlas.data.speech.speech`, in-process) in one of
:data:`VOICES` (8 English accents x 14 voice variants, which set pitch, formants and timbre), at
160-220 words per minute, the leading and trailing silence cut and a random 0-0.25 s of silence put
in front (less where the window would not hold it).

Held out, so that a test measures transcription of sentences never heard:

- every fifth sentence of the grammar (by a CRC-32 of its text, :func:`split_of`) is a ``"test"``
  sentence that no ``"train"`` draw ever yields;
- the world's held-out colour-shape pairs (:func:`tatlas.data.world.held_out_pairs`, one per
  colour) occur only in ``"novel"`` sentences (each holds at least one such pair).

The tokenizer (:class:`WordTokenizer`) is word-level over the grammar's closed :data:`LEXICON`
(35 words), followed, as in Whisper's vocabulary, by the special tokens ``<|endoftext|>``,
``<|startoftranscript|>`` and ``<|notimestamps|>``: 38 ids. With GPT-2 BPE's 51,864 ids a width-96
model would carry a 5M-parameter embedding (nine times the rest of it) and a softmax that costs
as much as its whole encoder, for sentences that use 35 words. It is the prompt format of an
English-only Whisper (``<|startoftranscript|> <|notimestamps|> text <|endoftext|>``) over a
different, closed word list: it cannot spell a word outside the list.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ...data.speech import speech
from ...data.world import COLOURS, PLURAL, SHAPES, SIZES, held_out_pairs

# ---------------------------------------------------------------------------------------------
# The grammar
# ---------------------------------------------------------------------------------------------

COUNTS: tuple[str, ...] = ("two", "three", "four")  # or the article "a"/"an" for one object
DIGITS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
FORMS: tuple[str, ...] = ("object", "pair", "digits")
FORM_WEIGHTS: tuple[float, ...] = (0.4, 0.4, 0.2)
SPLITS: tuple[str, ...] = ("train", "test", "novel")
TEST_EVERY = 5  # one sentence in five of the grammar is held out for "test"

LEXICON: tuple[str, ...] = tuple(sorted({
    "a", "an", "and", *COUNTS, *DIGITS, *SIZES, *COLOURS, *SHAPES, *(PLURAL[s] for s in SHAPES),
}))
SPECIAL_TOKENS: tuple[str, ...] = ("<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>")

_HELD = frozenset(held_out_pairs())
_TRAIN_PAIRS = tuple((c, s) for c in COLOURS for s in SHAPES if (c, s) not in _HELD)
_NOVEL_PAIRS = tuple(sorted(_HELD))
_SINGULAR = {PLURAL[s]: s for s in SHAPES}


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _object(rng: np.random.Generator, pair: tuple[str, str]) -> str:
    colour, shape = pair
    count = ("one", *COUNTS)[rng.integers(4)]
    size = ("", *SIZES)[rng.integers(len(SIZES) + 1)]
    rest = " ".join(w for w in (size, colour, shape if count == "one" else PLURAL[shape]) if w)
    return f"{_article(rest) if count == 'one' else count} {rest}"


def _sentence(rng: np.random.Generator, novel: bool) -> str:
    form = "object" if novel and rng.random() < 0.5 else FORMS[rng.choice(3, p=FORM_WEIGHTS)]
    if novel and form == "digits":
        form = "pair"

    def pair(force_novel: bool = False) -> tuple[str, str]:
        pool = _NOVEL_PAIRS if force_novel else _TRAIN_PAIRS
        return pool[rng.integers(len(pool))]

    if form == "object":
        return _object(rng, pair(novel))
    if form == "pair":
        which = rng.integers(2) if novel else -1  # the held-out pair goes first or second
        (c1, s1), (c2, s2) = pair(which == 0), pair(which == 1)
        return f"{_article(c1)} {c1} {s1} and {_article(c2)} {c2} {s2}"
    return " ".join(DIGITS[d] for d in rng.integers(10, size=3 + rng.integers(2)))


def split_of(text: str) -> str:
    """``"novel"`` if ``text`` names a held-out colour-shape pair, else ``"test"`` for one
    sentence in :data:`TEST_EVERY` (by the CRC-32 of its text), else ``"train"``."""
    words = text.split()
    if any((colour, _SINGULAR.get(shape, shape)) in _HELD for colour, shape in zip(words, words[1:], strict=False)):
        return "novel"
    return "test" if zlib.crc32(text.encode()) % TEST_EVERY == 0 else "train"


def sentences(split: str, n: int, *, seed: int = 0) -> list[str]:
    """``n`` sentences of ``split`` (``"train"``, ``"test"`` or ``"novel"``), drawn with
    ``(seed, split)``; repeats are allowed (the grammar has ~12,000 train sentences)."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    rng = np.random.default_rng([seed, SPLITS.index(split), 17])
    out: list[str] = []
    while len(out) < n:
        text = _sentence(rng, novel=split == "novel")
        if split_of(text) == split:
            out.append(text)
    return out


# ---------------------------------------------------------------------------------------------
# Voices and rendering
# ---------------------------------------------------------------------------------------------

ACCENTS: tuple[str, ...] = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-us-nyc",
                            "en-gb-x-gbclan", "en-gb-x-gbcwmd")
VARIANTS: tuple[str, ...] = ("", "+m1", "+m2", "+m3", "+m4", "+m5", "+m6", "+m7", "+f1", "+f2", "+f3", "+f4", "+f5",
                             "+klatt")
VOICES: tuple[str, ...] = tuple(a + v for a in ACCENTS for v in VARIANTS)
WORDS_PER_MINUTE: tuple[int, int] = (160, 220)
MAX_OFFSET_S = 0.25
WINDOW_S = 3.0  # every sentence, as spoken here, fits a 3-s window (the longest measured: 2.93 s)


@dataclass(frozen=True)
class Utterance:
    """One sentence as spoken: ``text`` in ``voice`` at ``words_per_minute``, after ``offset_s``
    seconds of silence (or less: :func:`render`)."""

    text: str
    voice: str = "en-us"
    words_per_minute: int = 175
    offset_s: float = 0.0


def utterances(texts: Sequence[str], *, seed: int = 0, stream: int = 0) -> list[Utterance]:
    """A random voice, speed and offset for each of ``texts`` (drawn with ``(seed, stream)``)."""
    rng = np.random.default_rng([seed, stream, 29])
    lo, hi = WORDS_PER_MINUTE
    return [Utterance(t, VOICES[rng.integers(len(VOICES))], int(rng.integers(lo, hi + 1)),
                      round(float(rng.uniform(0, MAX_OFFSET_S)), 3)) for t in texts]


def trim_silence(audio: np.ndarray, threshold: float = 0.01) -> np.ndarray:
    """``audio [S]`` without its leading and trailing samples quieter than ``threshold`` x its peak."""
    loud = np.flatnonzero(np.abs(audio) > threshold * max(float(np.abs(audio).max(initial=0.0)), 1e-9))
    return audio[loud[0] : loud[-1] + 1] if len(loud) else audio[:0]


def render(utterance: Utterance, sample_rate: int = 16_000, *, max_samples: int | None = None) -> np.ndarray:
    """``utterance`` spoken by eSpeak NG: float32 ``[S]`` at ``sample_rate``. With
    ``max_samples``, the silence in front is shortened as far as needed to fit (the speech itself
    is never cut)."""
    audio = trim_silence(speech(utterance.text, sample_rate=sample_rate, voice=utterance.voice,
                                words_per_minute=utterance.words_per_minute).numpy())
    offset = round(utterance.offset_s * sample_rate)
    if max_samples is not None:
        offset = max(0, min(offset, max_samples - len(audio)))
    return np.concatenate([np.zeros(offset, np.float32), audio])


def render_many(items: Iterable[Utterance], sample_rate: int = 16_000, *,
                max_samples: int | None = None) -> list[np.ndarray]:
    """:func:`render` over ``items``, in order (eSpeak NG runs in-process, ~6 ms a sentence)."""
    return [render(u, sample_rate, max_samples=max_samples) for u in items]


# ---------------------------------------------------------------------------------------------
# The tokenizer
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class WordTokenizer:
    """Word-level ids over a closed word list, then Whisper's special tokens (in Whisper's
    order: ``<|endoftext|>`` first). Text is lowercased and split on whitespace; a word outside
    the list raises. The interface is the part of :class:`.tokenizer.WhisperTokenizer` that
    training and greedy decoding use: ``encode``, ``decode``, ``eot``, ``sot``,
    ``no_timestamps``, ``sot_sequence_including_notimestamps``, ``n_vocab``."""

    words: tuple[str, ...] = LEXICON
    _ids: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(set(self.words)) != len(self.words) or not all(w and w == w.lower() and w.split() == [w]
                                                              for w in self.words):
            raise ValueError("WordTokenizer: expected distinct lowercase words without spaces")
        ids = {w: i for i, w in enumerate((*self.words, *SPECIAL_TOKENS))}
        object.__setattr__(self, "_ids", ids)

    @property
    def n_vocab(self) -> int:
        return len(self.words) + len(SPECIAL_TOKENS)

    eot = property(lambda self: len(self.words), doc="``<|endoftext|>``")
    sot = property(lambda self: len(self.words) + 1, doc="``<|startoftranscript|>``")
    no_timestamps = property(lambda self: len(self.words) + 2, doc="``<|notimestamps|>``")

    @property
    def sot_sequence_including_notimestamps(self) -> tuple[int, ...]:
        return (self.sot, self.no_timestamps)

    def encode(self, text: str) -> list[int]:
        """``" two red circles"`` -> word ids (the leading space a BPE text needs is ignored)."""
        out = []
        for word in text.lower().split():
            if word not in self._ids or self._ids[word] >= self.eot:
                raise ValueError(f"WordTokenizer: {word!r} is not among its {len(self.words)} words "
                                 f"({', '.join(self.words)})")
            out.append(self._ids[word])
        return out

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        """Ids -> words joined by spaces; special tokens are left out."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        out = []
        for i in ids:
            if not 0 <= int(i) < self.n_vocab:
                raise ValueError(f"token id: expected 0..{self.n_vocab - 1}, got {i}")
            if i < self.eot:
                out.append(self.words[i])
        return " ".join(out)
