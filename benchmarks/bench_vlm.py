"""LLaVA (1.5 and NeXT) and InternVL inference speed: tatlas' ``llava`` / ``internvl`` against
transformers' ``LlavaForConditionalGeneration`` / ``LlavaNextForConditionalGeneration`` /
``InternVLForConditionalGeneration`` on the same configuration and weights, time to first token and
decode tokens/s, greedy, in one run.

    python benchmarks/bench_vlm.py                    # CPU, float32, in-process + whole process (~10 min on 2 cores)
    python benchmarks/bench_vlm.py --contend 1       # the same with a CPU-bound process spinning beside it
    python benchmarks/bench_vlm.py --quick            # smoke run: tiny shapes, one round (< 60 s)
    python benchmarks/bench_vlm.py --gpu [--dtype bf16|fp16]   # CUDA (exits with one line where there is none)
    python benchmarks/bench_vlm.py --profile          # also torch.profiler tables of ours and transformers

Cases (``--cases``, comma-separated), all on the ``--shape`` ("small" by default: a CLIP / InternViT
tower of 4 blocks, width 256, patch 14; a Llama (LLaVA) or Qwen2 (InternVL) decoder of width 512, 8
layers, 8 heads (4 key/value heads), MLP 1408, vocabulary 32,000):

- ``llava-1.5``: one 224-px image (256 image tokens) in a ~32-token prompt;
- ``llava-next``: one 448 x 448 image cut into 2 x 2 tiles of 224 px plus the downscaled whole (5 tower
  passes; 256 + 32 x (32 + 1 newline) = 1,312 image tokens), pinpoints LLaVA-NeXT's scaled to 224 px;
- ``internvl-1`` / ``internvl-5``: InternVL, 448-px tiles (1,024 patches each, pixel-shuffled to 256
  tokens): one tile, and five (a 2 x 2 grid plus the thumbnail, 1,280 image tokens).

Weights: transformers' model built from its config with every parameter re-drawn (matrices ~ N(0,
1/fan-in), vectors around their init, as ``tests/parity.py`` perturbs them, scaled for the width),
``save_pretrained`` to a temporary folder, and ours loaded from that folder by ``tatlas.load`` (our
converter). Implementations: ``tatlas`` = ``tatlas.load(folder, fast=True)`` (the CPU fast path, what
the other benchmarks time as tatlas), ``tatlas plain`` = ``tatlas.load(folder)``, both decoding with
``generate(..., GenerationConfig(static_cache=True))``; ``transformers`` = its ``generate`` with the
default (dynamic) cache and ``transformers static`` = ``cache_implementation="static"``. Every
implementation first generates ``--new`` greedy tokens and must give the same tokens as transformers'
default; a case whose tokens differ prints MISMATCH and its ratios are not counted.

Figures (in-process: models loaded once, warm, implementations interleaved round by round, median of
``--rounds``):

- time to first token (TTFT): ``generate`` with ``max_new_tokens=1`` (images + prompt -> first token:
  vision tower, connector, splice, prefill, first sample), wall time;
- decode tokens/s: one ``generate`` of ``--new`` tokens with a streamer that stamps each token as it
  arrives; decode rate = (new - 1) / (last stamp - first stamp), so the prefill is not in it. The
  whole generate's wall time is printed beside it.

Ratios are tatlas / transformers as speeds (> 1: tatlas faster), against the better of the two
transformers caches (and each separately). Whole process (``--modes whole``): a fresh Python process
per implementation (this script with a hidden ``--child``) that imports, loads the folder and runs one
``generate`` of ``--new`` tokens; the wall time from launch to exit (median of ``--process-runs``,
interleaved), with the child's own split (start-up + imports, load, generate) and its tokens checked
too. ``--contend N``: N Python processes spinning (``while True: pass``) from before the first
measurement to the end, as the busy runs in RESULTS.md were made; the load average is printed at the
start and end of every case. ``--profile``: torch.profiler's top operators for one TTFT call and one
``--new``-token generate of tatlas and of transformers (static), per case.

``--gpu``: CUDA, ``--dtype`` bf16 (default) or fp16, ``torch.cuda.synchronize()`` before every clock
read (the streamer synchronises too); transformers' static cache compiles itself there (its default
on CUDA), ``--compile`` adds our compiled decode step. In half precision greedy tokens may part after a
near tie, so the GPU mode reports how many leading tokens agree instead of refusing the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from _timing import add_contend, contended, load_average

IMPLS = ("tatlas", "tatlas plain", "transformers", "transformers static")
OURS = ("tatlas", "tatlas plain", "tatlas compiled")
THEIRS = ("transformers", "transformers static")


# ------------------------------------------------------------------------------ configurations


@dataclass(frozen=True)
class Shape:
    vision_dim: int = 256
    vision_layers: int = 4
    vision_heads: int = 4
    patch: int = 14
    clip_px: int = 224  # LLaVA's tile
    internvl_px: int = 448  # InternVL's tile
    text_dim: int = 512
    text_layers: int = 8
    text_heads: int = 8
    text_kv_heads: int = 4
    text_mlp: int = 1408
    vocab: int = 32000
    prompt: int = 32  # text tokens around the image tokens

    def __str__(self) -> str:
        return (f"tower width {self.vision_dim}, {self.vision_layers} blocks, {self.vision_heads} heads, patch "
                f"{self.patch} (LLaVA tiles {self.clip_px} px, InternVL tiles {self.internvl_px} px); decoder width "
                f"{self.text_dim}, {self.text_layers} layers, {self.text_heads} heads ({self.text_kv_heads} kv), MLP "
                f"{self.text_mlp}, vocabulary {self.vocab:,}; {self.prompt} text tokens")


SHAPES = {
    "small": Shape(),
    "quick": Shape(vision_dim=64, vision_layers=2, vision_heads=2, clip_px=112, internvl_px=112, text_dim=128,
                   text_layers=2, text_heads=4, text_kv_heads=2, text_mlp=352, vocab=4000, prompt=16),
    # for --gpu: a CLIP-L-like tower and a ~1B decoder (not run on CPU)
    "medium": Shape(vision_dim=1024, vision_layers=24, vision_heads=16, clip_px=336, internvl_px=448, text_dim=2048,
                    text_layers=16, text_heads=32, text_kv_heads=8, text_mlp=8192, vocab=32000, prompt=64),
}
CASES = ("llava-1.5", "llava-next", "internvl-1", "internvl-5")


def _text_config(kind: str, s: Shape):
    from transformers import LlamaConfig, Qwen2Config

    cls = LlamaConfig if kind == "llama" else Qwen2Config
    return cls(vocab_size=s.vocab, hidden_size=s.text_dim, intermediate_size=s.text_mlp,
               num_hidden_layers=s.text_layers, num_attention_heads=s.text_heads, num_key_value_heads=s.text_kv_heads,
               max_position_embeddings=4096, pad_token_id=0).to_dict()


@torch.no_grad()
def _perturb(module: torch.nn.Module, seed: int) -> None:
    """Every floating parameter re-drawn (``tests/parity.py``'s ``perturb_``, with matrices at
    1/sqrt(fan-in) instead of 0.1 so that width-512 activations stay in range)."""
    gen = torch.Generator().manual_seed(seed)
    for _, p in sorted(module.named_parameters(), key=lambda kv: kv[0]):
        if not p.dtype.is_floating_point:
            continue
        noise = torch.randn(p.shape, generator=gen)
        if p.dim() <= 1:
            p.add_(0.1 * noise)
        else:
            fan_in = p.shape[-1] if p.shape[0] == 1 else p[0].numel()
            p.copy_(noise * fan_in**-0.5)


def build_reference(case: str, s: Shape, seed: int = 0):
    """transformers' model of ``case`` at shape ``s``, every parameter perturbed, float32, eval."""
    torch.manual_seed(seed)
    img = s.vocab - 1  # the placeholder inside the vocabulary, as the hub's checkpoints have it
    if case.startswith("llava"):
        from transformers import (
            CLIPVisionConfig,
            LlavaConfig,
            LlavaForConditionalGeneration,
            LlavaNextConfig,
            LlavaNextForConditionalGeneration,
        )

        vision = CLIPVisionConfig(hidden_size=s.vision_dim, intermediate_size=4 * s.vision_dim,
                                  num_hidden_layers=s.vision_layers, num_attention_heads=s.vision_heads,
                                  image_size=s.clip_px, patch_size=s.patch).to_dict()
        kw = {"text_config": _text_config("llama", s), "vision_config": vision, "image_token_index": img,
              "image_seq_length": (s.clip_px // s.patch) ** 2}
        if case == "llava-1.5":
            model = LlavaForConditionalGeneration(LlavaConfig(**kw))
        else:
            t = s.clip_px
            pinpoints = [[t, 2 * t], [2 * t, t], [2 * t, 2 * t], [3 * t, t], [t, 3 * t]]
            model = LlavaNextForConditionalGeneration(LlavaNextConfig(image_grid_pinpoints=pinpoints, **kw))
    else:
        from transformers import InternVLConfig, InternVLForConditionalGeneration

        vision = {"hidden_size": s.vision_dim, "intermediate_size": 4 * s.vision_dim,
                  "num_hidden_layers": s.vision_layers, "num_attention_heads": s.vision_heads,
                  "image_size": s.internvl_px, "patch_size": s.patch}
        per_tile = (s.internvl_px // s.patch // 2) ** 2
        model = InternVLForConditionalGeneration(InternVLConfig(
            text_config=_text_config("qwen2", s), vision_config=vision, image_token_id=img, image_seq_length=per_tile))
    _perturb(model, seed)
    return model.eval()


def build_inputs(case: str, s: Shape, ours, seed: int = 1) -> dict:
    """One prompt: half the text, the image's placeholder tokens (as many as the image becomes),
    the other half. LLaVA-NeXT's pixels in transformers' layout ``[1, tiles, 3, S, S]``."""
    gen = torch.Generator().manual_seed(seed)
    img = s.vocab - 1
    image_sizes = None
    if case == "llava-1.5":
        pixels = torch.randn(1, 3, s.clip_px, s.clip_px, generator=gen)
        n_img = ours.image_token_count((s.clip_px, s.clip_px))
    elif case == "llava-next":
        hw = (2 * s.clip_px, 2 * s.clip_px)
        image_sizes = torch.tensor([hw])
        tiles = ours.tiles_per_image(image_sizes)[0]
        pixels = torch.randn(1, tiles, 3, s.clip_px, s.clip_px, generator=gen)
        n_img = ours.image_token_count(hw)
    else:
        tiles = int(case.split("-")[1])
        pixels = torch.randn(tiles, 3, s.internvl_px, s.internvl_px, generator=gen)
        n_img = ours.image_token_count(tiles)
    text = torch.randint(1, img, (s.prompt,), generator=gen)
    tokens = torch.cat([text[: s.prompt // 2], torch.full((n_img,), img), text[s.prompt // 2 :]])[None]
    return {"tokens": tokens, "pixels": pixels, "image_sizes": image_sizes, "image_tokens": n_img}


# ------------------------------------------------------------------------------ the implementations


class Stamps:
    """A streamer for both ``generate``s: the clock at every new token. transformers' hands it the
    prompt first (``skip_first``); ``sync`` waits for the device before the clock is read."""

    def __init__(self, skip_first: bool, sync=lambda: None) -> None:
        self.skip, self.sync, self.times = skip_first, sync, []

    def __call__(self, _tokens) -> None:  # tatlas' streamer
        self.sync()
        self.times.append(time.perf_counter())

    def put(self, tokens) -> None:  # transformers' BaseStreamer
        if self.skip:
            self.skip = False
            return
        self(tokens)

    def end(self) -> None:
        pass


def load_impl(name: str, folder: Path, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """The model of implementation ``name``, loaded from the ``save_pretrained`` folder."""
    if name.startswith("tatlas"):
        import tatlas

        model = tatlas.load(folder, fast=name != "tatlas plain")
        return model.to(device, dtype).eval()
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(folder, dtype=dtype).to(device).eval()


def runner(name: str, model, inputs: dict, device: str = "cpu", sync=lambda: None):
    """``run(new, streamer=None) -> new tokens [1, new]`` of implementation ``name``."""
    tokens = inputs["tokens"].to(device)
    pixels = inputs["pixels"].to(device, next(model.parameters()).dtype)
    sizes = None if inputs["image_sizes"] is None else inputs["image_sizes"].to(device)
    if name.startswith("tatlas"):
        from tatlas.generate import GenerationConfig, generate

        extra = {} if sizes is None else {"image_sizes": sizes}
        compile_ = name == "tatlas compiled"

        def run(new: int, streamer=None):
            cfg = GenerationConfig(max_new_tokens=new, static_cache=True, compile=compile_ and new > 1)
            return generate(model, tokens, cfg, pixels=pixels, streamer=streamer, **extra).tokens

        return run
    kw = {"input_ids": tokens, "attention_mask": torch.ones_like(tokens), "pixel_values": pixels, "do_sample": False,
          "eos_token_id": None, "pad_token_id": 0}
    if sizes is not None:
        kw["image_sizes"] = sizes
    if name == "transformers static":
        kw["cache_implementation"] = "static"

    def run(new: int, streamer=None):
        with torch.inference_mode():
            out = model.generate(**kw, max_new_tokens=new, min_new_tokens=new, streamer=streamer)
        return out[:, tokens.shape[1]:]

    return run


def time_call(fn, sync=lambda: None) -> float:
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


def decode_once(name: str, run, new: int, sync=lambda: None) -> tuple[float, float]:
    """(decode tokens/s from the streamer's stamps, wall seconds of the whole generate)."""
    stamps = Stamps(skip_first=name in THEIRS, sync=sync)
    wall = time_call(lambda: run(new, stamps), sync)
    t = stamps.times
    assert len(t) == new, f"{name}: the streamer saw {len(t)} tokens, expected {new}"
    return (new - 1) / (t[-1] - t[0]), wall


# ------------------------------------------------------------------------------ whole process


def child(spec: dict) -> dict:
    """One fresh process: import the implementation, load, one generate of ``new`` tokens."""
    t_main = time.time() - spec["t0"]  # interpreter start-up + this script's imports (torch)
    torch.set_num_threads(spec["threads"])
    name = spec["impl"]
    if name.startswith("tatlas"):
        import tatlas  # noqa: F401
        from tatlas.generate import generate  # noqa: F401
    else:
        import transformers  # noqa: F401
        from transformers import AutoModelForImageTextToText  # noqa: F401
    t_import = time.time() - spec["t0"]
    model = load_impl(name, Path(spec["folder"]))
    t_load = time.time() - spec["t0"]
    inputs = torch.load(spec["inputs"])
    tokens = runner(name, model, inputs)(spec["new"])
    t_gen = time.time() - spec["t0"]
    return {"main": t_main, "import": t_import, "load": t_load, "generate": t_gen, "tokens": tokens[0].tolist(),
            "transformers_imported": "transformers" in sys.modules}


def run_child(spec: dict, script: str = __file__) -> tuple[float, dict]:
    """Launch ``script --child spec`` (a benchmark whose ``main`` answers ``--child``); (wall s, its JSON)."""
    spec = dict(spec, t0=time.time())
    t = time.perf_counter()
    out = subprocess.run([sys.executable, script, "--child", json.dumps(spec)], capture_output=True, text=True, check=False,
                         env=dict(os.environ, TRANSFORMERS_VERBOSITY="error"))
    wall = time.perf_counter() - t
    if out.returncode != 0:
        raise RuntimeError(f"child {spec['impl']} failed:\n{out.stderr[-2000:]}")
    return wall, json.loads(out.stdout.strip().splitlines()[-1])


def whole_process(names: list[str], spec: dict, tokens: list[int], runs: int, counted: bool = True,
                  script: str = __file__) -> tuple[dict[str, float], bool]:
    """``runs`` alternating whole-process runs of each implementation (``script --child``), the
    table of where each one's time went (the run nearest its median) and the ratio of ours to the
    better of theirs; (median wall seconds by name, whether every process generated ``tokens``)."""
    walls: dict[str, list[float]] = {n: [] for n in names}
    parts: dict[str, list[dict]] = {}
    same = True
    for _ in range(runs):
        for name in names:
            w, out = run_child(dict(spec, impl=name), script)
            walls[name].append(w)
            parts.setdefault(name, []).append(out)
            if out["tokens"] != tokens:
                print(f"   MISMATCH: the {name} process generated other tokens", flush=True)
                same = False
    med = {n: statistics.median(v) for n, v in walls.items()}
    print(f"   whole process (launch to exit; median of {runs}; {load_average()}):")
    print("   | implementation | wall s | start-up + torch | + import | + load | + generate | imports transformers |")
    print("   |---|---|---|---|---|---|---|")
    for name in names:
        w = walls[name]  # the split of the run nearest the median
        p = parts[name][min(range(len(w)), key=lambda i: abs(w[i] - med[name]))]
        print(f"   | {name} | {med[name]:.2f} | {p['main']:.2f} | {p['import'] - p['main']:.2f} | "
              f"{p['load'] - p['import']:.2f} | {p['generate'] - p['load']:.2f} | "
              f"{'yes' if p['transformers_imported'] else 'no'} |")
    theirs = [n for n in names if n in THEIRS]
    if theirs:
        best = min(med[n] for n in theirs)
        for name in [n for n in names if n in OURS]:
            print(f"   whole process {name} / transformers (better): {_ratio(best, med[name])}"
                  + ("" if counted and same else " (NOT COUNTED: tokens differ)"), flush=True)
    return med, same


# ------------------------------------------------------------------------------ one case


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x"


def profile(name: str, run, new: int, rows: int = 12) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    for label, n in (("TTFT", 1), (f"{new}-token generate", new)):
        with prof(activities=[ProfilerActivity.CPU]) as p:
            run(n)
        total = sum(e.self_cpu_time_total for e in p.key_averages()) / 1e3
        print(f"    profile {name}, {label} (self CPU {total:,.0f} ms in all):")
        table = p.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
        print("\n".join("      " + line for line in table.splitlines()))


def bench_case(case: str, args, s: Shape, device: str, dtype: torch.dtype, sync) -> dict:
    print(f"\n== {case} ({load_average()})", flush=True)
    results: dict = {"case": case}
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "hf"
        build_reference(case, s).save_pretrained(folder, safe_serialization=True)
        impls = list(IMPLS) + (["tatlas compiled"] if args.compile else [])
        models = {name: load_impl(name, folder, device, dtype) for name in impls}
        inputs = build_inputs(case, s, models["tatlas"])
        torch.save(inputs, Path(d) / "inputs.pt")
        pixels = inputs["pixels"]
        print(f"   prompt {inputs['tokens'].shape[1]} tokens ({inputs['image_tokens']} image tokens), pixels "
              f"{list(pixels.shape)}, {args.new} new tokens", flush=True)
        runs = {name: runner(name, m, inputs, device, sync) for name, m in models.items()}

        # equal greedy tokens first (also the warm-up of every implementation)
        ref = runs["transformers"](args.new)
        equal = {}
        for name in impls:
            out = ref if name == "transformers" else runs[name](args.new)
            runs[name](1)  # warm the TTFT path too
            same = (out == ref)[0]
            agree = int(same.long().cumprod(0).sum())
            equal[name] = agree == args.new
            if not equal[name]:
                print(f"   MISMATCH: {name} agrees with transformers on the first {agree} of {args.new} tokens",
                      flush=True)
        results["equal"] = equal
        counted = all(equal.values()) or args.gpu
        if args.gpu and not all(equal.values()):
            print("   (half precision: the ratios are printed anyway)")

        if "inproc" in args.modes:
            ttft = {n: [] for n in impls}
            dec = {n: [] for n in impls}
            wall = {n: [] for n in impls}
            for _ in range(args.rounds):
                for name in impls:
                    ttft[name].append(time_call(lambda name=name: runs[name](1), sync))
                    rate, w = decode_once(name, runs[name], args.new, sync)
                    dec[name].append(rate)
                    wall[name].append(w)
            med = {k: {n: statistics.median(v) for n, v in d.items()} for k, d in
                   (("ttft", ttft), ("decode", dec), ("wall", wall))}
            results["inproc"] = med
            print(f"   in-process, median of {args.rounds} rounds ({load_average()}):")
            print("   | implementation | TTFT ms | decode tok/s | generate of all tokens, s | tokens equal |")
            print("   |---|---|---|---|---|")
            for name in impls:
                print(f"   | {name} | {1e3 * med['ttft'][name]:,.1f} | {med['decode'][name]:,.1f} | "
                      f"{med['wall'][name]:.3f} | {'yes' if equal[name] else 'NO'} |")
            best_ttft = min(med["ttft"][n] for n in THEIRS)
            best_dec = max(med["decode"][n] for n in THEIRS)
            for name in [n for n in impls if n in OURS]:
                tag = "" if counted else " (NOT COUNTED: tokens differ)"
                print(f"   {name} / transformers (better of default and static): TTFT "
                      f"{_ratio(best_ttft, med['ttft'][name])}, decode {_ratio(med['decode'][name], best_dec)}; "
                      f"vs default TTFT {_ratio(med['ttft']['transformers'], med['ttft'][name])}, decode "
                      f"{_ratio(med['decode'][name], med['decode']['transformers'])}; vs static TTFT "
                      f"{_ratio(med['ttft']['transformers static'], med['ttft'][name])}, decode "
                      f"{_ratio(med['decode'][name], med['decode']['transformers static'])}{tag}", flush=True)

        if args.profile:
            for name in ("tatlas", "transformers static"):
                profile(name, runs[name], args.new)

        runs.clear()  # free the models before the whole-process runs
        models.clear()
        if "whole" in args.modes and not args.gpu:
            names = [n for n in IMPLS if n in args.whole_impls.split(",")]
            spec = {"folder": str(folder), "inputs": str(Path(d) / "inputs.pt"), "new": args.new,
                    "threads": torch.get_num_threads()}
            results["whole"], same = whole_process(names, spec, ref[0].tolist(), args.process_runs, counted)
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
    ap.add_argument("--whole-impls", default=",".join(IMPLS), help="implementations run as whole processes")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    add_contend(ap)
    ap.add_argument("--compile", action="store_true", help="also time tatlas with a compiled decode step")
    ap.add_argument("--profile", action="store_true", help="torch.profiler tables of tatlas and transformers static")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny shapes, one round, < 60 s")
    ap.add_argument("--gpu", action="store_true", help="CUDA, --dtype, synchronised timings")
    ap.add_argument("--dtype", default="bf16", choices=("bf16", "fp16"), help="--gpu only")
    args = ap.parse_args()
    if args.gpu and not torch.cuda.is_available():
        raise SystemExit("bench_vlm --gpu: expected a CUDA device, got none")
    args.shape = args.shape or ("quick" if args.quick else "small")
    args.new = args.new or (16 if args.quick else 64)
    args.rounds = args.rounds or (1 if args.quick else 5)
    args.process_runs = args.process_runs or (1 if args.quick else 3)
    args.modes = args.modes or ("inproc" if args.gpu else "inproc,whole")
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
    with contended(args.contend):
        summary = []
        for i, case in enumerate(cases):
            if case not in CASES:
                raise SystemExit(f"bench_vlm: unknown case {case!r}; known: {', '.join(CASES)}")
            case_args = args
            if args.quick and i > 0 and "whole" in args.modes:  # keep the smoke run short
                case_args = argparse.Namespace(**{**vars(args), "modes": "inproc"})
            summary.append(bench_case(case, case_args, s, device, dtype, sync))
    print(f"\nSummary (tatlas / transformers, the better of its two caches; > 1: tatlas faster; {load_average()}):")
    print("| case | TTFT | decode | whole process | tokens equal |")
    print("|---|---|---|---|---|")
    for r in summary:
        cells = []
        if "inproc" in r:
            m = r["inproc"]
            cells += [_ratio(min(m["ttft"][n] for n in THEIRS), m["ttft"]["tatlas"]),
                      _ratio(m["decode"]["tatlas"], max(m["decode"][n] for n in THEIRS))]
        else:
            cells += ["", ""]
        w = r.get("whole", {})
        theirs = [w[n] for n in THEIRS if n in w]
        cells.append(_ratio(min(theirs), w["tatlas"]) if theirs and "tatlas" in w else "")
        print(f"| {r['case']} | {' | '.join(cells)} | {'yes' if r['counted'] else 'NO'} |")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
