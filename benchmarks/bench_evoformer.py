"""Evoformer (AlphaFold2 Alg. 6) speed and memory: tatlas' pair-stack modules against transformers'
ESMFold modules on the same weights, one whole ``EvoformerBlock``, and the peak memory of the pair
stack with and without chunking as N_res grows.

    python benchmarks/bench_evoformer.py            # CPU, float32 (a few minutes on 2 cores)
    python benchmarks/bench_evoformer.py --quick    # smoke run: small shapes, few points (< 30 s)
    python benchmarks/bench_evoformer.py --gpu      # CUDA, bfloat16, AlphaFold2 widths: largest N_res

Speed (CPU, float32, ``--threads`` threads): at N_res = 128, c_z = 64 (4 heads of 16, triangle
channels = c_z, because ESMFold's ``EsmFoldTriangleMultiplicativeUpdate`` has no separate width),
each of the pair updates of Alg. 6 lines 6-10 (triangle multiplication outgoing / incoming, Alg.
11-12; triangle attention starting / ending node, Alg. 13-14; the pair transition, Alg. 15, whose
ESMFold twin ``EsmFoldResidueMLP`` adds its residual inside) and the five chained with their residual
adds, timed against transformers' ``modeling_esmfold`` modules with the weights copied across and the
outputs asserted ``allclose`` (atol = rtol = 1e-4) first, on a pair mask with ~10% of its entries
masked. Forward runs under ``torch.no_grad``; forward + backward takes the gradient of ``sum(out * g)``
with respect to the input and every weight. Times are the best of ``--rounds`` x ``--repeats`` runs,
the implementations interleaved round by round (``_timing.best_time`` per round) so that a busy spell
of a shared machine hits all of them alike. Ratio = transformers / tatlas (> 1: tatlas faster). Then
the absolute time of one ``EvoformerBlock`` (N_seq 64, N_res 128, c_m 64, c_z 32, 8 MSA heads, 4 pair
heads, transition factor 4, outer channels 32, triangle channels 32), forward and forward + backward.

Memory (CPU, float32, inference under ``torch.no_grad``): the ``PairStack`` (c_z = 32, 4 heads,
triangle channels 32, factor 4) on N_res = 64, 128, 256, ... (doubling), unchunked and with
``chunk_size`` = ``--chunk`` (4), each point in a fresh process (this script with a hidden ``--child``)
that reports its peak RSS (``VmHWM``: ``getrusage(RUSAGE_SELF).ru_maxrss`` without the floor that a
spawned process inherits from its parent, see ``_maxrss_kb``) minus the RSS after imports and building
the module (the pair tensor itself counts), and the seconds of its one forward. The children run with
``MALLOC_MMAP_THRESHOLD_=65536``, so that glibc hands every freed tensor back to the OS at once and the
peak RSS follows the live tensors (with glibc's default, its cached heap added up to ~0.9 GB of noise:
chunk 4 at N_res 512 read 1.17 GB against 0.27 GB). A series stops at the first point whose predicted
peak (the last peak times its last growth, at least 4x per doubling) exceeds ``--mem-cap-gb`` (8) or
whose predicted time (8x the last: the triangle updates are O(N_res^3)) exceeds ``--time-cap-s``
(150); every child also runs under an address-space limit of the cap, so a wrong prediction fails the
point instead of the machine.

The goal -- "the chunked pair stack reaches >= 4x the N_res of the unchunked one in the same memory" --
is read against budgets B = the unchunked peak at each of its points: the largest chunked N_res whose
peak is within B, over that unchunked N_res (a B between the unchunked points would credit chunking
with a whole doubling the unchunked side cannot show, only because N_res doubles). Where the chunked series stopped at a cap while still
within B, the measured ratio is a lower bound (``>=``) and an extrapolation from the last chunked
point at peak ~ N_res^2 (every O(N_res^3) term is chunked away) is printed beside it. The PASS/FAIL
line is for the largest B, the unchunked peak at its largest N_res that ran (or for ``--budget-gb``,
where given). Ratios measured move in powers of 2, since N_res doubles. Last, one child per mode at N_res =
``--breakdown-res`` (256) runs the five updates one by one on the same input, resetting the peak
(``/proc/self/clear_refs``) before each, to show which one sets the peak.

``--quick``: the speed rows at N_res 32 and the block at N_seq 16, N_res 32, one round of one call;
memory at N_res 64 and 128, the two series side by side (so their seconds mean nothing); no breakdown.

``--gpu``: CUDA, bfloat16, one ``EvoformerBlock`` at AlphaFold2's widths (c_m 256, c_z 128, BlockConfig
defaults: 8 MSA heads, 4 pair heads, 128 triangle channels), N_seq = ``--gpu-seqs`` (128), inference
with ``chunk_size`` = ``--gpu-chunk`` (4): N_res doubles from 256 until it runs out of memory
(``torch.cuda.OutOfMemoryError``), then bisects to ``--gpu-step`` residues; prints the largest N_res
that fits with its peak memory and time, beside OpenFold's public anchor (about 4,000 residues, the
whole model, on one A100 80 GB, with chunking and low-memory attention). Exits with a one-line error
where no CUDA device is present.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from _timing import add_contend, best_time, contended

OPENFOLD_ANCHOR = "OpenFold: ~4,000 residues (whole model, inference) on one A100 80 GB"
MODULES = ("tri_mul_out", "tri_mul_in", "tri_att_start", "tri_att_end", "transition")


# ------------------------------------------------------------------------------ speed against ESMFold


@dataclass(frozen=True)
class SpeedShape:
    n_res: int = 128
    pair_dim: int = 64
    heads: int = 4
    factor: int = 4

    def __str__(self) -> str:
        return (f"N_res {self.n_res}, c_z {self.pair_dim}, {self.heads} heads of {self.pair_dim // self.heads}, "
                f"triangle channels {self.pair_dim}, transition factor {self.factor}")


@dataclass(frozen=True)
class BlockShape:
    n_seq: int = 64
    n_res: int = 128
    msa_dim: int = 64
    pair_dim: int = 32

    def __str__(self) -> str:
        return f"N_seq {self.n_seq}, N_res {self.n_res}, c_m {self.msa_dim}, c_z {self.pair_dim}"


def _perturb(module: torch.nn.Module, gen: torch.Generator) -> None:
    """Random weights for every parameter (ESMFold starts its gates and final layers at zero, which
    would make the comparison trivial): matrices at 1/sqrt(fan-in), vectors around their init."""
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() > 1:
                p.normal_(0.0, p.shape[-1] ** -0.5, generator=gen)
            else:
                p.add_(torch.randn(p.shape, generator=gen) * 0.3)


def _copy(theirs: torch.nn.Module, ours: torch.nn.Module, names: dict[str, str]) -> None:
    """ESMFold's state dict into ours, module names mapped theirs -> ours (as in
    ``tests/test_parity_evoformer.py``); strict, so a name no rule maps is an error."""
    state = {}
    for key, value in theirs.state_dict().items():
        module, leaf = key.rsplit(".", 1)
        state[f"{names[module]}.{leaf}"] = value
    ours.load_state_dict(state, strict=True)


def _tri_mul_names(outgoing: bool) -> dict[str, str]:
    # ESMFold's incoming update sums a[k, i] b[k, j], AlphaFold2's (ours) left[k, j] right[k, i]: the
    # same module with its two projections' roles swapped
    left, right = ("left", "right") if outgoing else ("right", "left")
    return {"linear_a_p": left, "linear_a_g": f"{left}_gate", "linear_b_p": right, "linear_b_g": f"{right}_gate",
            "linear_g": "gate", "linear_z": "out", "layer_norm_in": "norm_in", "layer_norm_out": "norm_out"}


TRI_ATT_NAMES = {"layer_norm": "norm", "linear": "pair_bias", "mha.linear_q": "attn.q", "mha.linear_k": "attn.k",
                 "mha.linear_v": "attn.v", "mha.linear_o": "attn.out", "mha.linear_g": "attn.gate"}
TRANSITION_NAMES = {"mlp.0": "norm", "mlp.1": "fc1", "mlp.3": "fc2"}


class _EsmPairStack(torch.nn.Module):
    """ESMFold's pair updates chained as ``EsmFoldTriangularSelfAttentionBlock.forward`` chains them
    (its transition adds its own residual)."""

    def __init__(self, parts: dict[str, torch.nn.Module]) -> None:
        super().__init__()
        self.parts = torch.nn.ModuleDict(parts)

    def forward(self, z, mask):
        p = self.parts
        z = z + p["tri_mul_out"](z, mask=mask)
        z = z + p["tri_mul_in"](z, mask=mask)
        z = z + p["tri_att_start"](z, mask=mask)
        z = z + p["tri_att_end"](z, mask=mask)
        return p["transition"](z)


def build_pair_pairs(shape: SpeedShape, gen: torch.Generator):
    """Rows ``(label, tatlas fn(z, mask), ESMFold fn(z, mask))`` for each pair update and the whole pair
    stack, ESMFold's (perturbed) weights copied into ours; and both stacks (for their parameters)."""
    from types import SimpleNamespace

    from transformers.models.esm.modeling_esmfold import (
        EsmFoldResidueMLP,
        EsmFoldTriangleAttention,
        EsmFoldTriangleMultiplicativeUpdate,
    )

    from tatlas.models.evoformer import trunk

    c, h = shape.pair_dim, shape.heads
    theirs = {
        "tri_mul_out": EsmFoldTriangleMultiplicativeUpdate(SimpleNamespace(pairwise_state_dim=c), _outgoing=True),
        "tri_mul_in": EsmFoldTriangleMultiplicativeUpdate(SimpleNamespace(pairwise_state_dim=c), _outgoing=False),
        "tri_att_start": EsmFoldTriangleAttention(c, c // h, h, starting=True),
        "tri_att_end": EsmFoldTriangleAttention(c, c // h, h, starting=False),
        "transition": EsmFoldResidueMLP(c, shape.factor * c),
    }
    stack = trunk.PairStack(pair_dim=c, heads=h, channels=c, factor=shape.factor, dropout=0.0).eval()
    names = {"tri_mul_out": _tri_mul_names(True), "tri_mul_in": _tri_mul_names(False),
             "tri_att_start": TRI_ATT_NAMES, "tri_att_end": TRI_ATT_NAMES, "transition": TRANSITION_NAMES}
    for key, module in theirs.items():
        module.eval()
        _perturb(module, gen)
        _copy(module, getattr(stack, key), names[key])
    ref_stack = _EsmPairStack(theirs).eval()
    rows = [(key, _ours_call(getattr(stack, key)), _esm_call(theirs[key])) for key in MODULES[:4]]
    rows.append(("transition (+ residual)", lambda z, m: z + stack.transition(z),
                 lambda z, m: theirs["transition"](z)))
    rows.append(("pair stack (all five)", lambda z, m: stack(z, m), lambda z, m: ref_stack(z, m)))
    return rows, stack, ref_stack


def _ours_call(module):
    return lambda z, m: module(z, m)


def _esm_call(module):
    return lambda z, m: module(z, mask=m)


def _fwd_bwd(fn, z, m, g, params) -> None:
    for p in params:
        p.grad = None
    z.grad = None
    (fn(z, m) * g).sum().backward()


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, repeats: int) -> dict[str, float]:
    """Best seconds of each of ``fns`` over ``rounds`` rounds of ``best_time(fn, repeats)``, the
    functions taking turns within every round."""
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            best[k] = min(best[k], best_time(fn, repeats))
    return best


def speed(args) -> None:
    shape = SpeedShape(n_res=32) if args.quick else SpeedShape()
    gen = torch.Generator().manual_seed(0)
    rows, stack, ref_stack = build_pair_pairs(shape, gen)
    r, c = shape.n_res, shape.pair_dim
    z = torch.randn(1, r, r, c, generator=gen)
    m = (torch.rand(1, r, r, generator=gen) > 0.1).float()
    g = torch.randn(1, r, r, c, generator=gen)
    params = list(stack.parameters()) + list(ref_stack.parameters())
    print(f"Pair updates vs transformers' ESMFold modules: {shape}, batch 1, float32; "
          f"best of {args.rounds} x {args.repeats} interleaved")
    print(f"  {'module':26s} {'tatlas fwd':>11s} {'ESMFold fwd':>12s} {'ratio':>6s}   "
          f"{'tatlas f+b':>11s} {'ESMFold f+b':>12s} {'ratio':>6s}")
    for label, ours, theirs in rows:
        fwd, both = _time_pair(ours, theirs, z, m, g, params, args)
        print(f"  {label:26s} {fwd['ours'] * 1e3:8.1f} ms {fwd['theirs'] * 1e3:9.1f} ms {fwd['theirs'] / fwd['ours']:5.2f}x"
              f"   {both['ours'] * 1e3:8.1f} ms {both['theirs'] * 1e3:9.1f} ms {both['theirs'] / both['ours']:5.2f}x")


def _time_pair(ours, theirs, z, m, g, params, args) -> tuple[dict[str, float], dict[str, float]]:
    """Outputs asserted close, then (forward, forward + backward) best seconds of each."""
    with torch.no_grad():
        torch.testing.assert_close(ours(z, m), theirs(z, m), atol=1e-4, rtol=1e-4)
        fwd = interleaved({"ours": lambda: ours(z, m), "theirs": lambda: theirs(z, m)}, args.rounds, args.repeats)
    zg = z.clone().requires_grad_()
    both = interleaved({"ours": lambda: _fwd_bwd(ours, zg, m, g, params),
                        "theirs": lambda: _fwd_bwd(theirs, zg, m, g, params)}, args.rounds, args.repeats)
    return fwd, both


def block_time(args) -> None:
    from tatlas.models.evoformer.config import BlockConfig
    from tatlas.models.evoformer.trunk import evoformer_block

    shape = BlockShape(n_seq=16, n_res=32) if args.quick else BlockShape()
    cfg = BlockConfig(msa_heads=8, pair_heads=4, transition_factor=4, outer_channels=32,
                      triangle_channels=shape.pair_dim)
    torch.manual_seed(0)
    block = evoformer_block(shape.msa_dim, shape.pair_dim, cfg).eval()  # eval: no dropout
    msa = torch.randn(shape.n_seq, shape.n_res, shape.msa_dim)
    pair = torch.randn(shape.n_res, shape.n_res, shape.pair_dim)
    msa_mask, pair_mask = torch.ones(shape.n_seq, shape.n_res), torch.ones(shape.n_res, shape.n_res)

    def fwd():
        with torch.no_grad():
            block(msa, pair, msa_mask, pair_mask)

    m_in, p_in = msa.clone().requires_grad_(), pair.clone().requires_grad_()

    def fwd_bwd():
        for p in block.parameters():
            p.grad = None
        m_out, p_out = block(m_in, p_in, msa_mask, pair_mask)
        (m_out.sum() + p_out.sum()).backward()

    t = interleaved({"fwd": fwd, "fwd_bwd": fwd_bwd}, args.rounds, args.repeats)
    print(f"EvoformerBlock ({shape}; 8 MSA heads, 4 pair heads, factor 4, outer 32, triangle {shape.pair_dim}), "
          f"float32: forward {t['fwd'] * 1e3:.1f} ms, forward + backward {t['fwd_bwd'] * 1e3:.1f} ms")


# ------------------------------------------------------------------------------ memory vs N_res (children)


def _rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _maxrss_kb() -> int:
    """The process's peak RSS in kB: ``VmHWM``, which is ``getrusage(RUSAGE_SELF).ru_maxrss`` without
    the floor a spawned process inherits: Linux keeps the spawning process's RSS at ``exec`` as the
    child's ``ru_maxrss`` floor, and ``clear_refs`` does not lower it (measured: the parent's ~420 MB
    after the speed part read as a constant ~190 MB peak at every small N_res)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _vm_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE") // 1024


def child(spec: dict) -> dict:
    """One memory point, in its own process: the pair stack's forward on a fresh pair of N_res ``n``;
    ``breakdown``: the five updates one by one, the peak reset before each."""
    torch.set_num_threads(spec["threads"])
    from tatlas.models.evoformer import trunk

    torch.manual_seed(0)
    stack = trunk.PairStack(pair_dim=spec["pair_dim"], heads=spec["heads"], channels=spec["pair_dim"],
                            factor=4, dropout=0.0).eval()
    n, chunk = spec["n_res"], spec["chunk"]
    # a throwaway forward at a tiny size: lazily loaded kernels and thread pools are in the baseline
    with torch.no_grad():
        stack(torch.zeros(8, 8, spec["pair_dim"]), torch.ones(8, 8), chunk_size=chunk)
    base = _rss_kb()
    resource.setrlimit(resource.RLIMIT_AS, (_vm_kb() * 1024 + int(spec["cap_gb"] * 2**30),) * 2)
    if not spec.get("breakdown"):
        _reset_peak()  # the high-water mark of imports and build is not this point's
        t = time.perf_counter()
        with torch.no_grad():
            pair = torch.randn(n, n, spec["pair_dim"])
            mask = torch.ones(n, n)
            out = stack(pair, mask, chunk_size=chunk)
        seconds = time.perf_counter() - t
        del out
        return {"peak_kb": _maxrss_kb() - base, "seconds": seconds}
    with torch.no_grad():
        pair, mask = torch.randn(n, n, spec["pair_dim"]), torch.ones(n, n)
        held = _rss_kb() - base  # the inputs
        calls = {"tri_mul_out": lambda: stack.tri_mul_out(pair, mask, chunk_size=chunk),
                 "tri_mul_in": lambda: stack.tri_mul_in(pair, mask, chunk_size=chunk),
                 "tri_att_start": lambda: stack.tri_att_start(pair, mask, chunk_size=chunk),
                 "tri_att_end": lambda: stack.tri_att_end(pair, mask, chunk_size=chunk),
                 "transition": lambda: stack.transition(pair, chunk_size=chunk)}
        peaks = {}
        for name, call in calls.items():
            _reset_peak()
            before = _rss_kb()
            out = call()
            peaks[name] = _maxrss_kb() - before
            del out
    return {"inputs_kb": held, "module_peak_kb": peaks}


def _reset_peak() -> None:
    """Reset the process's peak RSS (``VmHWM``) to the current RSS (Linux ``clear_refs``)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def run_child(spec: dict, timeout: float) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)]
    # glibc: every allocation of >= 64 KiB its own mapping, unmapped when freed (see the docstring)
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]), MALLOC_MMAP_THRESHOLD_="65536")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s"}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": "out of memory" if "alloc" in tail.lower() or "memory" in tail.lower() else tail[:80]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def series(args, chunk: int | None) -> list[tuple[int, dict]]:
    """Peak memory and seconds for N_res = 64, 128, ... until a cap is predicted to be exceeded."""
    points: list[tuple[int, dict]] = []
    n = 64
    while n <= args.max_res:
        ok = [p for _, p in points if "peak_kb" in p]
        if ok:
            growth = max(4.0, ok[-1]["peak_kb"] / ok[-2]["peak_kb"]) if len(ok) > 1 else 4.0
            if len(ok) > 1 and ok[-2]["peak_kb"] < 50_000:  # tiny peaks are mostly noise: assume
                growth = 8.0 if chunk is None else 4.0  # O(N_res^3) / O(N_res^2)
            predicted_gb, predicted_s = ok[-1]["peak_kb"] * growth / 2**20, ok[-1]["seconds"] * 8
            if predicted_gb > args.mem_cap_gb:
                points.append((n, {"skipped": f"predicted {predicted_gb:.1f} GB > {args.mem_cap_gb:g} GB cap"}))
                break
            if predicted_s > args.time_cap_s:
                points.append((n, {"skipped": f"predicted {predicted_s:.0f} s > {args.time_cap_s:g} s cap"}))
                break
        spec = {"n_res": n, "chunk": chunk, "pair_dim": args.mem_pair_dim, "heads": args.mem_heads,
                "threads": args.threads, "cap_gb": args.mem_cap_gb}
        result = run_child(spec, timeout=3 * args.time_cap_s + 30)
        points.append((n, result))
        label = "unchunked" if chunk is None else f"chunk {chunk}"
        if "error" in result:
            print(f"  {label:9s} N_res {n:5d}: failed ({result['error']})", flush=True)
            break
        print(f"  {label:9s} N_res {n:5d}: peak {result['peak_kb'] / 1024:8.1f} MB, {result['seconds']:7.2f} s",
              flush=True)
        n *= 2
    return points


def _cell(p: dict | None) -> tuple[str, str]:
    if p is None:
        return "", ""
    if "peak_kb" in p:
        return f"{p['peak_kb'] / 1024:,.0f}", f"{p['seconds']:.2f}"
    return ("skipped: " + p["skipped"]) if "skipped" in p else ("failed: " + p["error"]), ""


def memory(args) -> None:
    if args.quick:
        args.max_res = min(args.max_res, 128)
    print(f"Pair stack peak memory, inference, float32: c_z {args.mem_pair_dim}, {args.mem_heads} heads, "
          f"triangle channels {args.mem_pair_dim}, factor 4; caps {args.mem_cap_gb:g} GB and "
          f"{args.time_cap_s:g} s per point; one process per point", flush=True)
    if args.quick:  # a smoke run: the two series side by side (their seconds are then not comparable)
        with ThreadPoolExecutor(2) as pool:
            plain_run, chunked_run = pool.submit(series, args, None), pool.submit(series, args, args.chunk)
            plain, chunked = dict(plain_run.result()), dict(chunked_run.result())
    else:
        plain, chunked = dict(series(args, None)), dict(series(args, args.chunk))
    print(f"  | N_res | unchunked peak MB | unchunked s | chunk {args.chunk} peak MB | chunk {args.chunk} s |")
    print("  |---|---|---|---|---|")
    for n in sorted(set(plain) | set(chunked)):
        (pm, ps), (cm, cs) = _cell(plain.get(n)), _cell(chunked.get(n))
        print(f"  | {n} | {pm} | {ps} | {cm} | {cs} |")
    ran_plain = {n: p["peak_kb"] for n, p in plain.items() if "peak_kb" in p}
    ran_chunked = {n: p["peak_kb"] for n, p in chunked.items() if "peak_kb" in p}
    if not ran_plain or not ran_chunked:
        print("  4x N_res goal: no result (a series ran no point)")
        return
    # every unchunked point's peak as a budget: how far the chunked series reaches within it, measured
    # (">=" where the chunked series stopped at a cap while still inside it) and extrapolated from its
    # last point at peak ~ N_res^2 (what is left once the O(N_res^3) attention terms are chunked away)
    top, top_kb = max(ran_chunked), ran_chunked[max(ran_chunked)]
    print(f"  | budget B | unchunked N_res within B | chunk {args.chunk} N_res within B (measured) | ratio "
          f"| chunk {args.chunk} N_res within B, extrapolated ~N_res^2 | ratio |")
    print("  |---|---|---|---|---|---|")
    budgets = [(n, kb) for n, kb in sorted(ran_plain.items()) if kb >= 50 * 1024]  # below 50 MB: noise
    if args.budget_gb:
        budgets.append((None, args.budget_gb * 2**20))
    verdict_line = ""
    for n_plain, budget_kb in budgets:
        source = f"the unchunked peak at N_res {n_plain}" if n_plain else "--budget-gb"
        if n_plain is None:
            within = [n for n, kb in ran_plain.items() if kb <= budget_kb]
            if not within:
                continue
            n_plain = max(within)
        within = [n for n, kb in ran_chunked.items() if kb <= budget_kb]
        if not within:
            continue
        reach = max(within)
        open_ended = reach == top  # never exceeded B: its reach may be larger
        extra = top * (budget_kb / top_kb) ** 0.5 if open_ended else None
        sign = ">=" if open_ended else ""
        ext = f"~{extra:,.0f} | ~{extra / n_plain:.1f}x" if extra else "(measured) | "
        print(f"  | {budget_kb / 2**20:.2f} GB | {n_plain} | {sign}{reach} | {sign}{reach / n_plain:g}x | {ext} |")
        ratio = reach / n_plain
        if ratio >= 4:
            verdict = "PASS"
        elif not open_ended:
            verdict = "FAIL"
        else:
            verdict = (f"not decided by measurement (the chunked series stopped at a cap); extrapolated "
                       f"{extra / n_plain:.1f}x: {'PASS' if extra / n_plain >= 4 else 'FAIL'} if the N_res^2 law holds")
        verdict_line = (f"  goal 'the chunked pair stack reaches >= 4x the N_res of the unchunked one in the same "
                        f"memory', B = {budget_kb / 2**20:.2f} GB ({source}; unchunked N_res {n_plain}): "
                        f"{sign}{ratio:g}x, {verdict}")
    print(verdict_line or "  4x N_res goal: no budget holds a point of both series")
    if args.breakdown_res:
        n = args.breakdown_res
        print(f"  Peak above the inputs per update at N_res {n} (one process per mode, peak reset before each):")
        for chunk in (None, args.chunk):
            spec = {"n_res": n, "chunk": chunk, "pair_dim": args.mem_pair_dim, "heads": args.mem_heads,
                    "threads": args.threads, "cap_gb": args.mem_cap_gb, "breakdown": True}
            result = run_child(spec, timeout=3 * args.time_cap_s + 30)
            label = "unchunked" if chunk is None else f"chunk {chunk}"
            if "error" in result:
                print(f"    {label}: failed ({result['error']})")
                continue
            parts = ", ".join(f"{k} {v / 1024:,.0f}" for k, v in result["module_peak_kb"].items())
            print(f"    {label:9s} inputs {result['inputs_kb'] / 1024:,.0f} MB; {parts} (MB)")


# ------------------------------------------------------------------------------ GPU: largest N_res


def gpu(args) -> tuple[int, float, float] | None:
    """The largest N_res one block holds on the GPU: (N_res, peak GiB, seconds), or None."""
    if not torch.cuda.is_available():
        raise SystemExit("bench_evoformer --gpu: expected a CUDA device, got none")
    from tatlas.models.evoformer.config import BlockConfig
    from tatlas.models.evoformer.trunk import evoformer_block

    device, dtype = "cuda", torch.bfloat16
    c_m, c_z, n_seq, chunk = 256, 128, args.gpu_seqs, args.gpu_chunk
    block = evoformer_block(c_m, c_z, BlockConfig()).to(device, dtype).eval()
    total = torch.cuda.get_device_properties(0).total_memory
    print(f"{torch.cuda.get_device_name()} ({total / 2**30:.0f} GiB), bfloat16, torch {torch.__version__}: one "
          f"EvoformerBlock, c_m {c_m}, c_z {c_z}, N_seq {n_seq}, AlphaFold2 BlockConfig, inference, chunk_size {chunk}")

    def fits(n: int) -> tuple[bool, float, float]:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        try:
            with torch.no_grad():
                msa = torch.randn(n_seq, n, c_m, device=device, dtype=dtype)
                pair = torch.randn(n, n, c_z, device=device, dtype=dtype)
                msa_mask = torch.ones(n_seq, n, device=device, dtype=dtype)
                pair_mask = torch.ones(n, n, device=device, dtype=dtype)
                torch.cuda.synchronize()
                t = time.perf_counter()
                out = block(msa, pair, msa_mask, pair_mask, chunk_size=chunk)
                torch.cuda.synchronize()
                seconds = time.perf_counter() - t
                del out, msa, pair
            ok = True
        except torch.cuda.OutOfMemoryError:
            ok, seconds = False, float("nan")
        peak = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.empty_cache()
        print(f"  N_res {n:5d}: {'fits' if ok else 'out of memory'}, peak {peak:6.1f} GiB"
              + (f", {seconds:.2f} s" if ok else ""), flush=True)
        return ok, peak, seconds

    with torch.no_grad():  # kernels loaded and tuned before the first timed size
        block(torch.randn(n_seq, 64, c_m, device=device, dtype=dtype), torch.randn(64, 64, c_z, device=device, dtype=dtype),
              torch.ones(n_seq, 64, device=device, dtype=dtype), torch.ones(64, 64, device=device, dtype=dtype),
              chunk_size=chunk)
    n, good, bad = 256, None, None
    while bad is None and n <= args.gpu_max_res:
        ok, peak, sec = fits(n)
        if ok:
            good, n = (n, peak, sec), 2 * n
        else:
            bad = n
    if good is None:
        print(f"  no N_res fits (256 ran out of memory); {OPENFOLD_ANCHOR}")
        return None
    if bad is not None:
        lo, hi = good[0], bad
        while hi - lo > args.gpu_step:
            mid = (lo + hi) // 2 // args.gpu_step * args.gpu_step
            if mid <= lo:
                break
            ok, peak, sec = fits(mid)
            if ok:
                lo, good = mid, (mid, peak, sec)
            else:
                hi = mid
    n, peak, sec = good
    bound = "" if bad is not None else f" (the search stopped at --gpu-max-res {args.gpu_max_res})"
    print(f"Largest N_res that fits: {n} (peak {peak:.1f} GiB, one block forward {sec:.2f} s){bound}; "
          f"{OPENFOLD_ANCHOR}")
    return n, peak, sec


# ------------------------------------------------------------------------------ entry point


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":  # hidden: one memory point in this process
        print(json.dumps(child(json.loads(sys.argv[2]))))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu", action="store_true", help="CUDA bfloat16, AlphaFold2 widths: largest N_res of one block")
    ap.add_argument("--quick", action="store_true", help="smoke run: small shapes, few points")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of best_time")
    ap.add_argument("--repeats", type=int, default=2, help="timed calls per round (after one warm-up)")
    ap.add_argument("--chunk", type=int, default=4, help="chunk_size of the chunked memory series")
    ap.add_argument("--mem-cap-gb", type=float, default=8.0, help="largest predicted peak a memory point may have")
    ap.add_argument("--time-cap-s", type=float, default=150.0, help="largest predicted seconds of a memory point")
    ap.add_argument("--max-res", type=int, default=8192)
    ap.add_argument("--budget-gb", type=float, default=None, help="memory budget of the 4x goal (default: see above)")
    ap.add_argument("--mem-pair-dim", type=int, default=32)
    ap.add_argument("--mem-heads", type=int, default=4)
    ap.add_argument("--breakdown-res", type=int, default=None, help="N_res of the per-update peaks (default 256, 0: none)")
    ap.add_argument("--parts", default="speed,block,memory", help="which CPU parts to run, comma-separated")
    ap.add_argument("--gpu-seqs", type=int, default=128)
    ap.add_argument("--gpu-chunk", type=int, default=4)
    ap.add_argument("--gpu-step", type=int, default=64)
    ap.add_argument("--gpu-max-res", type=int, default=16384)
    add_contend(ap)
    args = ap.parse_args()
    with contended(args.contend):
        _run(args)


def _run(args: argparse.Namespace) -> None:
    if args.gpu:
        gpu(args)
        return
    if args.quick:
        args.rounds, args.repeats = 1, 1
    if args.breakdown_res is None:
        args.breakdown_res = 0 if args.quick else 256  # 0: none
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    print(f"CPU, torch {torch.__version__}, {torch.get_num_threads()} threads")
    parts = {"speed": speed, "block": block_time, "memory": memory}
    for name in args.parts.split(","):
        parts[name](args)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
