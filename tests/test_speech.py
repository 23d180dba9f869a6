"""Speech from the ``espeakng-loader`` wheel (libespeak-ng through ctypes, in-process): real
sentences, deterministic whatever was spoken before, voices and variants as the ``espeak-ng``
program names them, explicit settings per call, one-line errors, safe from several threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from tatlas.data.speech import ESPEAK_RATE, resample, speech, synthesize, voices

SENTENCE = "a small red circle left of a large blue square"


def test_speaks_a_sentence_at_the_asked_rate():
    wave = speech(SENTENCE)
    assert wave.dim() == 1 and wave.dtype == torch.float32
    assert 1.5 < wave.numel() / 16_000 < 8
    assert wave.abs().max() > 0.1 and torch.isfinite(wave).all()
    at_native = speech(SENTENCE, sample_rate=ESPEAK_RATE)
    assert abs(at_native.numel() / ESPEAK_RATE - wave.numel() / 16_000) < 1e-3
    # 16-bit samples exactly: int16 / 32768
    np.testing.assert_array_equal(at_native.numpy(), synthesize(SENTENCE, words_per_minute=160).astype(np.float32) / 32768)


def test_the_same_call_gives_the_same_samples_whatever_came_before():
    """libespeak-ng keeps state between utterances (pitch flutter, wave phase, its noise
    generator); a fresh library per call makes each utterance a function of its arguments."""
    first = synthesize("seven three nine", voice="en-us+f3")
    synthesize("a red circle and a blue square", voice="en-gb-scotland+klatt", words_per_minute=220, pitch=80)
    synthesize("two large green stars", voice="en-us+m2")
    again = synthesize("seven three nine", voice="en-us+f3")
    np.testing.assert_array_equal(first, again)


def test_settings_are_explicit_per_call():
    base = synthesize(SENTENCE)
    fast = synthesize(SENTENCE, words_per_minute=300)
    assert len(fast) < 0.75 * len(base)
    synthesize(SENTENCE, pitch=90, words_per_minute=400)  # must not leak into the next call
    np.testing.assert_array_equal(synthesize(SENTENCE), base)


def test_voices_and_variants_sound_different():
    assert voices()["en-gb"] == "gmw/en" and "en-us" in voices() and "en-gb-scotland" in voices()
    takes = {v: synthesize("seven three nine", voice=v) for v in ("en-us", "en-gb", "en-us+f2", "en-us+klatt")}
    for a in takes:
        for b in takes:
            if a < b:
                assert len(takes[a]) != len(takes[b]) or not np.array_equal(takes[a], takes[b]), (a, b)


def _pitch_hz(pcm: np.ndarray) -> float:
    """Median fundamental of the voiced 40-ms frames (autocorrelation peak in 60..400 Hz)."""
    x = pcm.astype(np.float64)
    n = int(0.04 * ESPEAK_RATE)
    found = []
    for start in range(0, len(x) - n, n):
        frame = x[start:start + n] - x[start:start + n].mean()
        if np.abs(frame).max() < 0.2 * np.abs(x).max():
            continue
        ac = np.correlate(frame, frame, "full")[n - 1:]
        lo, hi = ESPEAK_RATE // 400, ESPEAK_RATE // 60
        found.append(ESPEAK_RATE / (lo + int(np.argmax(ac[lo:hi]))))
    return float(np.median(found))


def test_pitch_setting_raises_the_voice():
    assert _pitch_hz(synthesize(SENTENCE, pitch=90)) > 1.3 * _pitch_hz(synthesize(SENTENCE, pitch=10))


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(voice="xx-nowhere"), r"voice: expected a language from .* got 'xx-nowhere'"),
    (dict(voice="en-us+nobody"), r"voice variant: expected one of .* got 'nobody' in 'en-us\+nobody'"),
    (dict(words_per_minute=20), r"words_per_minute: expected 80\.\.450, got 20"),
    (dict(pitch=120), r"pitch: expected 0\.\.99, got 120"),
])
def test_bad_settings_are_one_line_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        synthesize("hello", **kwargs)


def test_empty_text_is_empty_audio():
    assert synthesize("").size == 0 or np.abs(synthesize("")).max() == 0


def test_threads_get_the_samples_a_single_thread_gets():
    texts = [f"{w} three nine" for w in ("one", "two", "four", "five", "six", "seven")]
    serial = [synthesize(t, voice="en-us+m3") for t in texts]
    results: dict[int, np.ndarray] = {}

    def run(i: int) -> None:
        results[i] = synthesize(texts[i], voice="en-us+m3")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, want in enumerate(serial):
        np.testing.assert_array_equal(results[i], want)


def test_resample_keeps_a_tone():
    t = np.arange(ESPEAK_RATE // 2) / ESPEAK_RATE
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    out = resample(tone, ESPEAK_RATE, 16_000)
    assert out.shape == (8000,) and out.dtype == np.float32
    spec = np.abs(np.fft.rfft(out))
    assert abs(np.fft.rfftfreq(8000, 1 / 16_000)[spec.argmax()] - 440) < 5
    with pytest.raises(ValueError, match="sample rates: expected positive"):
        resample(tone, 0, 16_000)
