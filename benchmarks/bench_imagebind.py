"""ImageBind encoding throughput per modality: tatlas' ``imagebind`` against the official
``ImageBindModel`` (``imagebind-unofficial``, whose model files are the official repository's), the same
weights, the same inputs, in one run.

    python benchmarks/bench_imagebind.py                  # CPU, float32, --shape small, batch 8
    python benchmarks/bench_imagebind.py --contend 1     # the same with a CPU-bound process spinning beside it
    python benchmarks/bench_imagebind.py --shape huge     # the released imagebind_huge shapes (slow on CPU)
    python benchmarks/bench_imagebind.py --quick          # smoke run: --shape tiny, 2 rounds
    python benchmarks/bench_imagebind.py --gpu            # CUDA, bfloat16, batch 64 (exits with one line where none)

Shapes (``--shape``), always at the official input sizes (224-pixel images repeated to 2 frames and
cut into 2x14x14 tubelets: 257 tokens; 77-token texts; 128x204 log-Mel spectrograms in 16x16 patches
every 10: 229 tokens; 224-pixel depth and thermal maps in 16x16 patches: 197 tokens; 6x2000 IMU
readings in 8-step windows: 251 tokens):

- ``small`` (default): every encoder 4 blocks of width 256, 4 heads (64 wide), embedding 256;
- ``huge``: ``imagebind_huge`` (vision ViT-H 32x1280, text 24x1024, audio 12x768, depth 12x384,
  thermal 12x768, IMU 6x512; embedding 1024), 1.2 B parameters (three copies in memory and one
  saved to a temporary file: about 15 GB of RAM and 5 GB of disk);
- ``tiny``: 1 block of width 32 (the ``tiny`` preset), for ``--quick``.

Weights: the official model built at the shape (drop-path 0: timm's ``DropPath`` is stubbed, and it
is the identity in eval anyway), every parameter perturbed (LayerNorms off 1/0, biases off 0, the
scales off their init), its state dict saved as the released checkpoint is and loaded by
``tatlas.load(path, format="imagebind")`` through our converter. Implementations: ``tatlas`` =
``fast=True`` (``tatlas.optimize``), ``tatlas (plain)`` = the plain definitions, ``official`` =
``ImageBindModel``. Each is called as the official forward is, ``model({modality: x})[modality]``
(embedding, L2 normalisation, the modality's logit scale), under ``torch.inference_mode``. Before
timing, every modality's outputs are checked: max abs difference to the official at most 1e-4 in
float32 (``--gpu``'s bfloat16 is only reported).

Timing: per modality, the implementations interleaved round by round (ours, plain, official,
ours, ...), each reporting its median round, so a noisy shared machine slows all alike; items/s and
tatlas / official as a speed ratio (> 1: tatlas faster). ``--contend N``: N Python processes
spinning (``while True: pass``) from before the first measurement to the end; the load average is
printed at the start and end.

The official package imports ``imagebind.data`` (torchaudio, pytorchvideo) and timm (torchvision,
which does not import beside this torch): stubs stand in while it imports, as in
``tests/test_parity_imagebind.py``. tatlas needs none of them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import torch
from _timing import add_contend, contended, load_average

SHAPES = {
    "tiny": {"out": 16, "dims": {m: (32, 1, 4) for m in ("vision", "text", "audio", "depth", "thermal", "imu")}},
    "small": {"out": 256, "dims": {m: (256, 4, 4) for m in ("vision", "text", "audio", "depth", "thermal", "imu")}},
    "huge": {"out": 1024, "dims": {"vision": (1280, 32, 16), "text": (1024, 24, 16), "audio": (768, 12, 12),
                                 "depth": (384, 12, 8), "thermal": (768, 12, 12), "imu": (512, 6, 8)}},
}
MODALITIES = ("vision", "text", "audio", "depth", "thermal", "imu")
UNITS = {"vision": "images", "text": "texts", "audio": "clips", "depth": "maps", "thermal": "maps", "imu": "windows"}


def official_module():
    """``imagebind.models.imagebind_model`` imported beside stubs of ``imagebind.data`` and
    ``timm.layers`` (removed again after; see ``tests/test_parity_imagebind.py``)."""
    if "imagebind.models.imagebind_model" in sys.modules:
        return sys.modules["imagebind.models.imagebind_model"]
    layers = types.ModuleType("timm.layers")

    class DropPath(torch.nn.Module):
        def __init__(self, p):
            raise RuntimeError("the timm stub has no DropPath: build the reference with drop-path 0")

    layers.DropPath, layers.trunc_normal_ = DropPath, torch.nn.init.trunc_normal_
    stubs = {"imagebind.data": types.ModuleType("imagebind.data"), "timm": types.ModuleType("timm"),
             "timm.layers": layers}
    saved = {name: sys.modules.get(name) for name in stubs}
    sys.modules.update(stubs)
    try:
        from imagebind.models import imagebind_model
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return imagebind_model


def build(shape: str, device: str, dtype: torch.dtype):
    """The official model at ``shape``, perturbed, and ours converted from its saved state dict."""
    import tatlas

    ib = official_module()
    s = SHAPES[shape]
    kwargs = {"out_embed_dim": s["out"], "audio_drop_path": 0.0, "imu_drop_path": 0.0}
    for m, (dim, blocks, heads) in s["dims"].items():
        kwargs.update({f"{m}_embed_dim": dim, f"{m}_num_blocks": blocks, f"{m}_num_heads": heads})
    torch.manual_seed(0)
    official = ib.ImageBindModel(**kwargs).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in official.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
        for name, b in official.named_buffers():
            if name.endswith("log_logit_scale"):
                b.add_(0.1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"imagebind_{shape}.pth"
        torch.save(official.state_dict(), path)
        plain = tatlas.load(path, format="imagebind")
        ours = tatlas.load(path, format="imagebind", fast=True)
    models = {"tatlas": ours, "tatlas (plain)": plain, "official": official}
    return {k: m.to(device=device, dtype=dtype).eval() for k, m in models.items()}


def inputs(batch: int, device: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    text = torch.zeros(batch, 77, dtype=torch.long)  # <start> 20 ids <end>, zeros after (the official padding)
    text[:, 0], text[:, 21] = 49406, 49407
    text[:, 1:21] = torch.randint(0, 49406, (batch, 20), generator=gen)
    x = {"vision": torch.randn(batch, 3, 224, 224, generator=gen), "audio": torch.randn(batch, 1, 128, 204, generator=gen),
         "depth": torch.randn(batch, 1, 224, 224, generator=gen), "thermal": torch.randn(batch, 1, 224, 224, generator=gen),
         "imu": torch.randn(batch, 6, 2000, generator=gen)}
    out = {m: v.to(device=device, dtype=dtype) for m, v in x.items()}
    out["text"] = text.to(device)
    return {m: out[m] for m in MODALITIES}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default=None, choices=sorted(SHAPES), help="default: small (tiny with --quick)")
    ap.add_argument("--modalities", default=",".join(MODALITIES))
    ap.add_argument("--batch", type=int, default=None, help="default 8 on CPU (2 for huge), 64 on GPU")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds per modality (default 5, 2 --quick, "
                                                             "20 GPU)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    add_contend(ap)
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny shape, 2 rounds")
    ap.add_argument("--gpu", action="store_true", help="CUDA, bfloat16, synchronised timings")
    args = ap.parse_args()
    if args.gpu and not torch.cuda.is_available():
        raise SystemExit("bench_imagebind --gpu: expected a CUDA device, got none")
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = args.shape or ("tiny" if args.quick else "small")
    modalities = args.modalities.split(",")
    if unknown := [m for m in modalities if m not in MODALITIES]:
        raise SystemExit(f"bench_imagebind: unknown modality {unknown[0]!r}; known: {', '.join(MODALITIES)}")
    if args.gpu:
        device, dtype, sync = "cuda", torch.bfloat16, torch.cuda.synchronize
        where = f"{torch.cuda.get_device_name()}, bfloat16"
    else:
        device, dtype, sync = "cpu", torch.float32, lambda: None
        where = f"CPU ({os.cpu_count()} cores), float32, {torch.get_num_threads()} threads"
    batch = args.batch or (64 if args.gpu else 2 if shape == "huge" else 8)
    rounds = args.rounds or (20 if args.gpu else 2 if args.quick else 5)
    t0 = time.perf_counter()
    models = build(shape, device, dtype)
    x = inputs(batch, device, dtype)
    print(f"ImageBind {shape} ({SHAPES[shape]['dims']}, embedding {SHAPES[shape]['out']}), {where}, batch {batch}, "
          f"{rounds} rounds, torch {torch.__version__}; built in {time.perf_counter() - t0:.0f} s; "
          f"{load_average()}", flush=True)
    results: dict[str, dict[str, float]] = {}
    with contended(args.contend), torch.inference_mode():
        for m in modalities:
            fns = {name: (lambda model=model, m=m: model({m: x[m]})[m]) for name, model in models.items()}
            outs = {name: fn().float() for name, fn in fns.items()}  # warm-up and the agreement check
            for name in ("tatlas", "tatlas (plain)"):
                err = (outs[name] - outs["official"]).abs().max().item()
                if not args.gpu and err > 1e-4:
                    raise SystemExit(f"{m}: {name} differs from the official by {err:.2e} (> 1e-4)")
                print(f"{m}: {name} vs official max abs diff {err:.1e}", flush=True)
            times: dict[str, list[float]] = {name: [] for name in fns}
            for _ in range(rounds):
                for name, fn in fns.items():
                    sync()
                    t = time.perf_counter()
                    fn()
                    sync()
                    times[name].append(time.perf_counter() - t)
            results[m] = {name: batch / statistics.median(ts) for name, ts in times.items()}
            per = results[m]
            print(f"{m}: " + ", ".join(f"{name} {v:.1f} {UNITS[m]}/s" for name, v in per.items())
                  + f"; tatlas {per['tatlas'] / per['official']:.2f}x official, plain "
                  f"{per['tatlas (plain)'] / per['official']:.2f}x ({load_average()})", flush=True)
    print(f"\nSummary (tatlas / official as speeds, > 1: tatlas faster; {load_average()}):")
    print("| modality | tatlas | tatlas (plain) | official | tatlas / official | plain / official |")
    print("|---|---|---|---|---|---|")
    for m, per in results.items():
        print(f"| {m} | {per['tatlas']:.1f} | {per['tatlas (plain)']:.1f} | {per['official']:.1f} | "
              f"{per['tatlas'] / per['official']:.2f}x | {per['tatlas (plain)'] / per['official']:.2f}x |")
    ratios = [per["tatlas"] / per["official"] for per in results.values()]
    print(f"geometric mean tatlas / official: {statistics.geometric_mean(ratios):.2f}x "
          f"({time.perf_counter() - t0:.0f} s in all)")


if __name__ == "__main__":
    main()
