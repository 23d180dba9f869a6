"""CLIP ViT-B/32 encoding throughput: tatlas vs transformers' ``CLIPModel`` vs open_clip's ``CLIP``,
in the same run, on the same inputs (random weights; the work does not depend on their values).

    python benchmarks/bench_clip.py                 # CPU, float32, batch 32
    python benchmarks/bench_clip.py --gpu           # CUDA, bfloat16, batch 256

Images: ``encode_image`` of ``[B, 3, 224, 224]``; texts: ``encode_text`` of ``[B, 77]`` CLIP tokens,
once as a typical prompt (start token, 20 random ids, end token, zero padding) and once filling
all 77 positions (``text-77``). ``tatlas`` is the model as ``tatlas.load(..., fast=True)`` gives it
(``tatlas.optimize``: oneDNN matmuls, padding after the end token skipped, the last block run only for
the pooled token); on CPU the plain definitions are timed too (``tatlas (plain)``), so the fast
path's share of the speed-up is visible.
The three models are timed in interleaved rounds (ours, transformers, open_clip, ours, ...) and
each reports its median round, so a noisy shared machine slows all of them alike. Prints items/s
and our speed as a ratio to each reference (> 1: tatlas is faster).

open_clip imports torchvision, which does not import beside this torch: a stub stands in while
open_clip imports (its image transforms are not used here). tatlas never needs torchvision.
"""

from __future__ import annotations

import argparse
import copy
import enum
import importlib
import statistics
import sys
import time
import types

import torch
from _timing import add_contend, contended


def import_open_clip():
    from transformers.utils import import_utils

    import_utils.is_torchvision_available()  # cached before the stub exists
    import_utils.is_timm_available()
    names = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional", "torchvision.ops",
             "torchvision.ops.misc", "timm")
    saved = {n: sys.modules.get(n) for n in names}
    if importlib.util.find_spec("torchvision") is None:
        class Unavailable:
            def __init__(self, *a, **k):
                raise RuntimeError("torchvision stub")

        mods = {n: types.ModuleType(n) for n in names[:-1]}
        tr = mods["torchvision.transforms"]
        for name in ("Normalize", "Compose", "RandomResizedCrop", "ToTensor", "Resize", "CenterCrop", "ColorJitter",
                     "Grayscale"):
            setattr(tr, name, type(name, (Unavailable,), {}))
        tr.InterpolationMode = enum.Enum("InterpolationMode", {"BICUBIC": "bicubic", "BILINEAR": "bilinear",
                                                               "NEAREST": "nearest", "LANCZOS": "lanczos"})
        mods["torchvision.ops.misc"].FrozenBatchNorm2d = type("FrozenBatchNorm2d", (Unavailable,), {})
        mods["torchvision"].transforms, mods["torchvision"].ops = tr, mods["torchvision.ops"]
        tr.functional, mods["torchvision.ops"].misc = mods["torchvision.transforms.functional"], mods["torchvision.ops.misc"]
        sys.modules.update(mods)
        sys.modules["timm"] = None
    try:
        return importlib.import_module("open_clip")
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


def build(device: torch.device, dtype: torch.dtype):
    from transformers import CLIPConfig, CLIPModel

    import tatlas
    import tatlas.models.clip.system  # noqa: F401

    plain = tatlas.create("clip", "ViT-B/32")
    ours = tatlas.optimize(copy.deepcopy(plain))  # the fast path users get from tatlas.load(..., fast=True)
    c = ours.config
    hf = CLIPModel(CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                         num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu", eos_token_id=2),
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           image_size=224, patch_size=32, hidden_act="quick_gelu"),
        projection_dim=512, attn_implementation="sdpa",
    ))
    open_clip = import_open_clip()
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    oc = CLIP(512, CLIPVisionCfg(layers=12, width=768, patch_size=32, image_size=224),
              CLIPTextCfg(context_length=77, vocab_size=49408, width=512, heads=8, layers=12), quick_gelu=True)
    assert open_clip is not None and c.embed_dim == 512
    models = {"tatlas": ours, "tatlas (plain)": plain, "transformers": hf, "open_clip": oc}
    return {k: m.to(device=device, dtype=dtype).eval() for k, m in models.items()}


def encoders(models, *, cpu: bool):
    ours = models["tatlas"]
    fns = {
        "image": {"tatlas": ours.encode_image,
                  "transformers": lambda x: models["transformers"].get_image_features(pixel_values=x).pooler_output,
                  "open_clip": models["open_clip"].encode_image},
        "text": {"tatlas": ours.encode_text,
                 "transformers": lambda t: models["transformers"].get_text_features(input_ids=t).pooler_output,
                 "open_clip": models["open_clip"].encode_text},
    }
    fns["text-77"] = dict(fns["text"])  # texts that fill the whole context: nothing to skip
    if cpu:  # also the plain definitions on F.linear, to show what the fast path is worth
        plain = models["tatlas (plain)"]
        for kind, fn in (("image", plain.encode_image), ("text", plain.encode_text), ("text-77", plain.encode_text)):
            fns[kind]["tatlas (plain)"] = fn
    return fns


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", action="store_true", help="CUDA, bfloat16, batch 256")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per model (default 7 CPU, 20 GPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    add_contend(parser)
    args = parser.parse_args()
    with contended(args.contend):
        _run(args)


def _run(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.gpu and not torch.cuda.is_available():
        sys.exit("--gpu: CUDA is not available")
    device = torch.device("cuda" if args.gpu else "cpu")
    dtype = torch.bfloat16 if args.gpu else torch.float32
    batch = args.batch or (256 if args.gpu else 32)
    rounds = args.rounds or (20 if args.gpu else 7)
    torch.manual_seed(0)
    models = build(device, dtype)
    gen = torch.Generator().manual_seed(0)
    inputs = {
        "image": torch.randn(batch, 3, 224, 224, generator=gen).to(device=device, dtype=dtype),
        "text": torch.cat([torch.full((batch, 1), 49406), torch.randint(0, 49406, (batch, 20), generator=gen),
                           torch.full((batch, 1), 49407), torch.zeros(batch, 55, dtype=torch.long)], dim=1).to(device),
        "text-77": torch.cat([torch.full((batch, 1), 49406), torch.randint(0, 49406, (batch, 75), generator=gen),
                              torch.full((batch, 1), 49407)], dim=1).to(device),
    }
    print(f"CLIP ViT-B/32, {device.type}, {str(dtype).removeprefix('torch.')}, batch {batch}, "
          f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}")
    results: dict[str, dict[str, float]] = {}
    with torch.inference_mode():
        for kind, fns in encoders(models, cpu=device.type == "cpu").items():
            x = inputs[kind]
            outs = {name: fn(x) for name, fn in fns.items()}  # warm-up (and a shape check)
            assert all(o.shape == (batch, 512) for o in outs.values()), {k: o.shape for k, o in outs.items()}
            times: dict[str, list[float]] = {name: [] for name in fns}
            for _ in range(rounds):
                for name, fn in fns.items():
                    sync(device)
                    t0 = time.perf_counter()
                    fn(x)
                    sync(device)
                    times[name].append(time.perf_counter() - t0)
            results[kind] = {name: batch / statistics.median(ts) for name, ts in times.items()}
    unit = {"image": "images", "text": "texts", "text-77": "texts"}
    for kind, per in results.items():
        print(f"{kind}: " + ", ".join(f"{name} {v:.1f} {unit[kind]}/s" for name, v in per.items()))
        for name in [n for n in per if n.startswith("tatlas")]:
            print(f"  {name}: {per[name] / per['transformers']:.2f}x transformers, "
                  f"{per[name] / per['open_clip']:.2f}x open_clip")


if __name__ == "__main__":
    main()
