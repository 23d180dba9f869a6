"""One GPU script: every row's GPU figure against its reference, in one run, one JSON and one table.

    python benchmarks/gpu.py [--rows decode,moe,clip,train,whisper,evoformer] [--out DIR]
    python benchmarks/gpu.py --dry-run        # CPU, tiny shapes: checks the script itself (CI runs it)

Rows (bfloat16 on the GPU; float32 and tiny shapes with ``--dry-run``):

- ``decode``: batch-1 decode of a Llama-3.2-1B-shaped model (random weights): tatlas eager and
  compiled vs transformers ``generate`` (dynamic and static cache), each as a fraction of the
  memory-bandwidth bound (weight bytes per step / read bandwidth measured here by a matrix-vector
  product over a 2 GB matrix).
- ``moe``: MoE layer forward + backward on the Mixtral and the fine-grained (DeepSeek-like) shapes:
  tatlas vs transformers ``grouped_mm`` (``bench_moe``), TFLOP/s and fraction of the bf16 matmul peak
  measured here.
- ``clip``: ViT-B/32 image and text towers, batch 256: tatlas vs transformers ``CLIPModel`` on the same
  weights (through tatlas' converter).
- ``train``: one training step (forward, backward, AdamW) of the Llama-3.2-1B shape at batch 8 x 2048
  tokens: tatlas vs transformers ``LlamaForCausalLM`` on the same weights, tokens/s and MFU
  (6 N + 12 L d T FLOPs per token against the measured peak).
- ``whisper``: large-v3 shape, batch 16 of 30-s windows: encoder and a teacher-forced 128-token
  decoder pass, tatlas vs transformers ``WhisperForConditionalGeneration``.
- ``evoformer``: the largest N_res one AlphaFold2-width Evoformer block holds (``bench_evoformer``).

A row that fails is recorded with its error and the others go on (the exit status is then 1).
Budget: about 8 minutes on an H100/H200. Writes ``gpu.json`` and ``gpu.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path

import torch
from _timing import best_time, decode_bytes, pick, read_bandwidth

ROWS = ("decode", "moe", "clip", "train", "whisper", "evoformer")


class Setting:
    """Where and how big: the real GPU run, or the CPU dry run with tiny shapes."""

    def __init__(self, dry: bool) -> None:
        self.dry = dry
        self.device = "cpu" if dry else "cuda"
        self.dtype = torch.float32 if dry else torch.bfloat16
        self.repeats = 1 if dry else 3

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def timed(self, fn, repeats: int | None = None) -> float:
        return best_time(fn, repeats or self.repeats, sync=self.sync)

    def peak_tflops(self) -> float:
        from bench_moe import peak_bf16_tflops

        if self.dry:  # a small float32 product: the CPU's own peak, only for the arithmetic's sake
            a = torch.randn(512, 512)
            return 2 * 512**3 / self.timed(lambda: a @ a, 3) / 1e12
        return peak_bf16_tflops(self.device)


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def row_decode(s: Setting) -> dict:
    from transformers import AutoModelForCausalLM

    import tatlas
    from tatlas.generate import GenerationConfig, generate
    from tatlas.models.llm.convert import to_hf

    preset, new, prompt_len = ("tiny", 8, 8) if s.dry else ("Llama-3.2-1B", 256, 32)
    torch.manual_seed(0)
    bw = read_bandwidth(0.25 if s.dry else 2.0, device=s.device)
    model = tatlas.create("llm", preset, max_positions=4096)
    with tempfile.TemporaryDirectory() as d:
        ref = AutoModelForCausalLM.from_pretrained(to_hf(model, d)).to(s.device, s.dtype).eval()
    model = model.to(s.device, s.dtype).eval()
    if s.device == "cpu":
        tatlas.optimize(model)
    bound = bw / decode_bytes(model)  # steps/s
    prompt = torch.randint(0, model.config.vocab_size, (1, prompt_len), device=s.device)
    hf = dict(attention_mask=torch.ones_like(prompt), max_new_tokens=new, min_new_tokens=new, do_sample=False,
              eos_token_id=None, pad_token_id=0)
    runs = {
        "tatlas": lambda: generate(model, prompt, GenerationConfig(max_new_tokens=new)),
        "transformers": lambda: ref.generate(prompt, **hf),
        "transformers static": lambda: ref.generate(prompt, cache_implementation="static", **hf),
    }
    if not s.dry:
        runs["tatlas compiled"] = lambda: generate(model, prompt, GenerationConfig(max_new_tokens=new, compile=True))
    with torch.inference_mode():
        tps = {k: new / s.timed(fn) for k, fn in runs.items()}
    best = max(v for k, v in tps.items() if k.startswith("tatlas"))
    return {
        "shape": preset, "bandwidth_GBps": round(bw / 1e9, 1), "bound_tok_s": round(bound, 1),
        "tok_s": {k: round(v, 1) for k, v in tps.items()},
        "fraction_of_bound": {k: float(f"{v / bound:.3g}") for k, v in tps.items()},
        "ratio_vs_transformers": _ratio(best, tps["transformers"]),
        "ratio_vs_transformers_static": _ratio(best, tps["transformers static"]),
        "headline": f"{best / bound:.0%} of the bandwidth bound; {_ratio(best, tps['transformers static'])}x "
                    f"transformers static",
    }


def row_moe(s: Setting) -> dict:
    from bench_moe import CPU_SHAPES, GPU_SHAPES, run

    peak = s.peak_tflops()
    shapes = [replace(sh, tokens=256) for sh in CPU_SHAPES] if s.dry else list(GPU_SHAPES)
    out: dict = {"peak_TFLOPs": round(peak, 1), "shapes": {}}
    for shape in shapes:
        best = run(shape, dtype=s.dtype, device=s.device, repeats=s.repeats, impls=("eager", "grouped_mm"))
        ours = best["tatlas"]
        entry = {"tokens_s": {k: round(shape.tokens / t) for k, t in best.items()},
                 "tatlas_TFLOPs": round(shape.flops() / ours / 1e12, 2),
                 "fraction_of_peak": round(shape.flops() / ours / 1e12 / peak, 3)}
        for ref in ("transformers eager", "transformers grouped_mm"):
            if ref in best:
                entry[f"ratio_vs_{ref.split()[1]}"] = _ratio(best[ref], ours)
        out["shapes"][shape.name] = entry
        if s.device == "cuda":
            torch.cuda.empty_cache()
    out["headline"] = "; ".join(f"{n}: {e.get('ratio_vs_grouped_mm', float('nan'))}x grouped_mm, "
                                f"{e['fraction_of_peak']:.0%} of peak" for n, e in out["shapes"].items())
    return out


def row_clip(s: Setting) -> dict:
    from transformers import CLIPModel

    import tatlas
    from tatlas.models.clip.convert import to_hf

    preset, batch = ("tiny", 2) if s.dry else ("ViT-B/32", 256)
    torch.manual_seed(0)
    ours = tatlas.create("clip", preset)
    with tempfile.TemporaryDirectory() as d:
        ref = CLIPModel.from_pretrained(to_hf(ours, d), attn_implementation="sdpa").to(s.device, s.dtype).eval()
    ours = ours.to(s.device, s.dtype).eval()
    if s.device == "cpu":
        tatlas.optimize(ours)
    c = ours.config
    gen = torch.Generator().manual_seed(0)
    size = c.vision.image_size
    images = torch.randn(batch, 3, size, size, generator=gen).to(s.device, s.dtype)
    texts = torch.randint(1, c.text.vocab_size - 1, (batch, c.text.context_length), generator=gen).to(s.device)
    runs = {"image": {"tatlas": lambda: ours.encode_image(images),
                      "transformers": lambda: ref.get_image_features(pixel_values=images).pooler_output},
            "text": {"tatlas": lambda: ours.encode_text(texts),
                     "transformers": lambda: ref.get_text_features(input_ids=texts).pooler_output}}
    out: dict = {"shape": f"{preset}, batch {batch}"}
    with torch.inference_mode():
        diff = (runs["image"]["tatlas"]().float() - runs["image"]["transformers"]().float()).abs().max().item()
        for kind, fns in runs.items():
            rate = {name: batch / s.timed(fn) for name, fn in fns.items()}
            out[kind] = {"per_s": {k: round(v, 1) for k, v in rate.items()},
                         "ratio_vs_transformers": _ratio(rate["tatlas"], rate["transformers"])}
    out["max_abs_image_embedding_diff"] = round(diff, 4)
    out["headline"] = (f"images {out['image']['ratio_vs_transformers']}x, texts {out['text']['ratio_vs_transformers']}x "
                       "transformers")
    return out


def row_train(s: Setting) -> dict:
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    import tatlas
    from tatlas.models.llm.convert import to_hf

    preset, batch, seq = ("tiny", 2, 32) if s.dry else ("Llama-3.2-1B", 8, 2048)
    torch.manual_seed(0)
    ours = tatlas.create("llm", preset, max_positions=seq)
    with tempfile.TemporaryDirectory() as d:
        ref = AutoModelForCausalLM.from_pretrained(to_hf(ours, d), attn_implementation="sdpa")
    c = ours.config
    tokens = torch.randint(0, c.vocab_size, (batch, seq + 1), device=s.device)
    x, y = tokens[:, :-1], tokens[:, 1:]

    def stepper(model, logits_of):
        model.to(s.device, s.dtype).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=s.device == "cuda")

        def step():
            loss = F.cross_entropy(logits_of(model, x).flatten(0, 1).float(), y.flatten())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step

    steps = {"tatlas": stepper(ours, lambda m, t: m(t)),
             "transformers": stepper(ref, lambda m, t: m(input_ids=t).logits)}
    n = sum(p.numel() for p in ours.parameters()) - (0 if c.tie_embeddings else ours.embed.weight.numel())
    flops_per_token = 6 * n + 12 * c.layers * c.dim * seq
    peak = s.peak_tflops()
    rate = {}
    for name, fn in steps.items():
        rate[name] = batch * seq / s.timed(fn, 2 if not s.dry else 1)
        if s.device == "cuda":
            torch.cuda.empty_cache()
    mfu = {k: round(v * flops_per_token / 1e12 / peak, 3) for k, v in rate.items()}
    return {"shape": f"{preset}, batch {batch} x {seq}", "tokens_s": {k: round(v) for k, v in rate.items()},
            "mfu": mfu, "ratio_vs_transformers": _ratio(rate["tatlas"], rate["transformers"]),
            "headline": f"{_ratio(rate['tatlas'], rate['transformers'])}x transformers, MFU {mfu['tatlas']:.0%}"}


def row_whisper(s: Setting) -> dict:
    from transformers import WhisperForConditionalGeneration

    import tatlas
    from tatlas.models.whisper.convert import to_hf

    preset, batch, steps = ("tiny", 2, 16) if s.dry else ("large-v3", 16, 128)
    torch.manual_seed(0)
    ours = tatlas.create("whisper", preset)
    with tempfile.TemporaryDirectory() as d:
        ref = WhisperForConditionalGeneration.from_pretrained(to_hf(ours, d), attn_implementation="sdpa")
    ours, ref = ours.to(s.device, s.dtype).eval(), ref.to(s.device, s.dtype).eval()
    if s.device == "cpu":
        tatlas.optimize(ours)
    c = ours.config
    mel = torch.randn(batch, c.mels, c.n_frames, device=s.device, dtype=s.dtype)
    tokens = torch.randint(0, c.vocab_size, (batch, steps), device=s.device)
    runs = {"tatlas": lambda: ours(tokens, mel),
            "transformers": lambda: ref(input_features=mel, decoder_input_ids=tokens).logits}
    with torch.inference_mode():
        diff = (runs["tatlas"]().float() - runs["transformers"]().float()).abs().max().item()
        rate = {k: batch / s.timed(fn) for k, fn in runs.items()}
    return {"shape": f"{preset}, batch {batch}, {steps} decoder tokens", "windows_s": {k: round(v, 2) for k, v in rate.items()},
            "max_abs_logit_diff": round(diff, 4), "ratio_vs_transformers": _ratio(rate["tatlas"], rate["transformers"]),
            "headline": f"{_ratio(rate['tatlas'], rate['transformers'])}x transformers"}


def row_evoformer(s: Setting) -> dict:
    if s.dry:  # the block runs; the memory search needs CUDA's allocator statistics
        from tatlas.models.evoformer.config import BlockConfig
        from tatlas.models.evoformer.trunk import evoformer_block

        block = evoformer_block(32, 16, BlockConfig()).eval()
        n_seq, n = 4, 16
        args = (torch.randn(n_seq, n, 32), torch.randn(n, n, 16), torch.ones(n_seq, n), torch.ones(n, n))
        with torch.no_grad():
            sec = s.timed(lambda: block(*args, chunk_size=4))
        return {"largest_n_res": None, "block_seconds_n16": round(sec, 4), "headline": "dry run: one block ran"}
    from bench_evoformer import gpu as evoformer_gpu

    found = evoformer_gpu(argparse.Namespace(gpu_seqs=128, gpu_chunk=4, gpu_step=256, gpu_max_res=8192))
    n, peak, sec = found if found else (None, None, None)
    return {"largest_n_res": n, "peak_GiB": peak, "block_seconds": sec, "headline": f"largest N_res {n}"}


def table(results: dict) -> str:
    lines = ["| row | figure | seconds |", "|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r.get('headline', 'FAILED: ' + r.get('error', '?'))} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--out", default=".", help="folder for gpu.json and gpu.md")
    ap.add_argument("--dry-run", action="store_true", help="CPU, float32, tiny shapes: checks the script only")
    args = ap.parse_args()
    rows = pick("gpu.py", args.rows, ROWS)
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("gpu.py: expected a CUDA device, got none (--dry-run checks the script on the CPU)")
    s = Setting(args.dry_run)
    device = "CPU (dry run)" if s.dry else torch.cuda.get_device_name()
    meta = {"device": device, "torch": torch.__version__, "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M"), "dtype": str(s.dtype).removeprefix("torch.")}
    print(f"{device}, torch {torch.__version__}, {meta['dtype']}", flush=True)
    results: dict[str, dict] = {}
    failed = False
    start = time.perf_counter()
    for name in rows:
        t = time.perf_counter()
        try:
            results[name] = globals()[f"row_{name}"](s)
        except Exception as e:  # noqa: BLE001 - one failing row must not cost the others' figures
            failed = True
            results[name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                             "traceback": traceback.format_exc()}
        results[name]["seconds"] = round(time.perf_counter() - t, 1)
        print(f"{name}: {results[name].get('headline') or results[name]['error']} "
              f"({results[name]['seconds']:.0f} s)", flush=True)
        if s.device == "cuda":
            torch.cuda.empty_cache()
    meta["total_seconds"] = round(time.perf_counter() - start, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps({"meta": meta, "rows": results}, indent=1, default=str) + "\n")
    md = f"{device}, torch {torch.__version__}, {meta['date']}, total {meta['total_seconds']:.0f} s\n\n{table(results)}\n"
    (out / "gpu.md").write_text(md)
    print(md)
    if failed or any(isinstance(v, float) and math.isnan(v) for r in results.values() for v in r.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
