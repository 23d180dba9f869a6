"""Is the embedded data ever the bottleneck? Samples per second of each generator, and the
time to make one batch as a ratio to one training step of a tiny model on that batch.

    python benchmarks/bench_data.py [--batch 64] [--image-size 32] [--seconds 2]

Data is timed in the main process (one worker, no DataLoader), which is the worst case; the
model step is forward + backward + AdamW of a 2-layer transformer from plain torch. A ratio
below 1 means even a single worker feeds the model faster than it trains.
"""

from __future__ import annotations

import argparse
import time

import torch
from _timing import add_contend, contended
from torch import nn

from tatlas.data import DigitsDataset, TextDataset, WorldConfig, WorldDataset, collate_scenes


def rate(fn, n_min: int, seconds: float) -> float:
    """Calls of ``fn(i)`` per second, over at least ``n_min`` calls and ``seconds``."""
    fn(0)  # warm caches
    n, start = 0, time.perf_counter()
    while n < n_min or time.perf_counter() - start < seconds:
        fn(n + 1)
        n += 1
    return n / (time.perf_counter() - start)


class TinyViT(nn.Module):
    """Patch embed (4x4) -> 2 pre-norm transformer layers (width 128) -> mean pool -> classes."""

    def __init__(self, image_size: int, classes: int, width: int = 128) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, width, 4, 4)
        self.pos = nn.Parameter(torch.zeros((image_size // 4) ** 2, width))
        layer = nn.TransformerEncoderLayer(width, 4, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos  # (B, T, C)
        return self.head(self.blocks(x).mean(1))


class TinyMLP(nn.Module):
    """Flattened pixels -> 256 -> classes: the cheapest model a loop could train."""

    def __init__(self, image_size: int, classes: int, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * image_size**2, hidden), nn.GELU(), nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TinyGPT(nn.Module):
    """Byte embedding -> 2 causal pre-norm transformer layers (width 128) -> logits."""

    def __init__(self, vocab: int, block: int, width: int = 128) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.pos = nn.Parameter(torch.zeros(block, width))
        layer = nn.TransformerEncoderLayer(width, 4, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(width, vocab)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(block), persistent=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.embed(idx) + self.pos[: idx.shape[1]]  # (B, T, C)
        return self.head(self.blocks(x, mask=self.mask, is_causal=True))


def step_time(model: nn.Module, make_batch, loss_fn, seconds: float) -> float:
    """Seconds per training step (forward, backward, AdamW) on a fixed batch."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = make_batch()

    def step(_: int) -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    return 1.0 / rate(step, 5, seconds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--block-size", type=int, default=128)
    p.add_argument("--seconds", type=float, default=2.0)
    add_contend(p)
    args = p.parse_args()
    with contended(args.contend):
        _run(args)


def _run(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    b, size, secs = args.batch, args.image_size, args.seconds

    world = {
        "world: image": WorldConfig(image_size=size, modalities=("image",)),
        "world: image+caption (CLIP)": WorldConfig(image_size=size, modalities=("image", "caption")),
        "world: all 7 modalities": WorldConfig(image_size=size),
    }
    rates = {}
    for name, cfg in world.items():
        ds = WorldDataset("train", cfg, seed=0, length=10**9)
        rates[name] = rate(lambda i, ds=ds: ds[i], 200, secs)
    text = TextDataset("train", block_size=args.block_size)
    rates[f"text: windows of {args.block_size + 1}"] = rate(lambda i: text[i % len(text)], 1000, secs)
    digits = DigitsDataset("train", size=size)
    rates[f"digits: {size} px"] = rate(lambda i: digits[i % len(digits)], 1000, secs)

    # one batch of each kind, made the way a training loop would make it
    world_ds = WorldDataset("train", world["world: image+caption (CLIP)"], seed=0, length=10**9)
    batch_rate = rate(lambda i: collate_scenes([world_ds[i * b + j] for j in range(b)]), 5, secs)
    n_cls = len(world_ds.classes)
    image_batch = lambda: (torch.rand(b, 3, size, size), torch.randint(0, n_cls, (b,)))  # noqa: E731
    vit_step = step_time(TinyViT(size, n_cls), image_batch, nn.functional.cross_entropy, secs)
    mlp_step = step_time(TinyMLP(size, n_cls), image_batch, nn.functional.cross_entropy, secs)
    gpt = TinyGPT(259, args.block_size)
    gpt_step = step_time(
        gpt,
        lambda: (torch.randint(0, 259, (b, args.block_size)), torch.randint(0, 259, (b, args.block_size))),
        lambda logits, y: nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten()),
        secs,
    )

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {b}, {size} px")
    print(f"{'generator':34s} {'samples/s':>10s} {'batch ms':>9s}")
    for name, r in rates.items():
        print(f"{name:34s} {r:10.0f} {1000 * b / r:9.2f}")
    print(f"{'collated CLIP batch (stack+lists)':34s} {batch_rate * b:10.0f} {1000 / batch_rate:9.2f}")
    print()
    print(f"tiny ViT step (2 layers, width 128, {(size // 4) ** 2} tokens): {1000 * vit_step:.2f} ms")
    print(f"tiny MLP step (3*{size}*{size} -> 256 -> {n_cls}):            {1000 * mlp_step:.2f} ms")
    print(f"tiny GPT step (2 layers, width 128, {args.block_size} tokens):  {1000 * gpt_step:.2f} ms")
    print()
    print("data time / step time (one worker; below 1 = data is not the bottleneck):")
    print(f"  {'':32s} {'vs ViT':>8s} {'vs MLP':>8s}")
    for name in world:
        print(f"  {name:32s} {(b / rates[name]) / vit_step:8.4f} {(b / rates[name]) / mlp_step:8.4f}")
    print(f"  {'collated CLIP batch':32s} {(1 / batch_rate) / vit_step:8.4f} {(1 / batch_rate) / mlp_step:8.4f}")
    text_name = f"text: windows of {args.block_size + 1}"
    print(f"  {text_name:32s} {(b / rates[text_name]) / gpt_step:8.4f}  (vs tiny GPT)")
    digits_name = f"digits: {size} px"
    print(f"  {digits_name:32s} {(b / rates[digits_name]) / mlp_step:17.4f}  (vs tiny MLP)")


if __name__ == "__main__":
    main()
