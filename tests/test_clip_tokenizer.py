"""CLIP's BPE tokenizer: the same ids as open_clip's ``SimpleTokenizer`` (OpenAI's, with ftfy) on
thousands of varied strings, plus truncation, the error option, decoding and the ftfy-free cleaning.

``open_clip`` imports torchvision unconditionally, and torchvision does not import beside this
torch (REFERENCES.md): :func:`import_open_clip` puts a stub ``torchvision`` (only the names
open_clip touches at import) in ``sys.modules`` while open_clip imports, and removes it again, so
nothing else in the session sees it. tatlas itself never imports open_clip or torchvision."""

from __future__ import annotations

import enum
import importlib
import random
import sys
import types

import pytest
import torch

from tatlas.models.clip.tokenizer import CLIPTokenizer, clean, fix_text

_STUBBED = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional", "torchvision.ops",
            "torchvision.ops.misc", "timm")


def import_open_clip():
    """``open_clip`` imported beside a temporary torchvision stub."""
    if "open_clip" in sys.modules:
        return sys.modules["open_clip"]
    # transformers caches "is torchvision/timm available" on first ask: ask before the stub exists
    from transformers.utils import import_utils

    import_utils.is_torchvision_available()
    import_utils.is_timm_available()
    saved = {name: sys.modules.get(name) for name in _STUBBED}

    class Unavailable:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("torchvision is stubbed in tatlas' tests: image transforms of open_clip are unused")

    tv, tr = types.ModuleType("torchvision"), types.ModuleType("torchvision.transforms")
    fn, ops, misc = (types.ModuleType(n) for n in ("torchvision.transforms.functional", "torchvision.ops",
                                                   "torchvision.ops.misc"))
    for name in ("Normalize", "Compose", "RandomResizedCrop", "ToTensor", "Resize", "CenterCrop", "ColorJitter",
                 "Grayscale"):
        setattr(tr, name, type(name, (Unavailable,), {}))
    tr.InterpolationMode = enum.Enum("InterpolationMode", {"NEAREST": "nearest", "BILINEAR": "bilinear",
                                                           "BICUBIC": "bicubic", "LANCZOS": "lanczos"})
    misc.FrozenBatchNorm2d = type("FrozenBatchNorm2d", (Unavailable,), {})
    tv.transforms, tr.functional, tv.ops, ops.misc = tr, fn, ops, misc
    sys.modules.update({"torchvision": tv, "torchvision.transforms": tr, "torchvision.transforms.functional": fn,
                        "torchvision.ops": ops, "torchvision.ops.misc": misc,
                        "timm": None})  # None: `import timm` fails cleanly, open_clip runs without it
    try:
        return importlib.import_module("open_clip")
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


# ---------------------------------------------------------------------------------------------
# A corpus of varied strings (seeded)
# ---------------------------------------------------------------------------------------------

WORDS = ("a photo of the cat dog bird red blue green striped small large circle square triangle is on in under "
         "left right above below car tree house Person CAMERA Zoom running jumped quickly New York don't I'M "
         "we'll it's you'd they've she's o'clock rock'n'roll e-mail state-of-the-art naïve café résumé "
         "Straße façade jalapeño Ångström fiancée coöperate").split()
UNICODE = ("日本語 東京 こんにちは カタカナ 한국어 中文字符 Ελληνικά αβγ Русский язык ёжик العربية עברית हिन्दी "
           "ภาษาไทย ქართული Հայերեն Ꭰ ⅫⅣ ½ ¾ ² ³ ₁₂ ① ٣٤٥ ۱۲ ৩ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚 ℌℑ ℃ № ™ © ® ° ± × ÷ "
           "∑ ∞ ≠ ≤ √ π µ Ω ƒ ß ŉ ĳ Ǆ ǅ ﬁ ﬂ ﬀ ﬃ ＡＢＣ ａｂｃ １２３ ！？ ｶﾀｶﾅ 😀 😂 👍🏽 👨‍👩‍👧 🇫🇷 ❤️ ✔ ★ ☃ "
           "‘quoted’ “double” ‚low„ ′ ″ ‹ › « » – — … • · ¿ ¡ § ¶ † ‡ ‰ € £ ¥ ₹ ₿ e\u0301 a\u0308 n\u0303 "
           "\u00a0nbsp \u200bzw \u200dzwj \u2009thin \u3000ideo \ufeffbom \u2028ls \u2029ps tab\there cr\rlf crlf\r\nx "
           "bell\x07 esc\x1b[31mred\x1b[0m del\x7f \ufffc ſ K Å").split(" ")
NUMBERS = ("0 7 42 100 1,000,000 3.14159 -2.5e-10 2024-01-31 12:30 +44 20 7946 0958 1st 2nd 3rd 4th 99% $5.99 "
           "#1 v1.2.3 0x1F 1/2 10^6 007 ٣.١٤").split(" ")
PUNCT = "! !! ... ?! -- ( ) [ ] { } \" ' ` ~ @user #tag https://example.com/a?b=c&d=e mail@x.org :) ;-) <3 -> => && || // /* */ \\ ^_^ (¬‿¬) ¯\\_(ツ)_/¯".split(" ")
ENTITIES = ("&amp; &lt; &gt; &quot; &#39; &#x27; &apos; &nbsp; &eacute; &EACUTE; &Eacute; &NTILDE; &hellip; &mdash; "
            "&ndash; &copy; &reg; &trade; &euro; &frac12; &amp;amp; &amp;lt; &#128512; &#x1F600; &#8217; &#0; "
            "&#1114112; &foo; &amp AT&T R&amp;D &lt;b&gt; &ldquo;hi&rdquo; &rsquo;s &#65; &#x41;").split(" ")
HTMLISH = ("<b>bold</b> <i>it</i> <br/> <p class=\"x\"> </p> <a href='u'> <3 a<b").split(" ")
SPECIAL = ("<start_of_text> <end_of_text> <START_OF_TEXT> <|endoftext|>").split(" ")


def corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    pools = [WORDS, UNICODE, NUMBERS, PUNCT, ENTITIES, HTMLISH, SPECIAL]
    weights = [10, 4, 2, 2, 2, 1, 0.2]
    out = ["", " ", "\n\t ", "a", "A", "!!!", "'s", "don't", "&amp;", "<b>&amp;</b>", "x\n<b>\n&amp;"]
    while len(out) < n:
        kind = rng.random()
        length = rng.randint(80, 400) if kind < 0.05 else rng.randint(1, 25)  # some over the 77-token context
        pieces = [rng.choice(rng.choices(pools, weights)[0]) for _ in range(length)]
        seps = [rng.choice([" ", " ", " ", "", "  ", "\n", ", ", ". "]) for _ in pieces]
        text = "".join(p + s for p, s in zip(pieces, seps))
        if rng.random() < 0.2:
            text = text.upper() if rng.random() < 0.5 else text.title()
        out.append(text)
    return out


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tok() -> CLIPTokenizer:
    return CLIPTokenizer()


def test_vocabulary_and_special_ids(tok):
    assert tok.vocab_size == 49_408
    assert (tok.sot_id, tok.eot_id) == (49_406, 49_407)
    ids = tok(["a photo of a cat"])
    assert ids.shape == (1, 77) and ids.dtype == torch.long
    assert ids[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]  # OpenAI's README example ids
    assert ids[0, 7:].eq(0).all()


def test_same_ids_as_open_clip_on_thousands_of_strings(tok):
    open_clip = import_open_clip()
    import ftfy

    ref = open_clip.tokenizer.SimpleTokenizer()
    texts = corpus(3000)
    # the one ftfy step not re-implemented: mojibake repair (e.g. "É¾" re-decoded as "ɾ"); random
    # neighbours in the corpus occasionally form such pairs
    mojibake = {i for i, t in enumerate(texts) if ftfy.fix_text(t) != ftfy.fix_text(t, fix_encoding=False)}
    assert len(mojibake) < 10
    ours, theirs = tok(texts), ref(texts)
    differ = [i for i in range(len(texts)) if not torch.equal(ours[i], theirs[i]) and i not in mojibake]
    assert not differ, f"{len(differ)}/{len(texts)} differ, e.g. {texts[differ[0]]!r}: " \
                       f"{ours[differ[0]].tolist()} vs {theirs[differ[0]].tolist()}"
    truncated = sum(int(theirs[i, -1] == ref.eot_token_id) for i in range(len(texts)))
    assert truncated > 50  # the long texts really were cut, keeping the end token last
    # and the cleaning itself, string for string
    basic = open_clip.tokenizer._clean_lower
    assert [clean(t) for i, t in enumerate(texts) if i not in mojibake] == \
           [basic(t) for i, t in enumerate(texts) if i not in mojibake]


def test_truncation_keeps_end_token_or_raises(tok):
    long = "red " * 200
    ids = tok(long, context_length=16)
    assert ids.shape == (1, 16) and ids[0, 0] == tok.sot_id and ids[0, -1] == tok.eot_id
    assert ids[0, 1:-1].tolist() == [736] * 14  # "red"
    with pytest.raises(ValueError, match=r"text 1 \('red red .*'\) is 202 tokens .* over the context length 77"):
        tok(["fine", long], truncate=False)
    assert tok("exactly", context_length=3, truncate=False).tolist() == [[49406, 5840, 49407]]


def test_decode_round_trip(tok):
    text = "a photo of a café, 42 ünïcödé 日本 😀!"
    ids = tok.encode(text)
    # OpenAI's decode puts a space after every end-of-word token ("café ," and "4 2")
    assert tok.decode(ids).replace(" ", "") == clean(text).replace(" ", "")
    assert tok.decode(tok.encode("a photo of a cat")) == "a photo of a cat "


def test_fix_text_without_ftfy():
    assert fix_text("Broken text&hellip; it&#x2019;s ﬂubberiﬁc!") == "Broken text\u2026 it's flubberific!"
    assert fix_text("ＬＯＵＤ\u3000ＮＯＩＳＥＳ") == "LOUD NOISES"
    assert fix_text("<b>&amp;</b>") == "<b>&amp;</b>"  # looks like HTML: entities left alone
    assert fix_text("e\u0301") == "\u00e9"  # NFC
    assert clean("  A &amp;amp; B\t\n C  ") == "a & b c"
