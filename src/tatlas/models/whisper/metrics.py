"""Word error rate, the measure of Whisper's evaluations (Radford et al. 2022, §3.2 "Evaluation
Metrics"): the word-level Levenshtein distance (substitutions + deletions + insertions) between
hypothesis and reference, summed over a corpus and divided by the number of reference words.

The paper scores text after its own English normaliser (Appendix C: spelling, numbers, fillers,
...). Here the normalisation is deliberately small (:func:`normalize_text`): lowercase, curly
quotes made straight, hyphens and punctuation (all but in-word apostrophes) removed, and standalone
integers 0-99 spelled out ("3" -> "three", "42" -> "forty two"), because Whisper writes numbers as
digits while spoken-sentence references spell them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def _spell(n: int) -> str:
    if n < 20:
        return _ONES[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])


def normalize_text(text: str) -> str:
    """``"Two large, red circles -- 3 of them!"`` -> ``"two large red circles three of them"``."""
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    text = re.sub(r"[-\u2010-\u2015]", " ", text)  # hyphens and dashes separate words
    text = re.sub(r"(?<![a-z0-9])'|'(?![a-z0-9])", " ", text)  # quotes, not in-word apostrophes
    text = re.sub(r"[^\w\s']|_", " ", text)  # other punctuation
    text = re.sub(r"\b\d{1,2}\b", lambda m: _spell(int(m.group())), text)
    return " ".join(text.split())


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance between two word sequences (each substitution, deletion and
    insertion costs 1)."""
    prev = list(range(len(hyp) + 1))  # distances from ref[:0] to every prefix of hyp
    for i, r in enumerate(ref, start=1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))  # delete, insert, substitute
        prev = cur
    return prev[-1]


def word_error_rate(refs: Sequence[str] | str, hyps: Sequence[str] | str, *, normalize: bool = True) -> float:
    """Corpus WER: total word edits over total reference words (can exceed 1 with insertions).
    ``refs`` and ``hyps`` are parallel lists of transcripts (or one string each); each is passed
    through :func:`normalize_text` first unless ``normalize=False``."""
    if isinstance(refs, str) or isinstance(hyps, str):
        if not (isinstance(refs, str) and isinstance(hyps, str)):
            raise TypeError("word_error_rate: give two strings or two lists of strings")
        refs, hyps = [refs], [hyps]
    if len(refs) != len(hyps):
        raise ValueError(f"word_error_rate: {len(refs)} references but {len(hyps)} hypotheses")
    prep = normalize_text if normalize else (lambda s: s)
    edits = words = 0
    for ref, hyp in zip(refs, hyps, strict=True):
        r, h = prep(ref).split(), prep(hyp).split()
        edits += edit_distance(r, h)
        words += len(r)
    if words == 0:
        raise ValueError("word_error_rate: the references hold no words")
    return edits / words
