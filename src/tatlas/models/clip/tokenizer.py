"""CLIP's text tokenizer (Radford et al. 2021, §2.4: "a lower-cased byte pair encoding (BPE)
representation of the text with a 49,152 vocab size ... bracketed with [SOS] and [EOS] tokens"),
id for id the same as OpenAI's ``SimpleTokenizer`` and open_clip's.

The pipeline of ``SimpleTokenizer.encode``:

1. clean: ``ftfy.fix_text``, ``html.unescape`` twice, strip, collapse whitespace, lower-case.
   ``ftfy`` is not a dependency: :func:`fix_text` re-implements every ``ftfy.fix_text`` step
   except mojibake repair (``fix_encoding``: re-decoding text that was decoded with the wrong
   codec, e.g. ``"cafÃ©"``), which needs ftfy's heuristics and tables. Text without mojibake
   cleans identically.
2. split into words, numbers (one digit each), and runs of other symbols (OpenAI's regular
   expression; its ``\\p{L}``/``\\p{N}`` classes are rebuilt for the standard ``re`` module from
   :mod:`unicodedata`, once, on first use);
3. each piece as bytes mapped to printable characters (GPT-2's byte-to-unicode table), then BPE
   merges in rank order with ``</w>`` marking the end of a word;
4. ``<start_of_text>`` + ids + ``<end_of_text>``, padded with 0 to the context length (77).
   Too long: truncated by default, keeping the end token last; ``truncate=False`` raises.

The merges (``bpe_simple_vocab_16e6.txt.gz``, OpenAI's file, MIT) ship in ``tatlas/assets``.
"""

from __future__ import annotations

import functools
import gzip
import zlib
import html
import re
import unicodedata
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor

from ...data.text import bytes_to_unicode

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
SOT, EOT = "<start_of_text>", "<end_of_text>"
DEFAULT_CONTEXT_LENGTH = 77

# ---------------------------------------------------------------------------------------------
# Text cleaning: ftfy.fix_text without mojibake repair, then OpenAI's basic/whitespace clean
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _html_entities() -> dict[str, str]:
    """ftfy's table: HTML5 entities that end in ';', plus upper-cased forms of lower-case ones
    whose upper-case spelling is not itself an entity (``&EACUTE;`` -> ``É``)."""
    out: dict[str, str] = {}
    for name, char in html.entities.html5.items():
        if name.endswith(";"):
            out["&" + name] = char
            if name == name.lower():
                upper = "&" + name.upper()
                if html.unescape(upper) == upper:
                    out[upper] = char.upper()
    return out


_ENTITY_RE = re.compile(r"&#?[0-9A-Za-z]{1,24};")
_ANSI_RE = re.compile("\033\\[((?:\\d|;)*)([a-zA-Z])")
_SINGLE_QUOTE_RE = re.compile("[\u02bc\u2018-\u201b]")
_DOUBLE_QUOTE_RE = re.compile("[\u201c-\u201f]")
_C1_RE = re.compile("[\x80-\x9f]")
_SURROGATE_PAIR_RE = re.compile("[\ud800-\udbff][\udc00-\udfff]")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_LIGATURES = str.maketrans({
    "Ĳ": "IJ", "ĳ": "ij", "ŉ": "ʼn", "Ǳ": "DZ", "ǲ": "Dz", "ǳ": "dz", "Ǆ": "DŽ", "ǅ": "Dž", "ǆ": "dž",
    "Ǉ": "LJ", "ǈ": "Lj", "ǉ": "lj", "Ǌ": "NJ", "ǋ": "Nj", "ǌ": "nj",
    "ﬀ": "ff", "ﬁ": "fi", "ﬂ": "fl", "ﬃ": "ffi", "ﬄ": "ffl", "ﬅ": "ſt", "ﬆ": "st",
})
_CONTROL = dict.fromkeys([*range(0x00, 0x09), 0x0B, *range(0x0E, 0x20), 0x7F, *range(0x206A, 0x2070), 0xFEFF,
                          *range(0xFFF9, 0xFFFD)])


@functools.lru_cache(maxsize=1)
def _width_map() -> dict[int, str]:
    """Half- and full-width forms to their standard forms; the ideographic space to a space."""
    table = {0x3000: " "}
    for i in range(0xFF01, 0xFFF0):
        alt = unicodedata.normalize("NFKC", chr(i))
        if alt != chr(i):
            table[i] = alt
    return table


def _unescape_entity(match: re.Match[str]) -> str:
    text = match.group(0)
    entities = _html_entities()
    if text in entities:
        return entities[text]
    if text.startswith("&#"):
        unescaped = html.unescape(text)
        return text if ";" in unescaped else unescaped  # only whole, terminated references
    return text


def _c1_to_windows_1252(match: re.Match[str]) -> str:
    byte = match.group(0).encode("latin-1")
    try:
        return byte.decode("windows-1252")
    except UnicodeDecodeError:  # 0x81, 0x8d, 0x8f, 0x90, 0x9d: "sloppy" windows-1252 keeps them
        return match.group(0)


def _surrogate_pair(match: re.Match[str]) -> str:
    hi, lo = (ord(c) for c in match.group(0))
    return chr(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))


def _fix_segment(text: str, unescape: bool) -> str:
    while True:
        before = text
        if unescape:
            text = _ENTITY_RE.sub(_unescape_entity, text)
        text = _C1_RE.sub(_c1_to_windows_1252, text)
        text = text.translate(_LIGATURES).translate(_width_map())
        text = _SINGLE_QUOTE_RE.sub("'", _DOUBLE_QUOTE_RE.sub('"', text))
        text = (text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n")
                .replace("\u0085", "\n"))
        if _SURROGATE_RE.search(text):
            text = _SURROGATE_RE.sub("\ufffd", _SURROGATE_PAIR_RE.sub(_surrogate_pair, text))
        text = _ANSI_RE.sub("", text).translate(_CONTROL)
        text = unicodedata.normalize("NFC", text)
        if text == before:
            return text


def fix_text(text: str) -> str:
    """``ftfy.fix_text`` (ftfy 6) with its default settings, minus mojibake repair: HTML entities
    (unless the text looks like HTML, i.e. from the first line holding a ``<`` on), C1 controls as
    Windows-1252, Latin ligatures, character width, curly quotes, line breaks, surrogates,
    terminal escapes, control characters, NFC; line by line, each repeated until nothing changes."""
    out, pos, unescape = [], 0, True
    while pos < len(text):
        end = text.find("\n", pos) + 1 or len(text)
        end = min(end, pos + 1_000_000)  # ftfy's max_decode_length
        segment = text[pos:end]
        if "<" in segment:
            unescape = False
        out.append(_fix_segment(segment, unescape))
        pos = end
    return "".join(out)


def clean(text: str) -> str:
    """OpenAI's ``basic_clean`` + ``whitespace_clean`` + lower-casing (open_clip's ``clean="lower"``)."""
    text = html.unescape(html.unescape(fix_text(text))).strip()
    return " ".join(text.split()).strip().lower()


# ---------------------------------------------------------------------------------------------
# Byte-level BPE
# ---------------------------------------------------------------------------------------------


def _ranges(predicate) -> str:
    """A ``re`` character-class body for the code points where ``predicate(category)`` holds."""
    parts, start, prev = [], None, None
    for cp in range(0x110000):
        if predicate(unicodedata.category(chr(cp))):
            if start is None:
                start = cp
            prev = cp
        elif start is not None:
            parts.append(re.escape(chr(start)) + ("" if start == prev else "-" + re.escape(chr(prev))))
            start = None
    if start is not None:
        parts.append(re.escape(chr(start)) + ("" if start == prev else "-" + re.escape(chr(prev))))
    return "".join(parts)


@functools.lru_cache(maxsize=1)
def _pattern() -> re.Pattern[str]:
    """OpenAI's ``<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+``."""
    letters = _ranges(lambda cat: cat[0] == "L")
    numbers = _ranges(lambda cat: cat[0] == "N")
    return re.compile(
        f"{re.escape(SOT)}|{re.escape(EOT)}|'s|'t|'re|'ve|'m|'ll|'d|[{letters}]+|[{numbers}]|[^\\s{letters}{numbers}]+",
        re.IGNORECASE,
    )


def _asset(name: str) -> Path:
    return Path(str(resources.files("tatlas") / "assets" / name))


@functools.lru_cache(maxsize=4)
def _tables(path: str) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """(token -> id, merge pair -> rank) from a CLIP merges file."""
    try:
        with gzip.open(path) as f:
            lines = f.read().decode("utf-8").split("\n")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as e:  # a torn or corrupt gzip stream
        raise ValueError(f"{path}: cannot read the CLIP BPE merges ({' '.join(str(e).split())})") from None
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    bad = next((i for i, m in enumerate(merges) if len(m) != 2), None)
    if bad is not None:
        raise ValueError(f"{path}: line {bad + 2}: expected a merge of two tokens, got {lines[bad + 1][:60]!r}")
    byte_chars = list(bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges] + [SOT, EOT]
    return {tok: i for i, tok in enumerate(vocab)}, {m: i for i, m in enumerate(merges)}


class CLIPTokenizer:
    """Text -> CLIP token ids. ``tokenizer(["a photo of a cat"])`` -> ``LongTensor [1, 77]``."""

    def __init__(self, merges_path: str | Path | None = None, *, context_length: int = DEFAULT_CONTEXT_LENGTH) -> None:
        path = Path(merges_path) if merges_path is not None else _asset(VOCAB_FILE)
        self.encoder, self.ranks = _tables(str(path))
        self.decoder = {i: t for t, i in self.encoder.items()}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self.context_length = context_length
        self.sot_id, self.eot_id = self.encoder[SOT], self.encoder[EOT]
        self._cache: dict[str, tuple[int, ...]] = {SOT: (self.sot_id,), EOT: (self.eot_id,)}

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def _bpe(self, piece: str) -> tuple[int, ...]:
        """One pre-tokenised piece (byte characters) -> ids: apply the lowest-ranked merge
        everywhere, left to right, until none applies."""
        if piece in self._cache:
            return self._cache[piece]
        word = [*piece[:-1], piece[-1] + "</w>"]
        while len(word) > 1:
            pairs = {(a, b) for a, b in zip(word, word[1:])}
            best = min(pairs, key=lambda p: self.ranks.get(p, 1 << 30))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == best[0] and word[i + 1] == best[1]:
                    merged.append(best[0] + best[1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        ids = tuple(self.encoder[t] for t in word)
        if len(self._cache) < 200_000:
            self._cache[piece] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Cleaned, BPE-encoded ``text`` without the start/end tokens."""
        ids: list[int] = []
        for piece in _pattern().findall(clean(text)):
            ids.extend(self._bpe("".join(self.byte_encoder[b] for b in piece.encode("utf-8"))))
        return ids

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """Ids -> text, as OpenAI's ``decode``: ``</w>`` becomes a space; special tokens and
        padding stay in the text (strip them first if they are not wanted)."""
        ids = [int(i) for i in (ids.tolist() if isinstance(ids, Tensor) else ids)]
        bad = [i for i in ids if i not in self.decoder]
        if bad:
            raise ValueError(f"token ids: expected 0..{len(self.decoder) - 1}, got {bad[:5]}")
        text = "".join(self.decoder[i] for i in ids)
        return bytearray(self.byte_decoder[c] for c in text).decode("utf-8", errors="replace").replace("</w>", " ")

    def __call__(
        self, texts: str | Sequence[str], *, context_length: int | None = None, truncate: bool = True,
    ) -> Tensor:
        """``texts`` -> ``LongTensor [N, context_length]``: ``<start_of_text> ids <end_of_text>``
        then zeros. Longer texts are cut to the context with the end token kept last
        (``truncate=False``: a ``ValueError`` naming the text instead)."""
        if isinstance(texts, str):
            texts = [texts]
        n_ctx = context_length or self.context_length
        if n_ctx < 2:
            raise ValueError(f"context_length: expected >= 2 (start and end tokens), got {n_ctx}")
        out = torch.zeros(len(texts), n_ctx, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.sot_id, *self.encode(text), self.eot_id]
            if len(ids) > n_ctx:
                if not truncate:
                    shown = text if len(text) <= 60 else text[:57] + "..."
                    raise ValueError(
                        f"text {row} ({shown!r}) is {len(ids)} tokens with start and end, over the context length "
                        f"{n_ctx}; shorten it or allow truncation"
                    )
                ids = ids[: n_ctx - 1] + [self.eot_id]
            out[row, : len(ids)] = torch.tensor(ids)
        return out
