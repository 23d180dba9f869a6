"""Flamingo (IDEFICS layout) inference speed: tatlas' ``flamingo`` against transformers'
``IdeficsForVisionText2Text`` on the same configuration and weights: one forward (prefill), time to
first token and decode tokens/s, greedy, in one run.

    python benchmarks/bench_flamingo.py                 # CPU, float32, in-process + whole process (~9 min on 2 quiet cores, estimated)
    python benchmarks/bench_flamingo.py --contend 1    # the same with a CPU-bound process spinning beside it
    python benchmarks/bench_flamingo.py --quick         # smoke run: tiny shapes, one round (~1 min)
    python benchmarks/bench_flamingo.py --gpu [--dtype bf16|fp16]   # CUDA (exits with one line where there is none)
    python benchmarks/bench_flamingo.py --profile       # also torch.profiler tables of ours and transformers

Cases (``--cases``), on the ``--shape`` ("small" by default: a CLIP tower of 4 blocks, width 256, 4
heads, 224 px, patch 14 (257 tokens per image, the class token kept as IDEFICS does); a Perceiver
resampler of 64 latents, depth 2, 4 heads of 64; a Llama LM of width 512, 8 layers, 8 heads, MLP 1408,
vocabulary 32,000 + IDEFICS's 2 additional tokens; a gated cross-attention layer before every 2nd LM
layer, 4 of them):

- ``1-image`` / ``3-images``: ``--shape``'s 32 text tokens with 1 or 3 images interleaved as IDEFICS's
  processor writes them, ``<fake_token_around_image><image><fake_token_around_image>`` then text (the
  images' latents reach the LM only through the cross-attention; the prompt is 35 / 41 tokens).
  transformers is given the ``image_attention_mask`` its processor makes (each token sees the latest
  ``<image>`` at or before it); ours counts the ``<image>`` tokens itself (its id written beside the
  weights as ``tatlas_special_tokens.json``, the folder having no tokenizer).

Weights: transformers' model built from its config with every parameter re-drawn (``bench_vlm``'s
``_perturb``: matrices ~ N(0, 1/fan-in), vectors around their init, so the tanh gates, zero at init,
become ~N(0, 0.1^2): the images do change the tokens), ``save_pretrained`` to a temporary folder, and
ours loaded from that folder by ``tatlas.load``. Implementations: ``tatlas`` = ``tatlas.load(folder,
fast=True)``, ``tatlas plain`` = ``tatlas.load(folder)``, both decoding with ``generate(...,
GenerationConfig(static_cache=True))`` (each image's cross-attention keys/values computed once per
prompt and cached); ``transformers`` = its ``generate`` with the default (dynamic) cache and
``transformers static`` = ``cache_implementation="static"`` (transformers' IDEFICS keeps the
resampler's latents between steps and recomputes the cross-attention keys/values every step, with
either cache). Every implementation first generates ``--new`` greedy tokens and must give the same
tokens as transformers' default; a case whose tokens differ prints MISMATCH and its ratios are not
counted.

Figures (in-process: models loaded once, warm, implementations interleaved round by round, median of
``--rounds``):

- forward: one call of the model on the whole prompt and its images, no cache, logits of every
  position (ours ``model(tokens, pixels=...)``, transformers' ``model(input_ids=..., pixel_values=...,
  image_attention_mask=...)``), under ``torch.inference_mode``;
- time to first token (TTFT): ``generate`` with ``max_new_tokens=1`` (tower, resampler, prefill with
  the cross layers, first sample), wall time;
- decode tokens/s: one ``generate`` of ``--new`` tokens with a streamer that stamps each token;
  decode rate = (new - 1) / (last stamp - first stamp), so the prefill is not in it. The whole
  generate's wall time is printed beside it.

Ratios are tatlas / transformers as speeds (> 1: tatlas faster), against the better of the two
transformers caches (and each separately). Whole process (``--modes whole``), ``--busy``,
``--profile`` and ``--gpu`` are ``bench_vlm``'s: a fresh Python process per implementation (import,
load, one ``generate`` of ``--new`` tokens, launch to exit, median of ``--process-runs``, its tokens
checked too); ``--contend N`` spinning processes with the load average printed at the start and end
of every case; torch.profiler's top operators for one TTFT and one generate of tatlas and of
transformers (static); CUDA with ``--dtype`` and ``torch.cuda.synchronize()`` before every clock read,
where half-precision greedy tokens may part after a near tie (the agreeing prefix is reported, the
ratios printed anyway).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from _timing import add_contend, contended, load_average
from bench_vlm import (
    OURS,
    THEIRS,
    _perturb,
    _ratio,
    decode_once,
    profile,
    time_call,
    whole_process,
)

IMPLS = ("tatlas", "tatlas plain", "transformers", "transformers static")
CASES = ("1-image", "3-images")


# ------------------------------------------------------------------------------ configurations


@dataclass(frozen=True)
class Shape:
    vision_dim: int = 256
    vision_layers: int = 4
    vision_heads: int = 4
    patch: int = 14
    px: int = 224
    latents: int = 64
    resampler_depth: int = 2
    resampler_heads: int = 4
    resampler_head_dim: int = 64
    text_dim: int = 512
    text_layers: int = 8
    text_heads: int = 8
    text_mlp: int = 1408
    vocab: int = 32000
    cross_every: int = 2
    prompt: int = 32  # text tokens around the images

    def __str__(self) -> str:
        return (f"tower width {self.vision_dim}, {self.vision_layers} blocks, {self.vision_heads} heads, "
                f"{self.px} px patch {self.patch}; resampler {self.latents} latents, depth {self.resampler_depth}, "
                f"{self.resampler_heads}x{self.resampler_head_dim} heads; LM width {self.text_dim}, {self.text_layers} "
                f"layers, {self.text_heads} heads, MLP {self.text_mlp}, vocabulary {self.vocab:,} + 2; a cross layer "
                f"every {self.cross_every} layers; {self.prompt} text tokens")


SHAPES = {
    "small": Shape(),
    "quick": Shape(vision_dim=64, vision_layers=2, vision_heads=2, px=112, latents=16, resampler_depth=1,
                   resampler_heads=2, resampler_head_dim=32, text_dim=128, text_layers=2, text_heads=4, text_mlp=352,
                   vocab=4000, prompt=16),
    # for --gpu: a CLIP-L-like tower and a ~1B LM (not run on CPU)
    "medium": Shape(vision_dim=1024, vision_layers=24, vision_heads=16, latents=64, resampler_depth=6,
                    resampler_heads=16, resampler_head_dim=64, text_dim=2048, text_layers=16, text_heads=16,
                    text_mlp=5504, cross_every=4, prompt=64),
}


def build_reference(s: Shape, seed: int = 0):
    """transformers' IDEFICS at shape ``s`` (with the Perceiver resampler), every parameter perturbed."""
    from transformers import IdeficsConfig, IdeficsForVisionText2Text

    torch.manual_seed(seed)
    perceiver = dict(use_resampler=True, resampler_n_latents=s.latents, resampler_depth=s.resampler_depth,
                     resampler_n_heads=s.resampler_heads, resampler_head_dim=s.resampler_head_dim)
    vision = dict(embed_dim=s.vision_dim, image_size=s.px, patch_size=s.patch, num_hidden_layers=s.vision_layers,
                  num_attention_heads=s.vision_heads, intermediate_size=4 * s.vision_dim)
    config = IdeficsConfig(vocab_size=s.vocab, additional_vocab_size=2, hidden_size=s.text_dim,
                           intermediate_size=s.text_mlp, num_hidden_layers=s.text_layers,
                           num_attention_heads=s.text_heads, cross_layer_interval=s.cross_every, use_resampler=True,
                           max_position_embeddings=2048, pad_token_id=0, vision_config=vision,
                           perceiver_config=perceiver)
    model = IdeficsForVisionText2Text(config)
    _perturb(model, seed)
    return model.eval()


def save_folder(s: Shape, folder: Path) -> None:
    build_reference(s).save_pretrained(folder, safe_serialization=True)
    # no tokenizer in the folder: name <image> (IDEFICS's second additional token) for our loader
    (folder / "tatlas_special_tokens.json").write_text(json.dumps({"<image>": s.vocab + 1}))


def image_mask(tokens: torch.Tensor, image: int, n_images: int) -> torch.Tensor:
    """IDEFICS's processor's ``image_attention_mask [B, T, N]``: the latest ``<image>`` at or before each token."""
    seen = (tokens == image).long().cumsum(dim=1)
    return (seen[..., None] == torch.arange(1, n_images + 1)).long()


def build_inputs(case: str, s: Shape, seed: int = 1) -> dict:
    """``<fake><image><fake>`` per image, the text cut between them (two text tokens first)."""
    gen = torch.Generator().manual_seed(seed)
    n = int(case.split("-")[0])
    fake, image = s.vocab, s.vocab + 1
    text = torch.randint(1, s.vocab, (s.prompt,), generator=gen).tolist()
    ids, cut = text[:2], (s.prompt - 2) // n
    for i in range(n):
        ids += [fake, image, fake] + text[2 + i * cut: 2 + (i + 1) * cut if i < n - 1 else s.prompt]
    tokens = torch.tensor([ids])
    pixels = torch.randn(1, n, 3, s.px, s.px, generator=gen)
    return {"tokens": tokens, "pixels": pixels, "image_mask": image_mask(tokens, image, n), "images": n}


# ------------------------------------------------------------------------------ the implementations


def load_impl(name: str, folder: Path, device: str = "cpu", dtype: torch.dtype = torch.float32):
    if name.startswith("tatlas"):
        import tatlas

        model = tatlas.load(folder, fast=name != "tatlas plain")
        return model.to(device, dtype).eval()
    from transformers import IdeficsForVisionText2Text

    return IdeficsForVisionText2Text.from_pretrained(folder, dtype=dtype).to(device).eval()


def runner(name: str, model, inputs: dict, device: str = "cpu", sync=lambda: None):
    """``run(new, streamer=None) -> new tokens [1, new]`` of implementation ``name``."""
    tokens = inputs["tokens"].to(device)
    pixels = inputs["pixels"].to(device, next(model.parameters()).dtype)
    if name.startswith("tatlas"):
        from tatlas.generate import GenerationConfig, generate

        def run(new: int, streamer=None):
            cfg = GenerationConfig(max_new_tokens=new, static_cache=True)
            return generate(model, tokens, cfg, pixels=pixels, streamer=streamer).tokens

        return run
    kw = {"input_ids": tokens, "attention_mask": torch.ones_like(tokens), "pixel_values": pixels,
          "image_attention_mask": inputs["image_mask"].to(device), "do_sample": False, "num_beams": 1,
          "eos_token_id": None, "pad_token_id": 0}
    if name == "transformers static":
        kw["cache_implementation"] = "static"

    def run(new: int, streamer=None):
        with torch.inference_mode():
            out = model.generate(**kw, max_new_tokens=new, min_new_tokens=new, streamer=streamer)
        return out[:, tokens.shape[1]:]

    return run


def forward_fn(name: str, model, inputs: dict, device: str = "cpu"):
    """One forward on the whole prompt, no cache: ``() -> logits [1, T, V]``."""
    tokens = inputs["tokens"].to(device)
    pixels = inputs["pixels"].to(device, next(model.parameters()).dtype)
    if name.startswith("tatlas"):
        def fwd():
            with torch.inference_mode():
                return model(tokens, pixels=pixels)
    else:
        mask = inputs["image_mask"].to(device)

        def fwd():
            with torch.inference_mode():
                return model(input_ids=tokens, pixel_values=pixels, image_attention_mask=mask, use_cache=False).logits
    return fwd


# ------------------------------------------------------------------------------ whole process


def child(spec: dict) -> dict:
    """One fresh process: import the implementation, load, one generate of ``new`` tokens."""
    t_main = time.time() - spec["t0"]  # interpreter start-up + this script's imports (torch, bench_vlm)
    torch.set_num_threads(spec["threads"])
    name = spec["impl"]
    if name.startswith("tatlas"):
        import tatlas  # noqa: F401
        from tatlas.generate import generate  # noqa: F401
    else:
        from transformers import IdeficsForVisionText2Text  # noqa: F401
    t_import = time.time() - spec["t0"]
    model = load_impl(name, Path(spec["folder"]))
    t_load = time.time() - spec["t0"]
    inputs = torch.load(spec["inputs"])
    tokens = runner(name, model, inputs)(spec["new"])
    t_gen = time.time() - spec["t0"]
    return {"main": t_main, "import": t_import, "load": t_load, "generate": t_gen, "tokens": tokens[0].tolist(),
            "transformers_imported": "transformers" in sys.modules}


# ------------------------------------------------------------------------------ one case


def bench_case(case: str, args, s: Shape, device: str, dtype: torch.dtype, sync) -> dict:
    print(f"\n== {case} ({load_average()})", flush=True)
    results: dict = {"case": case}
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "hf"
        save_folder(s, folder)
        models = {name: load_impl(name, folder, device, dtype) for name in IMPLS}
        inputs = build_inputs(case, s)
        torch.save(inputs, Path(d) / "inputs.pt")
        print(f"   prompt {inputs['tokens'].shape[1]} tokens ({inputs['images']} image(s), "
              f"{inputs['images'] * s.latents} latents to cross-attend), pixels {list(inputs['pixels'].shape)}, "
              f"{args.new} new tokens", flush=True)
        runs = {name: runner(name, m, inputs, device, sync) for name, m in models.items()}
        fwds = {name: forward_fn(name, m, inputs, device) for name, m in models.items()}

        # equal greedy tokens first (also the warm-up of every implementation); forward logits compared
        ref = runs["transformers"](args.new)
        ref_logits = fwds["transformers"]().float()
        equal = {}
        for name in IMPLS:
            out = ref if name == "transformers" else runs[name](args.new)
            runs[name](1)  # warm the TTFT path too
            diff = (fwds[name]().float() - ref_logits).abs().max().item()
            agree = int((out == ref)[0].long().cumprod(0).sum())
            equal[name] = agree == args.new
            if not equal[name]:
                print(f"   MISMATCH: {name} agrees with transformers on the first {agree} of {args.new} tokens",
                      flush=True)
            if name.startswith("tatlas"):
                print(f"   {name}: forward logits within {diff:.1e} of transformers'", flush=True)
        with torch.inference_mode():  # the images matter: the same prompt with no token seeing an image
            blind = models["transformers"](input_ids=inputs["tokens"].to(device),
                                           pixel_values=torch.zeros_like(inputs["pixels"]).to(device, dtype),
                                           image_attention_mask=torch.zeros_like(inputs["image_mask"]).to(device),
                                           use_cache=False).logits.float()
        print(f"   images' effect on transformers' logits: max |with - without| {(blind - ref_logits).abs().max():.2f}",
              flush=True)
        results["equal"] = equal
        counted = all(equal.values()) or args.gpu
        if args.gpu and not all(equal.values()):
            print("   (half precision: the ratios are printed anyway)")

        if "inproc" in args.modes:
            fwd = {n: [] for n in IMPLS}
            ttft = {n: [] for n in IMPLS}
            dec = {n: [] for n in IMPLS}
            wall = {n: [] for n in IMPLS}
            for _ in range(args.rounds):
                for name in IMPLS:
                    fwd[name].append(time_call(fwds[name], sync))
                    ttft[name].append(time_call(lambda name=name: runs[name](1), sync))
                    rate, w = decode_once(name, runs[name], args.new, sync)
                    dec[name].append(rate)
                    wall[name].append(w)
            med = {k: {n: statistics.median(v) for n, v in dd.items()} for k, dd in
                   (("forward", fwd), ("ttft", ttft), ("decode", dec), ("wall", wall))}
            results["inproc"] = med
            print(f"   in-process, median of {args.rounds} rounds ({load_average()}):")
            print("   | implementation | forward ms | TTFT ms | decode tok/s | generate of all tokens, s | tokens equal |")
            print("   |---|---|---|---|---|---|")
            for name in IMPLS:
                print(f"   | {name} | {1e3 * med['forward'][name]:,.1f} | {1e3 * med['ttft'][name]:,.1f} | "
                      f"{med['decode'][name]:,.1f} | {med['wall'][name]:.3f} | {'yes' if equal[name] else 'NO'} |")
            best = {"forward": min(med["forward"][n] for n in THEIRS), "ttft": min(med["ttft"][n] for n in THEIRS),
                    "decode": max(med["decode"][n] for n in THEIRS), "wall": min(med["wall"][n] for n in THEIRS)}
            for name in [n for n in IMPLS if n in OURS]:
                tag = "" if counted else " (NOT COUNTED: tokens differ)"
                print(f"   {name} / transformers (better of default and static): forward "
                      f"{_ratio(best['forward'], med['forward'][name])}, TTFT {_ratio(best['ttft'], med['ttft'][name])}, "
                      f"decode {_ratio(med['decode'][name], best['decode'])}, generate "
                      f"{_ratio(best['wall'], med['wall'][name])}; vs default TTFT "
                      f"{_ratio(med['ttft']['transformers'], med['ttft'][name])}, decode "
                      f"{_ratio(med['decode'][name], med['decode']['transformers'])}; vs static TTFT "
                      f"{_ratio(med['ttft']['transformers static'], med['ttft'][name])}, decode "
                      f"{_ratio(med['decode'][name], med['decode']['transformers static'])}{tag}", flush=True)

        if args.profile:
            for name in ("tatlas", "transformers static"):
                profile(name, runs[name], args.new)

        runs.clear()  # free the models before the whole-process runs
        fwds.clear()
        models.clear()
        if "whole" in args.modes and not args.gpu:
            names = [n for n in IMPLS if n in args.whole_impls.split(",")]
            spec = {"folder": str(folder), "inputs": str(Path(d) / "inputs.pt"), "new": args.new,
                    "threads": torch.get_num_threads()}
            results["whole"], same = whole_process(names, spec, ref[0].tolist(), args.process_runs, counted, __file__)
            counted = counted and same
    results["counted"] = counted
    return results


# ------------------------------------------------------------------------------ entry point


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":  # hidden: one whole-process run
        print(json.dumps(child(json.loads(sys.argv[2]))))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--shape", default=None, choices=sorted(SHAPES), help="default: small (quick with --quick)")
    ap.add_argument("--new", type=int, default=None, help="new tokens of the decode run (default 64, 16 with --quick)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved in-process rounds (default 5, 1 with --quick)")
    ap.add_argument("--process-runs", type=int, default=None, help="whole-process runs per implementation (default 3)")
    ap.add_argument("--modes", default=None, help="inproc,whole (default both; --quick: whole for the first case only)")
    ap.add_argument("--whole-impls", default=None,
                    help="implementations run as whole processes (default all; --quick: tatlas,transformers)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    add_contend(ap)
    ap.add_argument("--profile", action="store_true", help="torch.profiler tables of tatlas and transformers static")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny shapes, one round, < 60 s")
    ap.add_argument("--gpu", action="store_true", help="CUDA, --dtype, synchronised timings")
    ap.add_argument("--dtype", default="bf16", choices=("bf16", "fp16"), help="--gpu only")
    args = ap.parse_args()
    if args.gpu and not torch.cuda.is_available():
        raise SystemExit("bench_flamingo --gpu: expected a CUDA device, got none")
    args.shape = args.shape or ("quick" if args.quick else "small")
    args.new = args.new or (16 if args.quick else 64)
    args.rounds = args.rounds or (1 if args.quick else 5)
    args.process_runs = args.process_runs or (1 if args.quick else 3)
    args.modes = args.modes or ("inproc" if args.gpu else "inproc,whole")
    args.whole_impls = args.whole_impls or ("tatlas,transformers" if args.quick else ",".join(IMPLS))
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    s = SHAPES[args.shape]
    if args.gpu:
        device, dtype, sync = "cuda", {"bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype], torch.cuda.synchronize
        where = f"{torch.cuda.get_device_name()}, {args.dtype}"
    else:
        device, dtype, sync = "cpu", torch.float32, lambda: None
        where = f"CPU ({os.cpu_count()} cores), float32, {torch.get_num_threads()} threads"
    print(f"{where}, torch {torch.__version__}, transformers {transformers.__version__}; shape {args.shape}: {s}; "
          f"{load_average()}", flush=True)
    start = time.perf_counter()
    cases = args.cases.split(",")
    for case in cases:
        if case not in CASES:
            raise SystemExit(f"bench_flamingo: unknown case {case!r}; known: {', '.join(CASES)}")
    with contended(args.contend):
        summary = []
        for i, case in enumerate(cases):
            case_args = args
            if args.quick and i > 0 and "whole" in args.modes:  # keep the smoke run short
                case_args = argparse.Namespace(**{**vars(args), "modes": "inproc"})
            summary.append(bench_case(case, case_args, s, device, dtype, sync))
    print(f"\nSummary (tatlas / transformers, the better of its two caches; > 1: tatlas faster; {load_average()}):")
    print("| case | forward | TTFT | decode | generate | whole process | tokens equal |")
    print("|---|---|---|---|---|---|---|")
    for r in summary:
        cells = []
        if "inproc" in r:
            m = r["inproc"]
            cells += [_ratio(min(m["forward"][n] for n in THEIRS), m["forward"]["tatlas"]),
                      _ratio(min(m["ttft"][n] for n in THEIRS), m["ttft"]["tatlas"]),
                      _ratio(m["decode"]["tatlas"], max(m["decode"][n] for n in THEIRS)),
                      _ratio(min(m["wall"][n] for n in THEIRS), m["wall"]["tatlas"])]
        else:
            cells += ["", "", "", ""]
        w = r.get("whole", {})
        theirs = [w[n] for n in THEIRS if n in w]
        cells.append(_ratio(min(theirs), w["tatlas"]) if theirs and "tatlas" in w else "")
        print(f"| {r['case']} | {' | '.join(cells)} | {'yes' if r['counted'] else 'NO'} |")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
