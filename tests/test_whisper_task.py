"""Training Whisper: word error rate, the spoken-sentence data and its tokenizer, the teacher-forced
loss, greedy decoding, ``tatlas train whisper`` and ``tatlas demo whisper`` (quick)."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import tatlas
from tatlas.data.world import held_out_pairs
from tatlas.models.whisper.audio import log_mel_spectrogram
from tatlas.models.whisper.config import PRESETS
from tatlas.models.whisper.metrics import edit_distance, normalize_text, word_error_rate
from tatlas.models.whisper.speech_vocab import (
    LEXICON,
    VOICES,
    Utterance,
    WordTokenizer,
    render,
    sentences,
    split_of,
    utterances,
)
from tatlas.models.whisper.task import (
    IGNORE,
    constant_baseline,
    encode_utterances,
    evaluate_wer,
    greedy_transcribe,
    spoken_sentences,
    train_task,
    transcript_loss,
    transcript_tokenizer,
)

CONFIG = PRESETS["tiny-speech"]


# ------------------------------------------------------------------------------------------ WER


def test_edit_distance_counts_substitutions_deletions_insertions():
    assert edit_distance("a b c".split(), "a b c".split()) == 0
    assert edit_distance("a b c".split(), "a x c".split()) == 1  # substitution
    assert edit_distance("a b c".split(), "a c".split()) == 1  # deletion
    assert edit_distance("a b c".split(), "a b b c".split()) == 1  # insertion
    assert edit_distance("a b c".split(), []) == 3
    assert edit_distance([], "a b".split()) == 2
    assert edit_distance("kitten sitting on".split(), "sitting kitten on".split()) == 2


def test_word_error_rate_is_corpus_level_and_normalised():
    # 1 edit in 4 words and 2 edits in 2 words: 3 / 6 (not the mean of 0.25 and 1.0)
    assert word_error_rate(["two red circles now", "a star"], ["two red circle now", ""]) == pytest.approx(0.5)
    assert word_error_rate("Two large, RED circles!", "two large red circles") == 0.0
    assert word_error_rate("three blue stars", "3 blue stars.") == 0.0  # Whisper writes numbers as digits
    assert word_error_rate("the cat sat", "the cat sat on the mat") == pytest.approx(1.0)  # 3 insertions / 3
    assert word_error_rate("Don't stop", "dont stop", normalize=False) == pytest.approx(0.5)  # no normalising
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        word_error_rate(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no words"):
        word_error_rate([""], ["a"])


def test_normalize_text():
    assert normalize_text("  Hello,   World -- it's 42 \u2019quotes\u2019!") == "hello world it's forty two quotes"
    assert normalize_text("round-fark stump.") == "round fark stump"
    assert normalize_text("7 and 100") == "seven and 100"


# ------------------------------------------------------------------------------------------ sentences and tokens


def test_word_tokenizer_layout_and_round_trip():
    tok = WordTokenizer()
    assert tok.n_vocab == len(LEXICON) + 3 == CONFIG.vocab_size == transcript_tokenizer(CONFIG).n_vocab
    assert (tok.eot, tok.sot, tok.no_timestamps) == (len(LEXICON), len(LEXICON) + 1, len(LEXICON) + 2)
    ids = tok.encode(" An orange star and two BLUE squares")
    assert max(ids) < tok.eot and tok.decode(ids) == "an orange star and two blue squares"
    assert tok.decode([tok.sot, tok.no_timestamps, *ids, tok.eot]) == tok.decode(ids)
    with pytest.raises(ValueError, match="'hexagon' is not among its"):
        tok.encode("a red hexagon")
    with pytest.raises(ValueError, match="token id"):
        tok.decode([tok.n_vocab])


def test_sentences_are_deterministic_and_split():
    assert sentences("train", 50, seed=3) == sentences("train", 50, seed=3) != sentences("train", 50, seed=4)
    held = {f"{c} {s}" for c, s in held_out_pairs()}
    tok = WordTokenizer()
    for split in ("train", "test", "novel"):
        for text in sentences(split, 300, seed=0):
            assert split_of(text) == split
            tok.encode(text)  # every sentence is in the vocabulary
            assert any(h in text for h in held) == (split == "novel"), text
    train = set(sentences("train", 2000, seed=0))
    assert not train & set(sentences("test", 200, seed=0))
    assert split_of("two orange squares") == "novel" and split_of("an orange square") == "novel"
    assert split_of("two orange circles") in ("train", "test")


def test_utterances_draw_voices_speeds_offsets():
    items = utterances(["a red star"] * 40, seed=0)
    assert {u.voice for u in items} <= set(VOICES) and len({u.voice for u in items}) > 20
    assert all(160 <= u.words_per_minute <= 220 and 0 <= u.offset_s <= 0.25 for u in items)
    assert items == utterances(["a red star"] * 40, seed=0)


def test_dataset_shapes_targets_and_features():
    data = spoken_sentences("train", 6, CONFIG, seed=1)
    tok = WordTokenizer()
    frames = 2 * CONFIG.audio_ctx
    assert data.mel.shape == (6, CONFIG.mels, frames) and data.mel.dtype == torch.float32
    assert data.inputs.shape == data.targets.shape and data.inputs.shape[1] <= CONFIG.text_ctx
    for i, text in enumerate(data.texts):
        words = tok.encode(text)
        n = len(words)
        assert data.inputs[i, :2].tolist() == [tok.sot, tok.no_timestamps]
        assert data.inputs[i, 2 : 2 + n].tolist() == words
        assert data.targets[i, 0] == IGNORE  # <|notimestamps|> is given, not predicted
        assert data.targets[i, 1 : 1 + n].tolist() == words and data.targets[i, 1 + n] == tok.eot
        assert (data.targets[i, 2 + n :] == IGNORE).all()
    sample = data[2]
    assert set(sample) == {"mel", "inputs", "targets"}
    # the features are the log-Mel spectrogram of the utterance padded to the 3-s window
    audio = render(data.utterances[2], max_samples=frames * 160)
    padded = torch.zeros(frames * 160)
    padded[: len(audio)] = torch.from_numpy(audio)
    torch.testing.assert_close(sample["mel"], log_mel_spectrogram(padded))
    assert data.utterances[2].offset_s > 0 and np.all(audio[: int(data.utterances[2].offset_s * 16000)] == 0)


def test_render_fits_the_window_by_shortening_the_silence_in_front():
    item = Utterance("a purple triangle and a purple triangle", "en-029+m2", 160, 0.25)  # 2.9 s of speech
    free, fitted = render(item), render(item, max_samples=48_000)
    assert len(free) > 48_000 >= len(fitted) and np.abs(fitted[:2000]).max() > 0  # speech starts early
    np.testing.assert_array_equal(free[-len(fitted):], fitted)


def test_long_utterance_and_small_vocab_are_refused():
    with pytest.raises(ValueError, match="need a 3-s window: audio_ctx >= 150, got audio_ctx=64"):
        spoken_sentences("train", 2, PRESETS["tiny-random"])
    long = [Utterance("a red circle and a blue square and a green star", "en-us", 80)]
    with pytest.raises(ValueError, match="longer than the model's 3.00-s window"):
        encode_utterances(long, CONFIG, WordTokenizer())
    with pytest.raises(ValueError, match="vocab_size is 30"):
        transcript_tokenizer(dataclasses.replace(CONFIG, vocab_size=30))


def test_real_vocabulary_uses_whisper_bpe():
    tok = transcript_tokenizer(PRESETS["tiny-random"])
    assert tok.n_vocab == PRESETS["tiny-random"].vocab_size
    from tatlas.models.whisper.task import transcript_tokens

    tokens, prompt = transcript_tokens(tok, "two red circles")
    assert tokens[:prompt] == [tok.sot, tok.no_timestamps] and tokens[-1] == tok.eot
    assert tok.decode(tokens[prompt:-1]) == " two red circles"


def test_constant_baseline_picks_the_stronger_trivial_transcript():
    text, wer = constant_baseline(["a red star", "a red star", "two blue squares"], ["a red star", "a blue star"])
    assert text == "a red star" and wer == pytest.approx(1 / 6)
    text, wer = constant_baseline(["four large pink crosses"], ["a star"])  # worse than saying nothing
    assert (text, wer) == ("", 1.0)


# ------------------------------------------------------------------------------------------ loss and decoding


def _batch(data, idx):
    return {"mel": data.mel[idx], "inputs": data.inputs[idx], "targets": data.targets[idx]}


def test_loss_ignores_padding_and_decreases():
    data = spoken_sentences("train", 8, CONFIG, seed=2)
    torch.manual_seed(0)
    model = tatlas.create("whisper", "tiny-speech")
    batch = _batch(data, slice(0, 8))
    first = transcript_loss(model, batch)
    assert first.item() == pytest.approx(np.log(CONFIG.vocab_size), rel=0.2)  # ~uniform at initialisation
    # inputs after <|endoftext|> do not change the loss (causal: nothing scored reads them)
    tampered = dict(batch, inputs=batch["inputs"].clone())
    pad = batch["targets"] == IGNORE
    pad[:, :2] = False
    tampered["inputs"][pad] = 5
    torch.testing.assert_close(transcript_loss(model, tampered), first)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(15):
        loss = transcript_loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert transcript_loss(model, batch).item() < 0.6 * first.item()


def test_greedy_transcribe_equals_uncached_argmax():
    data = spoken_sentences("test", 3, CONFIG, seed=0)
    tok = WordTokenizer()
    torch.manual_seed(1)
    model = tatlas.create("whisper", "tiny-speech").eval()
    with torch.no_grad():  # make some text likely: bias the output towards a few word ids
        model.decoder.embed.weight[tok.encode("red star")] *= 6
    got = greedy_transcribe(model, data.mel, tok, max_tokens=6, batch_size=2)
    expected = []
    with torch.no_grad():
        for i in range(len(data)):
            tokens = torch.tensor([[tok.sot, tok.no_timestamps]])
            for _ in range(6):
                logits = model(tokens, mel=data.mel[i : i + 1])[0, -1]
                logits[tok.eot + 1 :] = float("-inf")
                nxt = int(logits.argmax())
                if nxt == tok.eot:
                    break
                tokens = torch.cat([tokens, torch.tensor([[nxt]])], dim=1)
            expected.append(tok.decode(tokens[0].tolist()))
    assert got == expected and any(got)
    scores = evaluate_wer(model, data, tok, batch_size=2)
    assert scores["wer"] == word_error_rate(data.texts, greedy_transcribe(model, data.mel, tok))
    assert scores["loss"] == pytest.approx(transcript_loss(model, _batch(data, slice(0, 3))).item(), rel=1e-4)


def test_registered_train_task():
    from tatlas.models import get_system

    assert get_system("whisper").train_task is train_task


# ------------------------------------------------------------------------------------------ CLI and demo


def test_cli_train_whisper(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "tatlas.cli.main", "train", "whisper", "--preset", "tiny-speech", "--steps", "3",
         "--batch-size", "4", "--out", str(out), "--no-progress"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "trained whisper (tiny-speech) to step 3" in proc.stdout and "wer" in proc.stdout
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert np.isfinite(records[-1]["eval/wer"]) and records[-1]["eval/wer"] > 0  # 3 steps: mostly wrong
    model = tatlas.load(out / "model.safetensors")
    assert model.config == CONFIG


def test_demo_quick(tmp_path):
    from tatlas.demo import run_demos

    (result,) = run_demos(["whisper"], tmp_path, quick=True, progress=False)
    assert result.system == "whisper" and not result.higher_is_better
    assert 0.0 <= result.value <= 2.0 and 0.0 < result.baseline_value <= 1.0
    assert 0.0 <= result.details["real_tiny_en_wer_everyday"] <= 2.0  # the real tiny.en ran
    for path in result.artifacts.values():
        assert (tmp_path / "whisper" / path).is_file(), path
    text = (tmp_path / "whisper" / "transcripts.txt").read_text()
    assert "the quick brown fox" in text and "tiny.en:" in text and "scratch:" in text
