"""Whisper's tokenizer (Radford et al. 2022, "Robust Speech Recognition via Large-Scale Weak
Supervision", §2.3 and Figure 1): byte-level BPE text tokens followed by the special tokens of the
multitask format, id for id the same as openai-whisper's ``whisper.tokenizer.get_tokenizer``.

The vocabulary (openai-whisper's ``assets``, MIT, carried in ``tatlas/models/whisper/assets``):

- ``gpt2.tiktoken`` (English-only models, 50,256 BPE tokens) or ``multilingual.tiktoken``
  (50,257): one ``base64(token bytes) rank`` per line; a token's id is its rank;
- then the special tokens, numbered on from there, in this order: ``<|endoftext|>``,
  ``<|startoftranscript|>``, one ``<|xx|>`` per language (the first ``num_languages`` codes of
  :data:`LANGUAGES`: 99 for v1/v2 models, 100 with ``<|yue|>`` for large-v3), ``<|translate|>``,
  ``<|transcribe|>``, ``<|startoflm|>``, ``<|startofprev|>``, ``<|nospeech|>``,
  ``<|notimestamps|>``, and the 1,501 timestamps ``<|0.00|>`` … ``<|30.00|>`` in steps of 0.02 s.
  Older files (Hugging Face's, hence CTranslate2's) spell ``<|nospeech|>`` ``<|nocaptions|>`` and
  ``<|he|>`` ``<|iw|>``; both spellings name the same id here.

So ``n_vocab`` is 51,864 (English), 51,865 (99 languages) or 51,866 (100 languages).

Encoding is tiktoken's algorithm, written out here:

1. split the text with GPT-2's pre-tokenising pattern (``'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+|
   ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+``), run by the ``tokenizers`` library's
   Oniguruma regex;
2. each piece as UTF-8 bytes: if the whole piece is a token, that token; otherwise start from
   single bytes and repeatedly merge the adjacent pair whose concatenation has the lowest rank
   (the leftmost on ties) until no concatenation is a token.

While this was written it gave tiktoken's ids for every Unicode code point in nine contexts and on
7 MB of Python source, for both vocabularies; the tests repeat a sample of that.

Special-token text in the input (``"<|endoftext|>"``) raises, as tiktoken does, unless allowed.
"""

from __future__ import annotations

import binascii
import functools
import heapq
import json
import re
import string
from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from .languages import LANGUAGES, NO_SPACE_LANGUAGES, language_code
from .languages import TO_LANGUAGE_CODE as TO_LANGUAGE_CODE  # importable here as before

N_TIMESTAMPS = 1501  # <|0.00|> .. <|30.00|>
TIME_PRECISION = 0.02  # seconds per timestamp token
_ALIASES = {"<|nocaptions|>": "<|nospeech|>", "<|iw|>": "<|he|>"}  # older spellings (HF, CTranslate2 files)
# GPT-2's pre-tokenising pattern (tiktoken's ``pat_str`` for Whisper's encodings)
PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
VOCAB_FILES = {False: "gpt2.tiktoken", True: "multilingual.tiktoken"}


def special_token_names(num_languages: int = 99) -> list[str]:
    """The special tokens in id order (they follow the BPE tokens), for ``num_languages`` languages."""
    if not 1 <= num_languages <= len(LANGUAGES):
        raise ValueError(f"num_languages: expected 1..{len(LANGUAGES)}, got {num_languages}")
    return [
        "<|endoftext|>", "<|startoftranscript|>",
        *(f"<|{code}|>" for code in list(LANGUAGES)[:num_languages]),
        "<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>",
        "<|notimestamps|>",
        *(f"<|{i * TIME_PRECISION:.2f}|>" for i in range(N_TIMESTAMPS)),
    ]


# ---------------------------------------------------------------------------------------------
# Vocabulary files
# ---------------------------------------------------------------------------------------------


_SPECIAL_FORM = re.compile(r"<\|[^<|]*\|>")  # the form of every special token's text


def _asset(name: str) -> Path:
    return Path(str(resources.files("tatlas.models.whisper") / "assets" / name))


@functools.lru_cache(maxsize=4)
def read_tiktoken(path: str) -> dict[bytes, int]:
    """A ``.tiktoken`` file (``base64(bytes) rank`` per line) -> ``{token bytes: rank}``; the ranks
    must be exactly ``0 .. n-1``. (``multilingual.tiktoken``'s last rank, 50256, is the empty
    string: an id no text encodes to, decoding to nothing.)"""
    ranks: dict[bytes, int] = {}
    try:
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")
    except OSError as e:
        raise ValueError(f"{path}: cannot read the BPE ranks ({e.strerror or e})") from None
    decode = binascii.a2b_base64  # what base64.b64decode calls, without its per-call checks (0.037 -> 0.022 s)
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[decode(token)] = int(rank)  # "=" is b"" (multilingual's rank 50256)
        except ValueError:  # (binascii.Error is one)
            raise ValueError(f"{path}: line {number}: expected 'base64 rank', got {line[:60]!r}") from None
    _check_ranks(ranks, path)
    return ranks


def _check_ranks(ranks: dict[bytes, int], source: str) -> None:
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(f"{source}: expected BPE ranks 0..{len(ranks) - 1} each once, got gaps or repeats")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise ValueError(f"{source}: expected all 256 single bytes among the tokens, got {len(missing)} missing")


@functools.lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's printable stand-ins for bytes (``"Ġ"`` is the space) -> the byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


@functools.lru_cache(maxsize=1)
def _pre_tokenizer():
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Split(Regex(PATTERN), behavior="isolated")


# ---------------------------------------------------------------------------------------------
# Byte-pair encoding by rank (tiktoken's merge rule)
# ---------------------------------------------------------------------------------------------


def bpe(piece: bytes, ranks: dict[bytes, int]) -> list[int]:
    """One pre-tokenised piece -> ids. A piece that is itself a token is that token; otherwise
    merge the adjacent pair whose concatenation has the lowest rank, leftmost first, until no
    concatenation is a token. A heap of candidate pairs keyed ``(rank, start)`` with stale entries
    skipped keeps long pieces (a page of Chinese, a run of spaces) ``O(n log n)``."""
    rank = ranks.get(piece)
    if rank is not None:  # tiktoken's shortcut; for Whisper's vocabularies also what merging gives
        return [rank]
    n = len(piece)
    # parts are named by their start offset: nxt[s] is where the part after s starts (n: none)
    nxt, prv, alive = list(range(1, n + 1)), list(range(-1, n - 1)), [True] * n
    heap = [(ranks[piece[s : s + 2]], s, s + 2) for s in range(n - 1) if piece[s : s + 2] in ranks]
    heapq.heapify(heap)
    while heap:
        _, s, end = heapq.heappop(heap)
        if not alive[s] or nxt[s] >= n or nxt[nxt[s]] != end:
            continue  # stale: one side was merged into something else since this pair was pushed
        alive[nxt[s]] = False
        nxt[s] = end
        if end < n:
            prv[end] = s
        if prv[s] >= 0 and (r := ranks.get(piece[prv[s] : end])) is not None:
            heapq.heappush(heap, (r, prv[s], end))
        if end < n and (r := ranks.get(piece[s : nxt[end]])) is not None:
            heapq.heappush(heap, (r, s, nxt[end]))
    ids, s = [], 0
    while s < n:
        ids.append(ranks[piece[s : nxt[s]]])
        s = nxt[s]
    return ids


# ---------------------------------------------------------------------------------------------
# The tokenizer
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class WhisperTokenizer:
    """Text <-> Whisper token ids, with the special tokens of the multitask format.

    Build with :func:`get_tokenizer` (the carried vocabularies) or
    :meth:`from_ctranslate2` (a faster-whisper model folder). ``language`` and ``task`` only
    choose :attr:`sot_sequence` (and how :meth:`split_to_word_tokens` splits)."""

    ranks: dict[bytes, int] = field(repr=False)
    num_languages: int = 99
    multilingual: bool = True
    language: str | None = None
    task: Literal["transcribe", "translate"] | None = None
    name: str = "multilingual"
    special_tokens: dict[str, int] = field(init=False, repr=False)
    _decoder: list[bytes] = field(init=False, repr=False)
    _cache: dict[bytes, tuple[int, ...]] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        n_bpe = len(self.ranks)
        specials = special_token_names(self.num_languages)
        set_ = functools.partial(object.__setattr__, self)
        set_("special_tokens", {tok: n_bpe + i for i, tok in enumerate(specials)})
        decoder = [b""] * n_bpe
        for token, rank in self.ranks.items():
            decoder[rank] = token
        set_("_decoder", decoder + [tok.encode() for tok in specials])
        if self.language is not None:
            code = language_code(self.language)
            if code not in list(LANGUAGES)[: self.num_languages]:
                hint = " (<|yue|> is large-v3's: num_languages=100)" if code == "yue" else ""
                raise ValueError(f"language {code!r}: not among this model's {self.num_languages} languages{hint}")
            set_("language", code)
        if self.task not in (None, "transcribe", "translate"):
            raise ValueError(f"task: expected 'transcribe', 'translate' or None, got {self.task!r}")

    # -- sizes and single special tokens ----------------------------------------------------

    @property
    def n_vocab(self) -> int:
        """All ids: BPE tokens + special tokens (51,864 / 51,865 / 51,866)."""
        return len(self._decoder)

    def token_id(self, token: str) -> int:
        """A special token's id (``"<|transcribe|>"``; ``"<|nocaptions|>"`` is ``"<|nospeech|>"``)."""
        name = _ALIASES.get(token, token)
        if name not in self.special_tokens:
            raise KeyError(f"special token: expected one of this tokenizer's <|...|> tokens, got {token!r}")
        return self.special_tokens[name]

    eot = property(lambda self: self.token_id("<|endoftext|>"), doc="``<|endoftext|>``")
    sot = property(lambda self: self.token_id("<|startoftranscript|>"), doc="``<|startoftranscript|>``")
    translate = property(lambda self: self.token_id("<|translate|>"), doc="``<|translate|>``")
    transcribe = property(lambda self: self.token_id("<|transcribe|>"), doc="``<|transcribe|>``")
    sot_lm = property(lambda self: self.token_id("<|startoflm|>"), doc="``<|startoflm|>``")
    sot_prev = property(lambda self: self.token_id("<|startofprev|>"), doc="``<|startofprev|>``")
    no_speech = property(lambda self: self.token_id("<|nospeech|>"), doc="``<|nospeech|>``")
    no_timestamps = property(lambda self: self.token_id("<|notimestamps|>"), doc="``<|notimestamps|>``")
    timestamp_begin = property(lambda self: self.token_id("<|0.00|>"), doc="``<|0.00|>``, the first timestamp")

    def timestamp_token(self, seconds: float) -> int:
        """The timestamp token nearest ``seconds`` (0 .. 30 s, 0.02 s steps)."""
        if not 0.0 <= seconds <= (N_TIMESTAMPS - 1) * TIME_PRECISION:
            raise ValueError(f"timestamp: expected 0..30 seconds, got {seconds}")
        return self.timestamp_begin + round(seconds / TIME_PRECISION)

    def timestamp_seconds(self, token: int) -> float:
        """A timestamp token -> its time in seconds (``<|1.08|>`` -> 1.08)."""
        index = int(token) - self.timestamp_begin
        if not 0 <= index < N_TIMESTAMPS:
            raise ValueError(f"token {token}: expected a timestamp token {self.timestamp_begin}..{self.n_vocab - 1}")
        return index * TIME_PRECISION

    # -- languages and the start-of-transcript prompt -----------------------------------------

    def to_language_token(self, language: str) -> int:
        """``"de"`` (or ``"german"``) -> the id of ``<|de|>``."""
        code = language_code(language)
        if f"<|{code}|>" not in self.special_tokens:
            raise KeyError(f"language {code!r}: not among this tokenizer's {self.num_languages} languages")
        return self.special_tokens[f"<|{code}|>"]

    @property
    def language_token(self) -> int:
        """The id of ``<|language|>`` for this tokenizer's language."""
        if self.language is None:
            raise ValueError("language_token: this tokenizer has no language (an English-only model, or none was set)")
        return self.to_language_token(self.language)

    @property
    def all_language_codes(self) -> tuple[str, ...]:
        """The language codes this model knows, in id order."""
        return tuple(LANGUAGES)[: self.num_languages]

    @property
    def all_language_tokens(self) -> tuple[int, ...]:
        """Their ``<|xx|>`` ids, in the same (id) order; ``sot + 1 ..``."""
        return tuple(self.sot + 1 + i for i in range(self.num_languages))

    @property
    def sot_sequence(self) -> tuple[int, ...]:
        """``<|startoftranscript|>`` [``<|language|>``] [``<|task|>``]."""
        seq = [self.sot]
        if self.language is not None:
            seq.append(self.language_token)
        if self.task is not None:
            seq.append(self.transcribe if self.task == "transcribe" else self.translate)
        return tuple(seq)

    @property
    def sot_sequence_including_notimestamps(self) -> tuple[int, ...]:
        return (*self.sot_sequence, self.no_timestamps)

    # -- encode / decode ----------------------------------------------------------------------

    def _encode_ordinary(self, text: str, out: list[int]) -> None:
        for piece, _ in _pre_tokenizer().pre_tokenize_str(text):
            raw = piece.encode("utf-8")
            ids = self._cache.get(raw)
            if ids is None:
                ids = tuple(bpe(raw, self.ranks))
                if len(self._cache) < 100_000:
                    self._cache[raw] = ids
            out.extend(ids)

    def encode(self, text: str, *, allowed_special: Set[str] | Literal["all"] = frozenset()) -> list[int]:
        """Text -> ids. Special-token text (``"<|endoftext|>"``) is encoded as that token when it is
        in ``allowed_special`` (a set of names, or ``"all"``), and raises otherwise (tiktoken's rule)."""
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates become U+FFFD, as tiktoken does
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        allowed = set(self.special_tokens) if allowed_special == "all" else set(allowed_special)
        out: list[int] = []
        pos = 0
        for match in self._special_pattern.finditer(text):
            name = match.group()
            if name not in self.special_tokens:
                continue  # "<|...|>" that names no special token: ordinary text
            if name not in allowed:
                raise ValueError(
                    f"text contains the special token {name!r}; pass allowed_special={{{name!r}}} (or 'all') "
                    f"to encode it as one token"
                )
            self._encode_ordinary(text[pos : match.start()], out)
            out.append(self.special_tokens[name])
            pos = match.end()
        self._encode_ordinary(text[pos:], out)
        return out

    @functools.cached_property
    def _special_pattern(self) -> re.Pattern[str]:
        """Finds every special token in a text, and may find other ``<|...|>`` text too (which
        :meth:`encode` leaves ordinary). Each special token is ``<|name|>`` with no ``<`` or ``|`` in
        its name, so one short pattern finds them all exactly where the alternation of ~1,600 names
        would (and compiles in microseconds where the alternation took ~50 ms of every start-up)."""
        if all(_SPECIAL_FORM.fullmatch(name) for name in self.special_tokens):
            return _SPECIAL_FORM
        names = sorted(self.special_tokens, key=len, reverse=True)
        return re.compile("|".join(map(re.escape, names)))

    def decode(self, ids: Iterable[int] | torch.Tensor | np.ndarray) -> str:
        """Ids -> text, timestamp tokens dropped (other special tokens stay as their ``<|...|>``
        text); bytes that do not form UTF-8 become U+FFFD."""
        ids = self._ids(ids)
        return self._decode([i for i in ids if i < self.timestamp_begin])

    def decode_with_timestamps(self, ids: Iterable[int] | torch.Tensor | np.ndarray) -> str:
        """Ids -> text with every token kept, timestamps written ``<|1.08|>``."""
        return self._decode(self._ids(ids))

    def decode_bytes(self, ids: Iterable[int] | torch.Tensor | np.ndarray) -> bytes:
        """Ids -> the raw bytes they stand for (special tokens as their UTF-8 text)."""
        return b"".join(self._decoder[i] for i in self._ids(ids))

    def _decode(self, ids: list[int]) -> str:
        return b"".join(self._decoder[i] for i in ids).decode("utf-8", errors="replace")

    def _ids(self, ids: Iterable[int] | torch.Tensor | np.ndarray) -> list[int]:
        if isinstance(ids, torch.Tensor | np.ndarray):
            ids = ids.tolist()
        out = [int(i) for i in ids]
        bad = next((i for i in out if not 0 <= i < len(self._decoder)), None)
        if bad is not None:
            raise ValueError(f"token id: expected 0..{len(self._decoder) - 1}, got {bad}")
        return out

    # -- suppression and word splitting ---------------------------------------------------------

    @functools.cached_property
    def non_speech_tokens(self) -> tuple[int, ...]:
        """Tokens suppressed by ``suppress_tokens="-1"``: symbols that only appear in speaker tags
        and non-speech annotations (``♪♪♪``, ``( SPEAKING FOREIGN LANGUAGE )``, ``[DAVID]``), each
        alone and after a space, if one token; the music symbols ♩♪♫♬♭♮♯ by their first token
        (their UTF-8 shares the first two bytes with only other U+2640..267F symbols). Plain
        punctuation stays allowed; ``" -"`` and ``" '"`` (a hyphen or quote opening a word) are
        suppressed."""
        symbols = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』')
        symbols += "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split()
        music = list("♩♪♫♬♭♮♯")
        suppressed = {self.encode(" -")[0], self.encode(" '")[0]}
        for symbol in symbols + music:
            for ids in (self.encode(symbol), self.encode(" " + symbol)):
                if len(ids) == 1 or symbol in music:
                    suppressed.add(ids[0])
        return tuple(sorted(suppressed))

    def split_to_word_tokens(self, ids: Sequence[int]) -> tuple[list[str], list[list[int]]]:
        """Ids -> (words, each word's ids) for word-level timestamps: at spaces and punctuation,
        or at every whole character for languages written without spaces (zh, ja, th, lo, my, yue)."""
        if self.language in NO_SPACE_LANGUAGES:
            return self.split_tokens_on_unicode(ids)
        return self.split_tokens_on_spaces(ids)

    def split_tokens_on_unicode(self, ids: Sequence[int]) -> tuple[list[str], list[list[int]]]:
        """Group consecutive ids into the shortest runs that decode to whole characters. A run that
        still decodes to U+FFFD is closed anyway when the full text has U+FFFD at that place (the
        bytes are invalid UTF-8 there, and more tokens would not help)."""
        ids = self._ids(ids)
        full = self._decode(ids)
        words: list[str] = []
        groups: list[list[int]] = []
        pending: list[int] = []
        offset = 0  # characters of `full` covered by `words`
        for token in ids:
            pending.append(token)
            text = self._decode(pending)
            bad = text.find("\ufffd")
            if bad < 0 or full[offset + bad : offset + bad + 1] == "\ufffd":
                words.append(text)
                groups.append(pending)
                pending = []
                offset += len(text)
        return words, groups

    def split_tokens_on_spaces(self, ids: Sequence[int]) -> tuple[list[str], list[list[int]]]:
        """Whole-character runs (:meth:`split_tokens_on_unicode`) joined into words: a run starts a
        new word if it is a special token, begins with a space, or is punctuation or blank."""
        words: list[str] = []
        groups: list[list[int]] = []
        for text, tokens in zip(*self.split_tokens_on_unicode(ids), strict=True):
            starts_word = tokens[0] >= self.eot or text.startswith(" ") or text.strip() in string.punctuation
            if starts_word or not words:
                words.append(text)
                groups.append(list(tokens))
            else:
                words[-1] += text
                groups[-1].extend(tokens)
        return words, groups

    # -- other sources ----------------------------------------------------------------------------

    @classmethod
    def from_ctranslate2(
        cls, folder: str | Path, *, language: str | None = None, task: Literal["transcribe", "translate"] | None = None,
    ) -> WhisperTokenizer:
        """The tokenizer of a CTranslate2 (faster-whisper) Whisper folder, from its
        ``vocabulary.txt`` (one token per line, GPT-2 byte characters, in id order) or
        ``vocabulary.json`` (the same as a list). The special tokens it lists must be ours, in our
        order (a list cut short after ``<|notimestamps|>`` gets the timestamps appended).
        Multilingual when it has 51,865 ids or more (openai's rule); then ``language`` defaults to
        ``"en"`` and ``task`` to ``"transcribe"``."""
        folder = Path(folder)
        if (folder / "vocabulary.json").is_file():
            path = folder / "vocabulary.json"
            try:
                tokens = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise ValueError(f"{path}: not a readable JSON token list ({e})") from None
        elif (folder / "vocabulary.txt").is_file():
            path = folder / "vocabulary.txt"
            try:
                tokens = path.read_text(encoding="utf-8").split("\n")
            except (OSError, UnicodeDecodeError) as e:
                raise ValueError(f"{path}: not a readable token list ({e})") from None
            if tokens and tokens[-1] == "":
                tokens.pop()
        else:
            raise ValueError(f"{folder}: expected a CTranslate2 Whisper folder with vocabulary.txt or vocabulary.json")
        if "<|endoftext|>" not in tokens:
            raise ValueError(f"{path}: expected a Whisper vocabulary with <|endoftext|>, got none")
        n_bpe = tokens.index("<|endoftext|>")
        byte_of = _byte_decoder()
        ranks: dict[bytes, int] = {}
        for rank, token in enumerate(tokens[:n_bpe]):
            try:
                ranks[bytes(byte_of[c] for c in token)] = rank
            except KeyError:
                raise ValueError(f"{path}: token {rank} {token!r} is not in GPT-2's byte alphabet") from None
        _check_ranks(ranks, str(path))
        specials = [_ALIASES.get(t, t) for t in tokens[n_bpe:]]
        num_languages = sum(1 for t in specials if t[2:-2] in LANGUAGES)
        expected = special_token_names(max(num_languages, 1))
        needed = expected.index("<|notimestamps|>") + 1  # the timestamps may be left out
        if specials != expected[: len(specials)] or len(specials) < needed:
            first = next((i for i, (a, b) in enumerate(zip(specials, expected)) if a != b),
                         min(len(specials), len(expected)))
            got = repr(specials[first]) if first < len(specials) else "the end of the list"
            want = repr(expected[first]) if first < len(expected) else "the end of the list"
            raise ValueError(f"{path}: special token {n_bpe + first}: expected {want}, got {got}")
        multilingual = n_bpe + len(expected) >= 51865
        if multilingual:
            language, task = language or "en", task or "transcribe"
        else:
            language, task = None, None
        return cls(ranks, num_languages=num_languages, multilingual=multilingual, language=language, task=task,
                   name=str(folder))


@functools.lru_cache(maxsize=None)
def get_tokenizer(
    multilingual: bool, *, num_languages: int = 99, language: str | None = None,
    task: Literal["transcribe", "translate"] | None = None,
) -> WhisperTokenizer:
    """The tokenizer of an openai-whisper model: English-only models (``multilingual=False``)
    use ``gpt2.tiktoken`` and have no language or task in their prompt; multilingual ones use
    ``multilingual.tiktoken``, ``language`` (code, name or alias; default ``"en"``) and ``task``
    (default ``"transcribe"``). ``num_languages``: 99, or 100 for large-v3."""
    if multilingual:
        language, task = language or "en", task or "transcribe"
    else:
        language, task = None, None
    name = VOCAB_FILES[bool(multilingual)]
    return WhisperTokenizer(
        read_tiktoken(str(_asset(name))), num_languages=num_languages, multilingual=bool(multilingual),
        language=language, task=task, name=name.removesuffix(".tiktoken"),
    )
