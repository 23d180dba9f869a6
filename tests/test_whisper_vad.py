"""Voice-activity filtering (issue 22, defect 10: five minutes of silence gave sixteen "you"): the
detector (:mod:`tatlas.models.whisper.vad`) finds no speech in silence or steady noise and finds
each placed sentence; the timeline carries joined-speech times back to the original audio; and the
real tiny.en with ``vad=True`` gives silence an empty transcript and speech with long pauses the
same words as without the filter, with word times where the speech was placed."""

import json

import numpy as np
import pytest
import soundfile
from typer.testing import CliRunner

from tatlas.data.speech import noise as make_noise
from tatlas.data.speech import speech
from tatlas.jobs.whisper import Transcript, TranscribeOptions, transcribe, transcribe_batch
from tatlas.jobs.whisper.vad import SpeechTimeline
from tatlas.models.whisper.decoding import Segment, Word
from tatlas.models.whisper.metrics import word_error_rate
from tatlas.models.whisper.vad import VadOptions, detect_speech, frame_features, running_min

RATE = 16_000
SENTENCES = ["Please call Stella and ask her to bring these things with her from the store.",
             "I would like a cup of coffee, please."]


def _pink(seconds: float, rms: float, seed: int) -> np.ndarray:
    return make_noise("pink", seconds, rms, seed=seed, sample_rate=RATE)


@pytest.fixture(scope="module")
def spoken():
    """Two sentences after 12 s and 18 s of silence, 9 s after: the audio and each sentence's
    (onset, offset) in seconds, where its samples rise above -50 dBFS."""
    pieces, placed, at = [], [], 0
    for text, gap in zip(SENTENCES, (12.0, 18.0), strict=True):
        clip = speech(text, voice="en", words_per_minute=175).numpy()
        loud = np.flatnonzero(np.abs(clip) > 10 ** (-50 / 20))
        n = int(gap * RATE)
        pieces += [np.zeros(n, np.float32), clip]
        placed.append(((at + n + loud[0]) / RATE, (at + n + loud[-1]) / RATE))
        at += n + len(clip)
    pieces.append(np.zeros(9 * RATE, np.float32))
    return np.concatenate(pieces), placed


@pytest.fixture(scope="module")
def tiny_en():
    from tatlas.jobs.whisper import default_model

    return default_model("tiny.en")


# ------------------------------------------------------------------------------------------ detector


@pytest.mark.parametrize("bad", [dict(threshold_db=0), dict(max_flatness=1.5), dict(min_floor_db=10),
                                 dict(noise_window=0), dict(min_speech_duration=-1), dict(speech_pad=float("nan")),
                                 dict(min_silence_duration="1")])
def test_bad_vad_options_are_one_line_errors(bad):
    (name, value), = bad.items()
    with pytest.raises(ValueError, match=rf"^VadOptions\.{name}: expected a number .*, got {value!r}$"):
        VadOptions(**bad)
    with pytest.raises(TypeError, match=r"^TranscribeOptions\.vad: expected True, False or VadOptions, got 'yes'$"):
        TranscribeOptions(vad="yes")
    assert TranscribeOptions(vad=True).vad_options == VadOptions() and TranscribeOptions().vad_options is None


def test_running_min_equals_the_window_minimum():
    rng = np.random.default_rng(0)
    for n in (1, 17, 1001):
        for width in (1, 2, 7, 50, 2000):
            x = rng.standard_normal(n)
            padded = np.pad(x, ((width - 1) // 2, width // 2), mode="edge")
            assert np.array_equal(running_min(x, width), [padded[i : i + width].min() for i in range(n)]), (n, width)


def test_silence_and_steady_noise_hold_no_speech():
    rng = np.random.default_rng(0)
    assert detect_speech(np.zeros(300 * RATE, np.float32)) == []
    for rms in (1e-4, 1e-3, 1e-2, 0.1, 0.3):  # white noise from -80 to -10 dBFS
        assert detect_speech((rng.standard_normal(60 * RATE) * rms).astype(np.float32)) == [], rms
    for rms in (1e-3, 1e-2, 0.1, 0.3):
        assert detect_speech(_pink(60, rms, 1)) == [], rms
    # noise that starts abruptly after digital silence is not speech either (the floor lags behind)
    assert detect_speech(np.concatenate([np.zeros(20 * RATE, np.float32), _pink(20, 0.1, 2)])) == []


def test_each_sentence_is_one_region_around_where_it_was_placed(spoken):
    audio, placed = spoken
    pad = VadOptions().speech_pad
    regions = [(a / RATE, b / RATE) for a, b in detect_speech(audio)]
    assert len(regions) == len(placed)
    for (start, end), (onset, offset) in zip(regions, placed, strict=True):
        assert onset - pad - 0.05 <= start <= onset - pad + 0.1, (start, onset)
        assert offset - 0.3 <= end - pad <= offset + 0.05, (end, offset)
    noisy = audio + np.random.default_rng(3).standard_normal(len(audio)).astype(np.float32) * 10 ** (-50 / 20)
    assert len(detect_speech(noisy)) == len(placed)  # speech over a -50 dBFS hiss is found too
    e, f, n = frame_features([audio])
    blocks = [audio[i : i + 7_777] for i in range(0, len(audio), 7_777)]
    e2, f2, n2 = frame_features(blocks)  # streamed block by block: the same frames
    assert n == n2 == len(audio) and np.array_equal(e, e2) and np.allclose(f, f2, atol=1e-6)


def test_timeline_maps_joined_times_back_and_keeps_words_off_joins():
    timeline = SpeechTimeline(((16_000, 48_000), (480_000, 512_000)), samples=800_000)  # 1-3 s and 30-32 s
    assert timeline.original_time(0.5) == 1.5 and timeline.original_time(2.5) == 30.5
    assert timeline.original_time(2.0) == 30.0 and timeline.original_time(2.0, is_end=True) == 3.0
    assert timeline.original_span(1.6, 2.1) == (2.6, 3.0)  # mostly before the join: kept in the first region
    assert timeline.original_span(1.95, 2.5) == (30.0, 30.5)  # mostly after it: in the second
    words = [Word(" a", 0.2, 1.0, 0.9), Word(" b", 1.5, 2.2, 0.9), Word(" c", 2.3, 3.5, 0.9)]
    seg = Segment(id=0, seek=0, start=0.0, end=3.6, text=" a b c", tokens=[1, 2, 3], temperature=0.0,
                  avg_logprob=-0.1, compression_ratio=1.0, no_speech_prob=0.1, words=words)
    out = timeline.restore(Transcript(text=" a b c", segments=[seg], language="en")).segments[0]
    assert [(w.start, w.end) for w in out.words] == [(1.2, 2.0), (2.5, 3.0), (30.3, 31.5)]
    assert (out.start, out.end, out.seek) == (1.2, 31.5, 100)


# ------------------------------------------------------------------------------------------ real tiny.en


def test_silence_and_noise_give_an_empty_transcript(tiny_en):
    frames = []
    silence = transcribe(tiny_en, np.zeros(300 * RATE, np.float32), vad=True, progress=frames.append)
    assert silence.text == "" and silence.segments == [] and silence.language == "en"
    assert sum(frames) == 300 * 100  # the skipped silence counts as transcribed
    for noise in (_pink(60, 0.05, 4), (np.random.default_rng(5).standard_normal(60 * RATE) * 0.01).astype(np.float32)):
        assert transcribe(tiny_en, noise, vad=True).text == ""


def test_speech_with_pauses_same_words_and_times_where_it_was_placed(tiny_en, spoken, tmp_path, monkeypatch):
    audio, placed = spoken
    ref = " ".join(SENTENCES)
    plain = transcribe(tiny_en, audio, word_timestamps=True, seed=0)
    frames = []
    filtered = transcribe(tiny_en, audio, word_timestamps=True, vad=True, progress=frames.append, seed=0)
    assert word_error_rate(ref, filtered.text) <= word_error_rate(ref, plain.text) + 1e-9, (plain.text, filtered.text)
    assert word_error_rate(ref, filtered.text) <= 0.1, filtered.text
    assert sum(frames) == len(audio) // 160
    words = [w for s in filtered.segments for w in s.words]
    assert len(words) >= 20
    for w in words:  # in original-audio seconds, within 0.3 s of the sentence it belongs to
        onset, offset = min(placed, key=lambda p: abs((w.start + w.end) / 2 - (p[0] + p[1]) / 2))
        assert onset - 0.3 <= w.start <= w.end <= offset + 0.3, (w, onset, offset)
    for s in filtered.segments:
        assert s.start == s.words[0].start and s.end == s.words[-1].end

    # a file, batched beside silence, and read in streaming mode, gives the same transcript
    path = tmp_path / "spoken.wav"
    soundfile.write(path, audio, RATE, subtype="FLOAT")
    monkeypatch.setattr("tatlas.jobs.whisper.vad.STREAM_ABOVE_SECONDS", 10.0)
    both = transcribe_batch(tiny_en, [np.zeros(40 * RATE, np.float32), str(path)], batch_size=2, word_timestamps=True,
                            vad=True, seed=0)
    assert both[0].text == "" and both[1].text == filtered.text
    assert [(w.start, w.end) for s in both[1].segments for w in s.words] == [(w.start, w.end) for w in words]


def test_cli_vad(tmp_path):
    from tatlas.cli.main import app

    runner = CliRunner()
    spoken, silent = tmp_path / "spoken.wav", tmp_path / "silent.wav"
    soundfile.write(spoken, np.concatenate([np.zeros(20 * RATE, np.float32),
                                            speech(SENTENCES[1], voice="en", words_per_minute=175).numpy()]), RATE)
    soundfile.write(silent, np.zeros(RATE * 90, dtype=np.float32), RATE)
    res = runner.invoke(app, ["transcribe", str(spoken), str(silent), "--vad", "--format", "json", "--word-timestamps"])
    assert res.exit_code == 0, res.output
    first, second = (json.loads(line) for line in res.stdout.splitlines())
    assert word_error_rate(SENTENCES[1], first["text"]) <= 0.125, first["text"]  # one word of eight at most
    assert 19.7 <= first["segments"][0]["start"] and first["segments"][-1]["end"] <= 20 + 3.5
    assert second["text"] == "" and second["segments"] == []
    for args, name in ((["--vad-threshold", "-3"], "--vad-threshold"), (["--vad-pad", "-1"], "--vad-pad")):
        res = runner.invoke(app, ["transcribe", str(spoken), "--vad", *args])
        assert res.exit_code == 2 and res.output.startswith(f"error: {name}: expected a number")
        assert len(res.output.strip().splitlines()) == 1, res.output


def test_server_vad_field(tmp_path):
    pytest.importorskip("fastapi")
    import io

    import httpx
    from _serve import LiveServer

    from tatlas.serve import ModelSpec, ServeConfig
    from tatlas.serve.models import load_models

    config = ServeConfig(models=(ModelSpec(name="whisper", spec="tiny.en"),))
    live = LiveServer(config, load_models(config.models, config.limits, config.batching))
    wav = io.BytesIO()
    soundfile.write(wav, np.zeros(RATE * 40, np.float32), RATE, format="WAV")
    try:
        url = live.url + "/v1/audio/transcriptions"
        res = httpx.post(url, files={"file": ("s.wav", wav.getvalue())}, data={"model": "whisper", "vad": "true"},
                         timeout=120)
        assert res.status_code == 200 and res.json() == {"text": ""}, res.text
        bad = httpx.post(url, files={"file": ("s.wav", wav.getvalue())}, data={"model": "whisper", "vad": "yes"})
        assert bad.status_code == 400 and "'vad': expected true or false, got 'yes'" in bad.text, bad.text
    finally:
        live.stop()
