"""Batch-1 decode speed of a GGUF model (SmolLM2-135M-Instruct Q4_1 by default): tatlas float32
(de-quantised at load), tatlas quantised (the file's Q4_1/Q8_0 blocks run as int4/int8,
``tatlas.models.llm.gguf_quant.quantize_gguf_``), transformers float32 loading the same file
(``gguf_file=``), and llama.cpp (``llama-cpp-python``, in its own venv, ``--llama-python``) when given.

    python benchmarks/bench_gguf.py [--model PATH] [--new 64] [--rounds 5] [--threads 2]
        [--llama-python /tmp/llvenv/bin/python] [--compile] [--contend N] [--impls ...]

``--compile`` adds tatlas quantised with ``GenerationConfig(compile=True)`` (compiled once during the
warm-up, ~1 min on 2 cores). One chat prompt (the file's template), greedy, ``--new`` new tokens with no stop token, static cache
for tatlas. Per round and implementation: the wall time of generating 1 token (prefill + first) and
of ``--new`` tokens; decode tokens/s = (new - 1) / (T_new - T_1). Implementations are interleaved
round by round (llama.cpp is a child process kept alive and driven one round at a time), the median
is printed, with ratios to tatlas float32 and to transformers. Greedy tokens of every implementation
are compared with tatlas float32's (leading tokens that agree).

Bytes read per decoded token = the weight bytes one decode step touches (every matrix's stored
bytes, the tied output projection once, one embedding row); the machine's memory bandwidth is
measured here as the best of several copies of a 256 MiB tensor (read + write counted), with the
same threads, so ``bytes/token x tokens/s / bandwidth`` says how close each one runs to memory speed.
``--contend N``: N Python processes spinning (``while True: pass``) during the measurement.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

import torch
from _timing import add_contend, contended, load_average

PROMPT = "Write a short poem about the sea, then explain what a transformer is in two sentences."
IMPLS = ("tatlas f32", "tatlas quant", "transformers f32", "llama.cpp")

# the llama.cpp child: reads "run" lines, answers one JSON line per round
_LLAMA_CHILD = r"""
import json, sys, time
from llama_cpp import Llama
args = json.loads(sys.argv[1])
llm = Llama(model_path=args["model"], n_threads=args["threads"], n_threads_batch=args["threads"], n_ctx=512,
            n_batch=512, verbose=False, logits_all=False)
prompt = args["prompt"]
def gen(n):
    llm.reset()
    t = time.perf_counter()
    llm.eval(prompt)
    out = []
    for _ in range(n):
        tok = llm.sample(top_k=1, temp=0.0)
        out.append(int(tok))
        llm.eval([tok])
    return time.perf_counter() - t, out
gen(4)
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    t1, _ = gen(1)
    tn, toks = gen(args["new"])
    print(json.dumps({"t1": t1, "tn": tn, "tokens": toks}), flush=True)
"""


def bandwidth(repeats: int = 5) -> float:
    """Bytes/s of a 256 MiB float32 copy (read + write), best of ``repeats``."""
    src = torch.ones(64 << 20)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t)
    return 2 * src.numel() * src.element_size() / best


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of weights one decode step reads: every parameter (a tied one once) and the quantised
    modules' blocks (those ``matvec.c`` reads for one row where the module keeps them, else its packed
    buffers), the embedding table counted as one row (a lookup) unless it is tied."""
    from tatlas.nn.quant_blocks import GroupInt8Linear, Int4Linear, blocks_of

    seen, total = set(), 0
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            continue
        tensors = list(module.parameters(recurse=False))
        if isinstance(module, (Int4Linear, GroupInt8Linear)):
            tensors += list(blocks_of(module) or module.buffers(recurse=False))
        for t in tensors:
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else model.embed
    if id(embed.weight) not in seen:
        total += embed.weight[0].numel() * embed.weight.element_size()
    return total


def gguf_bytes(f) -> int:
    """llama.cpp's bytes per token: every stored tensor (the tied embedding read once, as the output)."""
    return sum(int(t.raw.nbytes) for t in f.tensors.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="a GGUF file (default: the installed SmolLM2-135M-Instruct Q4_1)")
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--impls", default=",".join(IMPLS))
    ap.add_argument("--llama-python", default=None, help="a Python with llama-cpp-python (its own venv)")
    ap.add_argument("--compile", action="store_true", help="also tatlas quantised with a compiled decode step")
    add_contend(ap)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import tatlas
    from tatlas.generate import GenerationConfig, generate
    from tatlas.io.gguf import read_gguf
    from tatlas.models.llm.gguf import gguf_tokenizer
    from tatlas.models.llm.gguf_quant import quantize_gguf_

    if args.model is None:
        from tatlas.jobs.named import resolve_model

        args.model = str(resolve_model("smollm2"))
    path = Path(args.model)
    f = read_gguf(path)
    tok = gguf_tokenizer(f)
    prompt = tok.encode(tok.render_chat([{"role": "user", "content": PROMPT}]))
    impls = [i for i in args.impls.split(",") if i != "llama.cpp" or args.llama_python]
    print(f"{path.name}: torch {torch.__version__}, threads {args.threads}, prompt {len(prompt)} tokens, "
          f"{args.new} new, {args.rounds} rounds; {load_average()}", flush=True)

    runs, sizes, children = {}, {}, {}
    with torch.inference_mode():
        if "tatlas f32" in impls:
            ours = tatlas.load(path, fast=True).eval()
            sizes["tatlas f32"] = weight_bytes(ours)
            runs["tatlas f32"] = lambda n, m=ours: generate(m, [prompt], GenerationConfig(max_new_tokens=n)).tokens[0]
        if "tatlas quant" in impls:
            quant = quantize_gguf_(tatlas.load(path, fast=True).eval(), f)
            sizes["tatlas quant"] = weight_bytes(quant)
            runs["tatlas quant"] = lambda n, m=quant: generate(m, [prompt], GenerationConfig(max_new_tokens=n)).tokens[0]
            if args.compile:
                impls.insert(impls.index("tatlas quant") + 1, "tatlas quant compiled")
                sizes["tatlas quant compiled"] = sizes["tatlas quant"]
                runs["tatlas quant compiled"] = lambda n, m=quant: generate(
                    m, [prompt], GenerationConfig(max_new_tokens=n, compile=True)).tokens[0]
        if "transformers f32" in impls:
            from transformers import AutoModelForCausalLM

            ref = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
            sizes["transformers f32"] = weight_bytes(ref)
            ids = torch.tensor([prompt])

            def hf(n: int, m=ref) -> torch.Tensor:
                out = m.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                                 do_sample=False, eos_token_id=None, pad_token_id=0)
                return out[0, len(prompt):]
            runs["transformers f32"] = hf
    if "llama.cpp" in impls:
        child = subprocess.Popen(
            [args.llama_python, "-c", _LLAMA_CHILD, json.dumps({"model": str(path), "threads": args.threads,
                                                                "prompt": prompt, "new": args.new})],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if json.loads(child.stdout.readline() or '{"ready": false}').get("ready"):
            children["llama.cpp"] = child
            sizes["llama.cpp"] = gguf_bytes(f)
        else:
            print("llama.cpp: the child did not start", flush=True)
            impls.remove("llama.cpp")

    bw = bandwidth()
    print(f"memory bandwidth (256 MiB copy, read + write): {bw / 1e9:.1f} GB/s", flush=True)
    t1: dict[str, list[float]] = {i: [] for i in impls}
    tn: dict[str, list[float]] = {i: [] for i in impls}
    tokens: dict[str, list[int]] = {}
    with contended(args.contend), torch.inference_mode():
        for name, fn in runs.items():  # warm-up (and compilation) at both lengths timed
            fn(1)
            fn(args.new)
        for _ in range(args.rounds):
            for name in impls:
                if name in children:
                    c = children[name]
                    c.stdin.write("run\n")
                    c.stdin.flush()
                    r = json.loads(c.stdout.readline())
                    t1[name].append(r["t1"])
                    tn[name].append(r["tn"])
                    tokens[name] = r["tokens"]
                    continue
                t = time.perf_counter()
                runs[name](1)
                t1[name].append(time.perf_counter() - t)
                t = time.perf_counter()
                tokens[name] = [int(x) for x in runs[name](args.new)]
                tn[name].append(time.perf_counter() - t)
        print(f"done; {load_average()}", flush=True)
    for c in children.values():
        c.stdin.close()
        c.wait()

    rate = {n: (args.new - 1) / (statistics.median(tn[n]) - statistics.median(t1[n])) for n in impls}
    base = tokens.get("tatlas f32")
    for n in impls:
        agree = "" if base is None else \
            f", greedy tokens agree with tatlas f32 for {next((i for i, (a, b) in enumerate(zip(base, tokens[n])) if a != b), len(base))}/{len(base)}"
        frac = sizes[n] * rate[n] / bw
        print(f"{n:21s} decode {rate[n]:6.1f} tok/s (first token {statistics.median(t1[n]) * 1e3:6.1f} ms, "
              f"{args.new} tokens {statistics.median(tn[n]):5.2f} s); {sizes[n] / 1e6:6.1f} MB/token -> "
              f"{sizes[n] * rate[n] / 1e9:5.2f} GB/s = {frac:.0%} of the copy bandwidth{agree}")
    for a, b in (("tatlas quant", "tatlas f32"), ("tatlas quant", "transformers f32"), ("tatlas f32", "transformers f32"),
                 ("tatlas quant", "llama.cpp"), ("tatlas quant compiled", "tatlas quant"),
                 ("tatlas quant compiled", "llama.cpp")):
        if a in rate and b in rate:
            print(f"ratio {a} / {b}: {rate[a] / rate[b]:.2f}x")


if __name__ == "__main__":
    main()
