"""MoE layer forward + backward throughput: tatlas' ``MoE`` against transformers' blocks on the same
weights and tokens, in one run.

    python benchmarks/bench_moe.py            # CPU, float32, scaled-down shapes (about a minute)
    python benchmarks/bench_moe.py --gpu      # CUDA, bfloat16, 8192 tokens, real shapes

CPU shapes: Mixtral-like (8 experts, top-2, SwiGLU; transformers ``MixtralSparseMoeBlock``) and
fine-grained DeepSeek-like (64 experts, top-6 of 8 groups / 4 kept, narrow experts, one shared expert;
``DeepseekV3MoE``). Prints tokens/s for each implementation and the ratio to transformers' eager
expert loop; transformers' ``grouped_mm`` experts are timed too where they run (on CPU they need
sizes that are multiples of 4). tatlas runs its default backend (``auto``: one ``torch._grouped_mm``
per projection where supported) and its loop over the experts' segments. Timings are the best of
``--repeats`` interleaved runs (robust to other processes on shared cores).

``--gpu``: Mixtral shape (hidden 4096, expert 14336, 8 experts top-2) and fine-grained (hidden 2048,
expert 1408, 64 experts top-6, 2 shared experts = width 2816) on 8192 tokens in bfloat16; prints
TFLOP/s of forward + backward (3x the forward matmul FLOPs) and its fraction of the bf16 matmul peak
measured in the same run (an 8192^3 ``torch.mm``), beside transformers' ``grouped_mm`` experts.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch
from _timing import add_contend, contended


@dataclass(frozen=True)
class Shape:
    name: str
    dim: int
    hidden: int
    experts: int
    k: int
    tokens: int
    shared: int = 0  # shared expert width (DeepSeek-like only)
    groups: int = 1
    topk_groups: int = 1

    @property
    def deepseek(self) -> bool:
        return self.shared > 0

    def flops(self) -> float:
        """Forward + backward matmul FLOPs: 3 x (2 x tokens x (k I + shared) x 3 C)."""
        return 3 * 2 * self.tokens * (self.k * self.hidden + self.shared) * 3 * self.dim

    def __str__(self) -> str:
        s = f"{self.name}: N={self.tokens} tokens, C={self.dim}, E={self.experts}, top-{self.k}, I={self.hidden}"
        if self.shared:
            s += f", shared I={self.shared}, groups {self.topk_groups}/{self.groups}"
        return s


CPU_SHAPES = (
    Shape("mixtral-like", dim=256, hidden=512, experts=8, k=2, tokens=2048),
    Shape("deepseek-like", dim=256, hidden=64, experts=64, k=6, tokens=2048, shared=64, groups=8, topk_groups=4),
)
GPU_SHAPES = (
    Shape("mixtral", dim=4096, hidden=14336, experts=8, k=2, tokens=8192),
    Shape("fine-grained", dim=2048, hidden=1408, experts=64, k=6, tokens=8192, shared=2816, groups=8, topk_groups=4),
)


def build_reference(shape: Shape, impl: str, device: str, dtype: torch.dtype) -> torch.nn.Module:
    """transformers' block with ``impl`` as its experts implementation; seeded, so every call gives the
    same weights (standalone blocks are built with ``torch.empty``: initialised here)."""
    from transformers import DeepseekV3Config, MixtralConfig
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MoE
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    torch.manual_seed(0)
    with torch.device(device):
        if shape.deepseek:
            ref = DeepseekV3MoE(DeepseekV3Config(
                hidden_size=shape.dim, moe_intermediate_size=shape.hidden, n_routed_experts=shape.experts,
                num_experts_per_tok=shape.k, n_group=shape.groups, topk_group=shape.topk_groups,
                n_shared_experts=shape.shared // shape.hidden, experts_implementation=impl))
        else:
            ref = MixtralSparseMoeBlock(MixtralConfig(
                hidden_size=shape.dim, intermediate_size=shape.hidden, num_local_experts=shape.experts,
                num_experts_per_tok=shape.k, experts_implementation=impl))
        with torch.no_grad():
            for p in ref.parameters():
                p.normal_(0, 0.02 if p.dim() > 1 else 1.0)
    return ref.to(dtype)


def build_ours(shape: Shape, ref: torch.nn.Module) -> torch.nn.Module:
    """tatlas' layer with ``ref``'s weights, through the converter's key map."""
    from tatlas.models.llm.convert import hf_moe_keymap
    from tatlas.nn import GatedMLP
    from tatlas.nn.moe import DeepSeekRouter, Experts, MoE, TopKRouter

    device, dtype = ref.experts.down_proj.device, ref.experts.down_proj.dtype
    with torch.device(device):
        experts = Experts(dim=shape.dim, hidden=shape.hidden, experts=shape.experts)
        if shape.deepseek:
            router = DeepSeekRouter(dim=shape.dim, experts=shape.experts, k=shape.k, groups=shape.groups,
                                    topk_groups=shape.topk_groups, scaling=ref.gate.routed_scaling_factor)
            ours = MoE(router=router, experts=experts, shared=GatedMLP(dim=shape.dim, hidden=shape.shared))
        else:
            ours = MoE(router=TopKRouter(dim=shape.dim, experts=shape.experts, k=shape.k), experts=experts)
    keymap = hf_moe_keymap("deepseek_v3" if shape.deepseek else "mixtral")
    ours.to(dtype).load_state_dict(keymap.convert(ref.state_dict()))
    return ours


def step(module, x, g) -> None:
    for p in module.parameters():
        p.grad = None
    x.grad = None
    out = module(x)
    (out * g).sum().backward()


def timed(fn, sync) -> float:
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


class _Backend(torch.nn.Module):
    """tatlas' layer run with one experts backend."""

    def __init__(self, moe: torch.nn.Module, backend: str) -> None:
        super().__init__()
        self.moe, self.backend = moe, backend

    def forward(self, x):
        self.moe.experts.backend = self.backend
        return self.moe(x)


def run(shape: Shape, *, dtype, device, repeats: int, impls: tuple[str, ...]) -> dict[str, float]:
    """Best-of-``repeats`` seconds per forward + backward; implementations interleaved so that a busy
    spell of the machine hits all of them alike."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    modules: dict[str, torch.nn.Module] = {f"transformers {impl}": build_reference(shape, impl, device, dtype)
                                           for impl in impls}
    ours = build_ours(shape, next(iter(modules.values())))
    modules |= {"tatlas": _Backend(ours, "auto"), "tatlas loop": _Backend(ours, "loop")}
    x = torch.randn(max(1, shape.tokens // 512), min(512, shape.tokens), shape.dim, device=device, dtype=dtype,
                    requires_grad=True)
    g = torch.randn_like(x)
    for label in list(modules):
        try:
            step(modules[label], x, g)  # warm-up
        except (RuntimeError, NotImplementedError) as err:
            print(f"  {label}: does not run here ({str(err).splitlines()[0][:100]})")
            del modules[label]
    best = {label: float("inf") for label in modules}
    for _ in range(repeats):
        for label, module in modules.items():
            best[label] = min(best[label], timed(lambda m=module: step(m, x, g), sync))
    return best


def cpu(args) -> None:
    torch.set_num_threads(args.threads)
    print(f"CPU, float32, torch {torch.__version__}, {torch.get_num_threads()} threads, forward + backward")
    for shape in CPU_SHAPES:
        print(shape)
        best = run(shape, dtype=torch.float32, device="cpu", repeats=args.repeats, impls=("eager", "grouped_mm"))
        eager, grouped = best.get("transformers eager"), best.get("transformers grouped_mm")
        for label, t in best.items():
            ratios = "".join(f"  x{base / t:5.2f} vs {name}"
                             for name, base in (("eager", eager), ("grouped_mm", grouped)) if base)
            print(f"  {label:24s} {shape.tokens / t:8.0f} tokens/s {t * 1e3:8.1f} ms{ratios}")


def peak_bf16_tflops(device: str, repeats: int = 5) -> float:
    """Best TFLOP/s of an 8192^3 bfloat16 ``torch.mm`` (10 back-to-back) on ``device``."""
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    best = min(timed(lambda: [a @ b for _ in range(10)], sync) for _ in range(repeats))
    return 2 * n**3 * 10 / best / 1e12


def gpu(args, device: str = "cuda", shapes: tuple[Shape, ...] = GPU_SHAPES) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--gpu: no CUDA device")
    peak = peak_bf16_tflops(device)
    name = torch.cuda.get_device_name() if device == "cuda" else device
    print(f"{name}, bfloat16, torch {torch.__version__}, forward + backward; "
          f"bf16 matmul peak (8192^3 mm) {peak:.0f} TFLOP/s")
    for shape in shapes:
        print(shape)
        best = run(shape, dtype=torch.bfloat16, device=device, repeats=args.repeats, impls=("grouped_mm",))
        base = best.get("transformers grouped_mm")
        for label, t in best.items():
            tflops = shape.flops() / t / 1e12
            ratio = f"  x{base / t:.2f} vs transformers grouped_mm" if base else ""
            print(f"  {label:24s} {shape.tokens / t:10.0f} tokens/s  {tflops:7.2f} TFLOP/s "
                  f"({tflops / peak:6.1%} of peak){ratio}")
        if device == "cuda":
            torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu", action="store_true", help="CUDA bfloat16 at real shapes")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    add_contend(ap)
    args = ap.parse_args()
    with contended(args.contend):
        gpu(args) if args.gpu else cpu(args)


if __name__ == "__main__":
    main()
