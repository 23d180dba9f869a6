"""Decode throughput of tatlas' `llm` against transformers' `generate` on the same config and
weights (random, float32, CPU), greedy, fixed number of new tokens, in one run.

    python benchmarks/bench_llm_decode.py [--shapes tiny,Qwen2.5-0.5B] [--new 32] [--batches 1,8]

Prints tokens/s for each implementation and the ratio tatlas / transformers.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from _timing import best_time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="tiny,Qwen2.5-0.5B")
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also time tatlas with a compiled decode step")
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM

    import tatlas
    from tatlas.generate import GenerationConfig, generate
    from tatlas.models.llm.convert import to_hf

    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, new tokens {args.new}")
    for shape in args.shapes.split(","):
        ours = tatlas.create("llm", shape, max_positions=4096).eval()
        with tempfile.TemporaryDirectory() as d:
            ref = AutoModelForCausalLM.from_pretrained(to_hf(ours, d)).eval()
        for b in map(int, args.batches.split(",")):
            prompt = torch.randint(0, ours.config.vocab_size, (b, args.prompt))
            cfg = GenerationConfig(max_new_tokens=args.new)
            runs = {
                "tatlas": lambda: generate(ours, prompt, cfg),
                "transformers": lambda: ref.generate(
                    prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=args.new,
                    min_new_tokens=args.new, do_sample=False, eos_token_id=None, pad_token_id=0),
                "transformers static": lambda: ref.generate(
                    prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=args.new,
                    min_new_tokens=args.new, do_sample=False, eos_token_id=None, pad_token_id=0,
                    cache_implementation="static"),
            }
            if args.compile:
                ccfg = GenerationConfig(max_new_tokens=args.new, compile=True)
                runs["tatlas compiled"] = lambda: generate(ours, prompt, ccfg)
            with torch.inference_mode():
                times = {k: best_time(fn, args.repeats) for k, fn in runs.items()}
            tps = {k: b * args.new / t for k, t in times.items()}
            line = ", ".join(f"{k} {v:.0f} tok/s" for k, v in tps.items())
            print(f"{shape} batch {b}: {line}; ratio tatlas/transformers {tps['tatlas'] / tps['transformers']:.2f}x, "
                  f"tatlas/transformers-static {tps['tatlas'] / tps['transformers static']:.2f}x")


if __name__ == "__main__":
    main()
