"""Decode throughput of tatlas' `llm` against transformers' `generate` on the same config and
weights (random, CPU), greedy, a fixed number of new tokens, in one run, as a fraction of the
memory-bandwidth bound measured in the same run.

    python benchmarks/bench_llm_decode.py [--shapes tiny,Qwen2.5-0.5B] [--new 32] [--batches 1,8]
        [--dtypes float32,bfloat16] [--contend N] [--compile] [--torch-blocks]

tatlas runs as the CLI runs it (``tatlas.optimize``: oneDNN matmuls where they pay). The bound: a
batch-1 decode step reads every weight once (``_timing.decode_bytes``), so it cannot run faster than
``read bandwidth / bytes``; the read bandwidth is the best float32 matrix-vector product over a 2 GB
matrix (``_timing.read_bandwidth``), with the same threads and state, measured at the start and
again just before and just after each row, the fastest of them taken (this VM's read speed drifts
by 20-40% within minutes: one bound from the start alone once put a row at 153% of it). Printed per implementation:
tokens/s of the whole ``generate`` call (prompt included), decode steps/s alone (the time of a
1-token call, i.e. the prefill and first step, taken away) as a fraction of the bound, and the
ratios of tokens/s tatlas / transformers (default dynamic cache, and static cache). Shapes whose weights are larger than
the caches (the 0.5B) are where the bound means something; the tiny shape is all overhead.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from _timing import add_contend, best_time, contended, decode_bytes, read_bandwidth


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="tiny,Qwen2.5-0.5B")
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also time tatlas with a compiled decode step")
    ap.add_argument("--torch-blocks", action="store_true",
                    help="also time tatlas with its batch-1 step as torch ops (the one-call C decode layer off)")
    add_contend(ap)
    args = ap.parse_args()
    with contended(args.contend):
        run(args)


def run(args: argparse.Namespace) -> None:
    from transformers import AutoModelForCausalLM

    import tatlas
    from tatlas.generate import GenerationConfig, generate
    from tatlas.models.llm.convert import to_hf

    torch.manual_seed(0)
    bw = read_bandwidth()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, new tokens {args.new}; "
          f"read bandwidth (float32 mat-vec over 2 GB) {bw / 1e9:.1f} GB/s", flush=True)
    for shape in args.shapes.split(","):
        ours = tatlas.create("llm", shape, max_positions=4096).eval()
        with tempfile.TemporaryDirectory() as d:
            ref = AutoModelForCausalLM.from_pretrained(to_hf(ours, d)).eval()
        tatlas.optimize(ours)
        for dtype in (getattr(torch, name) for name in args.dtypes.split(",")):
            ours.to(dtype)
            ref.to(dtype)
            nbytes = decode_bytes(ours)
            before = read_bandwidth()  # the machine's read speed drifts (20-40% here): measured beside each row
            for b in map(int, args.batches.split(",")):
                prompt = torch.randint(0, ours.config.vocab_size, (b, args.prompt))
                steps = {}  # per implementation: (seconds for `new` tokens, seconds for 1 token)
                for new in (args.new, 1):
                    cfg = GenerationConfig(max_new_tokens=new)
                    hf = dict(attention_mask=torch.ones_like(prompt), max_new_tokens=new, min_new_tokens=new,
                              do_sample=False, eos_token_id=None, pad_token_id=0)
                    runs = {
                        "tatlas": lambda: generate(ours, prompt, cfg),
                        "transformers": lambda: ref.generate(prompt, **hf),
                        "transformers static": lambda: ref.generate(prompt, cache_implementation="static", **hf),
                    }
                    if args.compile:
                        ccfg = GenerationConfig(max_new_tokens=new, compile=True)
                        runs["tatlas compiled"] = lambda: generate(ours, prompt, ccfg)
                    if args.torch_blocks:
                        runs["tatlas torch blocks"] = lambda: _torch_blocks(generate, ours, prompt, cfg)
                    with torch.inference_mode():
                        for k, fn in runs.items():
                            steps.setdefault(k, []).append(best_time(fn, args.repeats))
                after = read_bandwidth()
                bound = max(bw, before, after) / nbytes  # decode steps/s: the fastest read seen, start to end
                before = after
                tps = {k: b * args.new / t[0] for k, t in steps.items()}
                # decode steps alone: the prefill (and first step) is the 1-token run, taken away
                rate = {k: (args.new - 1) / max(t[0] - t[1], 1e-9) for k, t in steps.items()}
                line = ", ".join(f"{k} {v:.1f} tok/s (steps {rate[k]:.1f}/s = {rate[k] / bound:.0%})"
                                 for k, v in tps.items())
                print(f"{shape} {str(dtype).removeprefix('torch.')} batch {b} (weights {nbytes / 1e9:.2f} GB, "
                      f"bound {bound:.1f} steps/s at {bound * nbytes / 1e9:.1f} GB/s, the fastest of the reads "
                      f"measured at the start, just before and just after): {line}; ratio tatlas/transformers "
                      f"{tps['tatlas'] / tps['transformers']:.2f}x, tatlas/transformers-static "
                      f"{tps['tatlas'] / tps['transformers static']:.2f}x", flush=True)


def _torch_blocks(generate, *args):
    from tatlas.nn import decode_layer

    decode_layer.ENABLED = False
    try:
        return generate(*args)
    finally:
        decode_layer.ENABLED = True


if __name__ == "__main__":
    main()
