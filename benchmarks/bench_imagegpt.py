"""Image-completion sampling throughput of tatlas' ``imagegpt`` against transformers'
``ImageGPTForCausalImageModeling.generate`` on the same weights (random, float32, CPU), in one run.

Every row completes a batch of images from their top half: the prompt is SOS + the top half's
pixels, the bottom half is sampled (temperature 1, top-k 40), a fixed number of new tokens.

    python benchmarks/bench_imagegpt.py [--shapes tiny,mid] [--batch 8] [--repeats 2] [--compile]

Prints tokens/s for each implementation and the ratio tatlas / transformers.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from _timing import add_contend, best_time, contended

SHAPES = {
    # name: (preset, overrides)
    "tiny": ("tiny", {}),  # 16 colours, 12x12, 64 wide, 4 layers: 72 new tokens per image
    "mid": ("iGPT-S", {"dim": 256, "layers": 8, "heads": 8}),  # 512 colours, 32x32: 512 new tokens per image
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="tiny,mid")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="also time tatlas with a compiled decode step")
    add_contend(ap)
    args = ap.parse_args()
    with contended(args.contend):
        _run(args)


def _run(args: argparse.Namespace) -> None:

    from transformers import ImageGPTForCausalImageModeling

    import tatlas
    from tatlas.generate import GenerationConfig, generate
    from tatlas.models.imagegpt.convert import to_hf

    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, "
          "sampling temperature 1 top-k 40")
    for shape in args.shapes.split(","):
        preset, overrides = SHAPES[shape]
        ours = tatlas.create("imagegpt", preset, **overrides).eval()
        with tempfile.TemporaryDirectory() as d:
            ref = ImageGPTForCausalImageModeling.from_pretrained(to_hf(ours, d)).eval()
        c = ours.config
        n = c.max_positions
        kept = (c.image_size // 2) * c.image_size
        new = n - kept
        pixels = torch.randint(0, c.clusters, (args.batch, kept))
        prompt = torch.cat([torch.full((args.batch, 1), c.sos_token), pixels], dim=1)
        cfg = GenerationConfig(max_new_tokens=new, temperature=1.0, top_k=40, seed=0)
        hf_kwargs = dict(attention_mask=torch.ones_like(prompt), max_new_tokens=new, min_new_tokens=new,
                         do_sample=True, temperature=1.0, top_k=40, top_p=1.0, eos_token_id=None,
                         pad_token_id=c.sos_token)
        runs = {
            "tatlas": lambda: generate(ours, prompt, cfg),
            "transformers": lambda: ref.generate(prompt, **hf_kwargs),
        }
        if args.compile:
            ccfg = GenerationConfig(max_new_tokens=new, temperature=1.0, top_k=40, seed=0, compile=True)
            runs["tatlas compiled"] = lambda: generate(ours, prompt, ccfg)
        with torch.inference_mode():
            times = {k: best_time(fn, args.repeats) for k, fn in runs.items()}
        tps = {k: args.batch * new / t for k, t in times.items()}
        line = ", ".join(f"{k} {v:.0f} tok/s" for k, v in tps.items())
        print(f"{shape} ({c.clusters} colours, {c.image_size}x{c.image_size}, dim {c.dim}, {c.layers} layers, "
              f"{new} new tokens): {line}; ratio tatlas/transformers {tps['tatlas'] / tps['transformers']:.2f}x",
              flush=True)


if __name__ == "__main__":
    main()
