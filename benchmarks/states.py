"""Run benchmarks in both machine states, repeated: quiet, and with ``--contend N`` busy processes,
alternating, and print each run's ratio lines with the load it saw — the form RESULTS.md records.

    python benchmarks/states.py [--repeat 2] [--contend 1] [--only clip,decode] [--log states.log]

Each entry of :data:`BENCHMARKS` is a benchmark command (run from this folder); the lines that carry
its figures are those containing any of its ``keys`` (or, without keys, a ratio such as ``1.23x``). A benchmark that fails is reported and the rest
go on. Repeats alternate the states (quiet, busy, quiet, busy, ...), so a drift of the machine hits
both alike; the spread of each ratio over the repeats is printed at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from _timing import pick

HERE = Path(__file__).resolve().parent

# name -> (command, substrings of the lines to keep; None: every line with a ratio "1.23x")
BENCHMARKS: dict[str, tuple[list[str], tuple[str, ...] | None]] = {
    "transcribe-process": (["bench_transcribe_process.py", "--rounds", "3"], ("ratio", "median")),
    "decode-tiny": (["bench_llm_decode.py", "--shapes", "tiny", "--new", "32", "--batches", "1",
                     "--dtypes", "float32"], ("batch 1",)),
    "decode-0.5B": (["bench_llm_decode.py", "--shapes", "Qwen2.5-0.5B", "--new", "32", "--batches", "1",
                     "--repeats", "2"], ("batch 1", "read bandwidth")),
    "clip": (["bench_clip.py", "--rounds", "3"], ("x transformers", "image:", "text:")),
    "whisper": (["bench_whisper.py", "--rounds", "2", "--beams", "1", "--skip", "int8"], ("speed vs", "tatlas (")),
    "matvec": (["bench_matvec.py", "--rounds", "3"], ("decode", " all ")),
    # the other systems' benchmarks, at settings that keep a run within minutes: every line with a ratio
    "moe": (["bench_moe.py", "--repeats", "3"], ("tatlas ", "-like")),
    "imagegpt": (["bench_imagegpt.py", "--repeats", "2"], None),
    "decision-transformer": (["bench_decision_transformer.py", "--repeats", "2"], None),
    "evoformer": (["bench_evoformer.py", "--parts", "speed,block", "--rounds", "2"], None),
    "vlm": (["bench_vlm.py", "--cases", "llava-1.5,internvl-5", "--rounds", "2", "--modes", "inproc", "--new", "32"], None),
    "flamingo": (["bench_flamingo.py", "--rounds", "2", "--modes", "inproc", "--new", "32"], None),
    "imagebind": (["bench_imagebind.py", "--rounds", "2"], None),
    "gguf": (["bench_gguf.py", "--rounds", "2", "--new", "32"], None),
    "vad": (["bench_vad.py", "--minutes", "2", "--noise-seconds", "30"], ("|",)),
}
_RATIO = re.compile(r"(\d+\.\d+)x|\bx (\d+\.\d+)")  # "1.23x", or bench_moe's "x 1.23 vs ..."


def run(name: str, extra: list[str], log) -> list[str]:
    cmd, keys = BENCHMARKS[name]
    proc = subprocess.run([sys.executable, *cmd, *extra], cwd=HERE, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    log.write(f"$ {' '.join(cmd + extra)}\n{proc.stdout}{proc.stderr[-2000:] if proc.returncode else ''}\n")
    log.flush()
    if proc.returncode:
        return [f"FAILED (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ''}"]
    return [line.strip() for line in proc.stdout.splitlines()
            if (_RATIO.search(line) if keys is None else any(k in line for k in keys)) or line.startswith("state")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--contend", type=int, default=1)
    ap.add_argument("--only", default=",".join(BENCHMARKS))
    ap.add_argument("--log", default="states.log", help="every run's whole output")
    args = ap.parse_args()
    names = pick("states.py", args.only, BENCHMARKS)
    ratios: dict[tuple[str, str], list[list[str]]] = {}
    with open(args.log, "a") as log:
        for name in names:
            for i in range(args.repeat):
                for state, extra in (("quiet", []), (f"{args.contend} busy", ["--contend", str(args.contend)])):
                    t = time.perf_counter()
                    lines = run(name, extra, log)
                    print(f"== {name}, {state}, run {i + 1} ({time.perf_counter() - t:.0f} s)", flush=True)
                    for line in lines:
                        print("   " + line, flush=True)
                    ratios.setdefault((name, state), []).append(
                        [a or b for line in lines if not line.startswith("state") for a, b in _RATIO.findall(line)])
    print("\nratios per run (in the order the benchmark prints them):")
    for (name, state), runs in ratios.items():
        print(f"  {name:20s} {state:8s} " + " | ".join(", ".join(r) + "x" if r else "-" for r in runs))


if __name__ == "__main__":
    main()
