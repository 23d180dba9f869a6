"""One forward and backward of CLIP's loss on each rank under torchrun (gloo, CPU), run by
tests/test_contrastive_distributed.py: rank ``r`` takes rows ``[r*B, (r+1)*B)`` of
:func:`global_batch`, the tiny CLIP is wrapped as the trainer wraps it (DDP), and rank 0 saves the loss and accuracy averaged over ranks (as the trainer logs them)
and the gradients after the wrapper's averaging to --result (a ``torch.save`` file).
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist

import tatlas
from tatlas.models.clip.task import clip_loss
from tatlas.nn import gather_with_grad
from tatlas.train import distributed as D


def tiny_clip(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return tatlas.create("clip", "tiny")


def global_batch(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """``n`` random (image, caption) pairs; captions 0 and ``n-1`` are the same (so with two ranks
    a positive lies on the other rank), as are 1 and 2 (a positive on the same rank)."""
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(n, 3, 32, 32, generator=g)
    tokens = torch.zeros(n, 32, dtype=torch.long)
    tokens[:, 0] = 49_406  # <start_of_text>
    tokens[:, 1:6] = torch.randint(300, 40_000, (n, 5), generator=g)
    tokens[:, 6] = 49_407  # <end_of_text>
    tokens[n - 1], tokens[2] = tokens[0], tokens[1]
    return {"pixels": pixels, "tokens": tokens}


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for name, p in model.named_parameters():
        out[name] = p.grad.detach().clone()
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch-size", type=int, default=4, help="per rank")
    p.add_argument("--result", required=True)
    a = p.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    B = a.batch_size
    batch = global_batch(world * B)
    local = {k: v[rank * B:(rank + 1) * B] for k, v in batch.items()}

    # the gather itself: every rank's rows in rank order, and the gradient summed over ranks
    x = torch.full((B, 3), float(rank + 1), requires_grad=True)
    xs = gather_with_grad(x)
    assert xs.shape == (world * B, 3) and all((xs[r * B:(r + 1) * B] == r + 1).all() for r in range(world))
    (xs * torch.arange(1, world * B + 1.0)[:, None]).sum().backward()
    assert torch.equal(x.grad, world * torch.arange(rank * B + 1.0, (rank + 1) * B + 1)[:, None].expand(B, 3))

    # DDP as the trainer wraps it (FSDP2 is not tried: fully_shard refuses CLIP's 0-d logit_scale)
    env = D.DistEnv(strategy="ddp", device=torch.device("cpu"), rank=rank, world_size=world)
    model = tiny_clip(0)  # the same weights on every rank (DDP would broadcast rank 0's anyway)
    unit = D.wrap(model, clip_loss, env)  # keep the wrapper alive: its reducer all-reduces in backward
    out = unit(local)
    out["loss"].backward()
    logged = torch.stack([out["loss"].detach(), out["batch_accuracy"]])
    dist.all_reduce(logged)  # the trainer logs the mean over ranks
    logged /= world
    result = {"loss": logged[0].item(), "batch_accuracy": logged[1].item(), "grads": grads(model)}
    if rank == 0:
        torch.save(result, a.result)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
