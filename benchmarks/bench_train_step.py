"""A demo's training step with the trainer's optimizer (torch's fused AdamW, also on the CPU) against
the same step with ``torch.optim.AdamW``'s defaults (``foreach`` on the CPU), in one run.

    python benchmarks/bench_train_step.py                        # CLIP, ImageGPT, Whisper; their demos' sizes
    python benchmarks/bench_train_step.py --threads 1 --contend 1

Each model is built and fed as its ``tatlas demo`` trains it (CLIP: the tiny preset with 3 image
layers, the real 49,408-token vocabulary, batch 128; ImageGPT: tiny, batch 32; Whisper:
tiny-speech, batch 16), from the same weights and batches for both optimizers. A step is what
``Trainer`` does: forward, backward, gradient clipping, the optimizer, clearing the gradients.
The two optimizers alternate in rounds of ``--steps`` steps; each prints its median step over
``--rounds`` rounds, and the ratio (foreach / fused: above 1 means the trainer's step is faster).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from _timing import add_contend, contended, pick


def clip_case() -> tuple[torch.nn.Module, Callable, dict]:
    import dataclasses

    import tatlas
    from tatlas.demo import clip as demo
    from tatlas.models.clip.config import PRESETS
    from tatlas.models.clip.task import clip_loss

    vision = dataclasses.replace(PRESETS["tiny"].vision, layers=demo.IMAGE_LAYERS)
    text = dataclasses.replace(PRESETS["tiny"].text, context_length=16)
    model = tatlas.create("clip", "tiny", vision=vision, text=text)
    g = torch.Generator().manual_seed(0)
    size, context = model.config.vision.image_size, model.config.text.context_length
    batch = {"pixels": torch.randn(demo.BATCH, 3, size, size, generator=g),
             "tokens": torch.randint(1, 49_000, (demo.BATCH, context), generator=g)}
    return model, clip_loss, batch


def imagegpt_case() -> tuple[torch.nn.Module, Callable, dict]:
    from torch.utils.data import default_collate

    import tatlas
    from tatlas.demo import imagegpt as demo
    from tatlas.models.registry import get_system

    model = tatlas.create("imagegpt", "tiny")
    task = get_system("imagegpt").train_task(model.config, 0)
    collate = task.collate_fn or default_collate
    return model, task.loss_fn, collate([task.train_data[i] for i in range(demo.DEMO_BATCH)])


def whisper_case() -> tuple[torch.nn.Module, Callable, dict]:
    from torch.utils.data import default_collate

    import tatlas
    from tatlas.demo import whisper as demo
    from tatlas.models.whisper.task import spoken_sentences, transcript_loss

    model = tatlas.create("whisper", "tiny-speech")
    data = spoken_sentences("train", demo.BATCH, model.config)
    return model, transcript_loss, default_collate([data[i] for i in range(demo.BATCH)])


CASES = {"clip": clip_case, "imagegpt": imagegpt_case, "whisper": whisper_case}


def step_times(model: torch.nn.Module, loss_fn: Callable, batch: dict, optimizer: torch.optim.Optimizer,
               steps: int) -> list[float]:
    from tatlas.train.runtime import split_loss

    params = [p for p in model.parameters() if p.requires_grad]
    out = []
    for step in range(steps):
        t = time.perf_counter()
        loss, _ = split_loss(loss_fn(model, batch), step + 1)  # the trainer's reading of a loss_fn's output
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        out.append(time.perf_counter() - t)
    return out


def measure(name: str, steps: int, rounds: int) -> dict[str, float]:
    from tatlas.train import TrainConfig
    from tatlas.train.optim import build_optimizer

    model, loss_fn, batch = CASES[name]()
    model.train()
    cfg = TrainConfig(steps=1, batch_size=1, lr=1e-3, weight_decay=0.1)
    ours = build_optimizer(model, cfg)
    theirs = torch.optim.AdamW([{"params": g["params"], "weight_decay": g["weight_decay"]} for g in ours.param_groups],
                               lr=cfg.lr, betas=tuple(cfg.betas))  # torch's defaults: foreach on the CPU
    kernel = "fused" if ours.param_groups[0]["fused"] else "foreach"
    times: dict[str, list[float]] = {kernel: [], "torch default": []}
    for opt in (ours, theirs):
        step_times(model, loss_fn, batch, opt, 3)  # warm-up: the optimizer's state, the allocator
    for _ in range(rounds):
        for opt, key in ((ours, kernel), (theirs, "torch default")):
            times[key].append(statistics.median(step_times(model, loss_fn, batch, opt, steps)))
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    spread = {k: (1e3 * min(v), 1e3 * max(v)) for k, v in times.items()}
    n = sum(p.numel() for p in model.parameters())
    print(f"{name} ({n / 1e6:.2f}M parameters): trainer ({kernel}) {ms[kernel]:.1f} ms/step "
          f"[{spread[kernel][0]:.1f}-{spread[kernel][1]:.1f}], torch.optim.AdamW defaults "
          f"{ms['torch default']:.1f} ms/step [{spread['torch default'][0]:.1f}-{spread['torch default'][1]:.1f}]"
          f": {ms['torch default'] / ms[kernel]:.2f}x", flush=True)
    return ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    ap.add_argument("--steps", type=int, default=8, help="steps per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    add_contend(ap)
    args = ap.parse_args()
    names = pick("bench_train_step.py", args.cases, CASES)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    with contended(args.contend):
        for name in names:
            measure(name, args.steps, args.rounds)


if __name__ == "__main__":
    main()
