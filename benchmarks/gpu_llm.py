"""H200 check for the `llm` row: decode tokens/s of a Llama-3.2-1B-shaped bf16 model (random
weights) at batch 1, as a fraction of the memory-bandwidth bound measured in the same run, beside
transformers' `generate` (default and static cache) on the same weights.

    python benchmarks/gpu_llm.py [--new 256] [--prompt 32]

Bound: bytes read per token (all weights, once) / bandwidth, where bandwidth is measured by a large
device-to-device copy (read + write bytes / time). Prints every figure and the ratios.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from _timing import best_time


def timed(fn, repeats: int = 3) -> float:
    return best_time(fn, repeats, sync=torch.cuda.synchronize)


def bandwidth() -> float:
    x = torch.empty(2 * 1024**3, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    t = timed(lambda: y.copy_(x), repeats=5)
    return 2 * x.numel() / t  # bytes/s (read + write)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--preset", default="Llama-3.2-1B")
    args = ap.parse_args()
    assert torch.cuda.is_available(), "this script needs a CUDA GPU"

    import tatlas
    from tatlas.generate import GenerationConfig, generate
    from tatlas.models.llm.convert import to_hf

    torch.manual_seed(0)
    bw = bandwidth()
    model = tatlas.create("llm", args.preset, device="cuda", max_positions=4096)
    model = model.to(torch.bfloat16).eval()
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    bound = bw / weight_bytes
    prompt = torch.randint(0, model.config.vocab_size, (1, args.prompt), device="cuda")
    print(f"{torch.cuda.get_device_name()}: copy bandwidth {bw / 1e12:.2f} TB/s; weights {weight_bytes / 1e9:.2f} GB; "
          f"bound {bound:.0f} tok/s")
    results = {}
    for name, cfg in (("tatlas eager", GenerationConfig(max_new_tokens=args.new)),
                      ("tatlas compiled", GenerationConfig(max_new_tokens=args.new, compile=True))):
        t = timed(lambda cfg=cfg: generate(model, prompt, cfg))
        results[name] = args.new / t
    with tempfile.TemporaryDirectory() as d:
        from transformers import AutoModelForCausalLM

        to_hf(model.float().cpu(), d)
        model.to("cuda", torch.bfloat16)
        ref = AutoModelForCausalLM.from_pretrained(d, dtype=torch.bfloat16).cuda().eval()
    kw = dict(attention_mask=torch.ones_like(prompt), max_new_tokens=args.new, min_new_tokens=args.new,
              do_sample=False, eos_token_id=None, pad_token_id=0)
    results["transformers"] = args.new / timed(lambda: ref.generate(prompt, **kw))
    results["transformers static"] = args.new / timed(lambda: ref.generate(prompt, cache_implementation="static", **kw))
    for name, tps in results.items():
        print(f"{name}: {tps:.0f} tok/s = {tps / bound:.0%} of the bound")
    best = max(results["tatlas eager"], results["tatlas compiled"])
    print(f"ratio tatlas/transformers {best / results['transformers']:.2f}x, "
          f"tatlas/transformers-static {best / results['transformers static']:.2f}x")


if __name__ == "__main__":
    main()
