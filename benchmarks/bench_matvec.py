"""The one-row projections of a batch-1 decode step: tatlas' own matrix-vector kernel
(``nn/matvec.py``) against oneDNN (what the fast path used before; bfloat16 on its packed layout)
and ``F.linear`` (BLAS), in the order a decode step meets them, and a whole 0.5B decode with the
kernel on and off, alternating in one process.

    python benchmarks/bench_matvec.py [--shape Qwen2.5-0.5B] [--rounds 5] [--new 32] [--contend N]

Part 1 walks the projections of every layer of the shape (q+k+v joined, o, gate+up joined, down;
weights far larger than the caches) with a few small ops between calls, as a decode step does, and
prints GB/s per implementation, best of ``--rounds``. Part 2 generates ``--new`` tokens greedily
``--rounds`` times with each setting in turn and prints the median tokens/s of each and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from _timing import add_contend, contended


def projections(model) -> list[tuple[str, int, int]]:
    """(name, rows, columns) of each one-row product of a decode step, in order."""
    c = model.config
    qkv = (c.heads + 2 * c.kv_heads) * c.head_dim
    layer = [("qkv", qkv, c.dim), ("o", c.dim, c.heads * c.head_dim), ("gate+up", 2 * c.mlp_hidden, c.dim),
             ("down", c.dim, c.mlp_hidden)]
    return layer * c.layers + [("lm_head", c.vocab_size, c.dim)]


def walk(shapes, dtype: torch.dtype, rounds: int) -> None:
    from tatlas.nn import matvec
    from tatlas.nn.fastpath import onednn_bf16

    weights = [torch.randn(n, k).to(dtype) for _, n, k in shapes]
    inputs = {k: torch.randn(1, k).to(dtype) for _, _, k in shapes}
    small = torch.randn(1, shapes[0][2]).to(dtype)
    impls = {"tatlas kernel": lambda i: matvec.matvec(inputs[weights[i].shape[1]], weights[i])}
    if dtype == torch.float32 or onednn_bf16():  # an AVX2-only CPU: oneDNN has no bfloat16
        packed = [torch.ops.mkldnn._reorder_linear_weight(w, 1) for w in weights] if dtype == torch.bfloat16 else weights
        impls["oneDNN" + (" packed" if dtype == torch.bfloat16 else "")] = \
            lambda i: torch.ops.mkldnn._linear_pointwise(inputs[weights[i].shape[1]], packed[i], None, "none", [], "")
    impls["F.linear"] = lambda i: F.linear(inputs[weights[i].shape[1]], weights[i])
    best = {name: {s: float("inf") for s in {s for s, _, _ in shapes}} for name in impls}
    for _ in range(rounds):
        for name, fn in impls.items():
            spent = {s: 0.0 for s in best[name]}
            for i, (s, _, _) in enumerate(shapes):
                t = time.perf_counter()
                fn(i)
                spent[s] += time.perf_counter() - t
                F.silu(small) * small  # what stands between two projections: a few small ops
            for s in spent:
                best[name][s] = min(best[name][s], spent[s])
    nbytes = {s: 0 for s in best["F.linear"]}
    for (s, _, _), w in zip(shapes, weights):
        nbytes[s] += w.numel() * w.element_size()
    for name, per in best.items():
        total = sum(nbytes.values()) / sum(per.values()) / 1e9
        cols = ", ".join(f"{s} {nbytes[s] / t / 1e9:.1f}" for s, t in per.items())
        print(f"  {str(dtype).removeprefix('torch.')} {name:15s} all {total:5.1f} GB/s ({cols})", flush=True)


def decode_ab(model, dtype: torch.dtype, rounds: int, new: int) -> None:
    from tatlas.generate import GenerationConfig, generate
    from tatlas.nn import matvec

    real = matvec.serves
    model.to(dtype)
    prompt = torch.randint(0, model.config.vocab_size, (1, 16))
    cfg = GenerationConfig(max_new_tokens=new)
    tps: dict[str, list[float]] = {"kernel": [], "no kernel": []}
    with torch.inference_mode():
        generate(model, prompt, cfg)
        try:
            for _ in range(rounds):
                for name in tps:
                    matvec.serves = real if name == "kernel" else (lambda *a: False)
                    generate(model, prompt, GenerationConfig(max_new_tokens=2))  # settle after the switch
                    t = time.perf_counter()
                    generate(model, prompt, cfg)
                    tps[name].append(new / (time.perf_counter() - t))
        finally:
            matvec.serves = real
    med = {k: statistics.median(v) for k, v in tps.items()}
    runs = "; ".join(f"{k} " + " ".join(f"{x:.1f}" for x in v) for k, v in tps.items())
    print(f"  decode {str(dtype).removeprefix('torch.')}: kernel {med['kernel']:.2f} tok/s, without (oneDNN or "
          f"F.linear) {med['no kernel']:.2f} tok/s, ratio {med['kernel'] / med['no kernel']:.2f}x (runs: {runs})",
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="Qwen2.5-0.5B")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    add_contend(ap)
    args = ap.parse_args()
    import tatlas
    from tatlas.nn import matvec

    if matvec.kernel() is None:
        raise SystemExit("bench_matvec.py: the kernel is not available here (no C compiler or AVX2, or TATLAS_MATVEC=0)")
    with contended(args.contend):
        torch.manual_seed(0)
        model = tatlas.optimize(tatlas.create("llm", args.shape, max_positions=4096).eval())
        print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, shape {args.shape}", flush=True)
        for dtype in (getattr(torch, d) for d in args.dtypes.split(",")):
            walk(projections(model), dtype, args.rounds)
            decode_ab(model, dtype, args.rounds, args.new)


if __name__ == "__main__":
    main()
