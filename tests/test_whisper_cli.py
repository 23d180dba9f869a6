"""`tatlas transcribe` end to end: a tiny Whisper saved with ``tatlas.save`` (1.28-s windows, so
a few seconds of audio is long-form), real audio files, every output format, batching, and the
one-line errors for files that cannot be transcribed; the real tiny.en when it is installed."""

import json
import re

import numpy as np
import pytest
import soundfile
import torch
from typer.testing import CliRunner

import tatlas
from parity import perturb_
from tatlas.cli.main import app

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    model = perturb_(tatlas.create("whisper", "tiny-random"), seed=3, std=0.3)
    with torch.no_grad():  # the end token likelier, so windows end (see test_whisper_decoding)
        bias = model.decoder.norm.bias
        model.decoder.embed.weight[50256] += 6.0 * bias / bias.norm() ** 2
    return tatlas.save(model, tmp_path_factory.mktemp("model") / "whisper.safetensors")


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(0)
    paths = []
    for name, seconds, rate in (("a.wav", 3.5, 16000), ("b.flac", 1.0, 22050), ("c.wav", 2.2, 8000)):
        t = np.arange(int(seconds * rate)) / rate
        samples = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 0.7 * t)) + 0.05 * rng.standard_normal(len(t))
        soundfile.write(folder / name, samples.astype(np.float32), rate)
        paths.append(folder / name)
    return paths


def _rounded(x):
    """Floats to 4 decimals (a batch's left-padded prompts change the last bits of log-probabilities)."""
    if isinstance(x, float):
        return round(x, 4)
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    return x


def _run(args):
    res = runner.invoke(app, ["transcribe", *map(str, args)])
    assert "Traceback" not in res.output, res.output
    return res


def test_formats(model_path, audio_files):
    a = audio_files[0]
    res = _run([a, "--model", model_path, "--format", "json", "--word-timestamps"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["file"] == str(a) and data["language"] == "en" and len(data["segments"]) >= 2
    assert {s["seek"] for s in data["segments"]} != {0}, "3.5 s in 1.28-s windows: the transcription seeks"
    words = [w for s in data["segments"] for w in s["words"]]
    assert words and all(0 <= w["start"] <= w["end"] <= 3.5 + 1.28 for w in words)

    txt = _run([a, "--model", model_path]).stdout
    assert txt.strip() and "-->" not in txt
    timed = _run([a, "--model", model_path, "--timestamps"]).stdout
    assert re.fullmatch(r"(\[\d\d:\d\d\.\d{3} --> \d\d:\d\d\.\d{3}\] .*\n)+", timed), timed
    assert [line.split("] ", 1)[1] for line in timed.splitlines()] == txt.splitlines()

    srt = _run([a, "--model", model_path, "--format", "srt"]).stdout
    assert re.match(r"1\n00:00:\d\d,\d{3} --> 00:00:\d\d,\d{3}\n\S", srt), srt
    vtt = _run([a, "--model", model_path, "--format", "vtt", "--beam", "2"]).stdout
    assert vtt.startswith("WEBVTT\n\n") and re.search(r"\n\d\d:\d\d\.\d{3} --> \d\d:\d\d\.\d{3}\n", vtt), vtt


def test_batches_give_the_same_transcripts(model_path, audio_files, tmp_path):
    one = _run([*audio_files, "--model", model_path, "--format", "json", "--batch-size", "1"])
    three = _run([*audio_files, "--model", model_path, "--format", "json", "--batch-size", "3"])
    assert one.exit_code == three.exit_code == 0, one.output + three.output
    rows = [json.loads(line) for line in one.stdout.splitlines()]
    assert [r["file"] for r in rows] == [str(p) for p in audio_files]
    assert _rounded(rows) == _rounded([json.loads(line) for line in three.stdout.splitlines()])
    res = _run([*audio_files, "--model", model_path, "--format", "srt", "--output-dir", tmp_path / "out"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.srt", "b.srt", "c.srt"]


def test_bad_files_are_one_line_errors(model_path, audio_files, tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage" * 10)
    text = tmp_path / "notes.txt"
    text.write_text("not audio")
    nan = tmp_path / "nan.wav"
    samples = np.zeros(16000, dtype=np.float32)
    samples[8000] = np.nan
    soundfile.write(nan, samples, 16000, subtype="FLOAT")
    for bad in (tmp_path / "missing.wav", empty, corrupt, text, nan):
        res = _run([audio_files[0], bad, "--model", model_path])
        assert res.exit_code == 2, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and bad.name in lines[0], res.output
    for args in (["--format", "docx"], ["--task", "summarise"], ["--model", tmp_path / "nope.pt"]):
        res = _run([audio_files[0], "--model", model_path, *args])
        assert res.exit_code == 2 and res.output.startswith("error: ") and len(res.output.strip().splitlines()) == 1


def test_real_model_speech_and_silence(tmp_path):
    from tatlas.data.speech import speech

    spoken, silent = tmp_path / "spoken.wav", tmp_path / "silent.wav"
    soundfile.write(spoken, speech("Please call me tomorrow morning.").numpy(), 16000)
    soundfile.write(silent, np.zeros(16000 * 4, dtype=np.float32), 16000)
    res = _run([spoken, silent, "--format", "json", "--batch-size", "2"])
    assert res.exit_code == 0, res.output
    first, second = (json.loads(line) for line in res.stdout.splitlines())
    assert first["text"].strip() == "Please call me tomorrow morning."
    assert second["text"] == "" and second["segments"] == []
