"""A/B of versions of the matvec kernel's source: each C file is built as ``nn/matvec.py`` builds the
kernel, and the versions take turns, in one process, walking the Qwen2.5-0.5B shape's projections
in decode order (24 x q+k+v, o, gate+up, down, then the LM head) with one row; GB/s per round.

    python benchmarks/bench_matvec_variants.py src/tatlas/nn/matvec.c /tmp/variant.c [--rounds 5]

Rounds alternate between the versions, so a drift of the machine hits them alike; compare the
columns of one run only (this 2-vCPU machine's read speed swings by 30% between runs).
"""

from __future__ import annotations

import argparse
import ctypes
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from tatlas.nn import matvec

SHAPES = [(1152, 896), (896, 896), (9728, 896), (896, 4864)] * 24 + [(151936, 896)]  # [N, K], decode order


def load(source: Path, directory: Path) -> ctypes.CDLL:
    out = directory / f"{source.stem}-{abs(hash(source.resolve()))}.so"
    subprocess.run([matvec._compiler(), *matvec.FLAGS, str(source), "-o", str(out), *matvec.LIBS], check=True)
    lib = ctypes.CDLL(str(out))
    for fn in (lib.tatlas_matvec_f32, lib.tatlas_matvec_bf16):
        fn.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64, ctypes.c_int64, ctypes.c_int]
    return lib


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sources", nargs="+", type=Path)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        libs = [load(s, Path(d)) for s in args.sources]
        for dtype in (torch.float32, torch.bfloat16):
            ws = [torch.randn(n, k).to(dtype) for n, k in SHAPES]
            total = sum(w.numel() * w.element_size() for w in ws)
            xs = {k: torch.randn(k).to(dtype) for k in {k for _, k in SHAPES}}
            y = torch.empty(max(n for n, _ in SHAPES), dtype=dtype)
            speeds: list[list[float]] = [[] for _ in libs]
            for rnd in range(args.rounds + 1):  # round 0 untimed: each version's first touch of the matrices
                for lib, out in zip(libs, speeds):
                    fn = lib.tatlas_matvec_f32 if dtype == torch.float32 else lib.tatlas_matvec_bf16
                    start = time.perf_counter()
                    for w in ws:
                        fn(w.data_ptr(), xs[w.shape[1]].data_ptr(), None, y.data_ptr(), *w.shape, args.threads)
                    if rnd:
                        out.append(total / (time.perf_counter() - start) / 1e9)
            for source, out in zip(args.sources, speeds):
                print(f"{str(dtype).removeprefix('torch.'):9s} {source}: GB/s per round "
                      + " ".join(f"{v:.1f}" for v in out))
            del ws


if __name__ == "__main__":
    main()
