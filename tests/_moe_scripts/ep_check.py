"""Expert parallelism against the one-process layer; run under torchrun (gloo, CPU) by
tests/test_moe_parallel.py. Every rank builds the same full layer and computes the one-process
result on the whole batch itself; the expert-parallel layer (same weights) sees only this rank's
sequences. Outputs, input gradients and expert-weight gradients must equal the one-process ones
slice for slice; replicated (router, shared) gradients after an all-reduce. Rank 0 writes the
maximum differences as JSON to argv[1]."""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist

from tatlas.nn import GatedMLP
from tatlas.nn.moe import DeepSeekRouter, Experts, MoE, ParallelExperts, Router, Routing, SwitchRouter, TopKRouter

H, I, T, PER_RANK = 16, 12, 6, 2


class ToExpertZero(Router):
    """Rigged: every token to expert 0 (other ranks' experts receive nothing)."""

    def forward(self, x):
        n = x.reshape(-1, self.dim).shape[0]
        experts = torch.zeros(n, 1, dtype=torch.long)
        weights = (x.reshape(-1, self.dim) @ self.weight[0]).sigmoid()[:, None]  # keeps the router in the graph
        return Routing(experts=experts, weights=weights, logits=torch.zeros(n, self.experts),
                       load=torch.bincount(experts.reshape(-1), minlength=self.experts), dropped=torch.zeros(()))


def cases(world: int):
    """(name, the experts' keyword arguments, a function building the router and shared parts)."""
    e = 2 * world
    yield "mixtral-topk", dict(experts=8, backend="grouped_mm"), lambda: dict(router=TopKRouter(dim=H, experts=8, k=2))
    yield "deepseek-shared", dict(experts=8, backend="loop"), lambda: dict(
        router=DeepSeekRouter(dim=H, experts=8, k=3, groups=2, topk_groups=1, scaling=2.5),
        shared=GatedMLP(dim=H, hidden=I))
    yield "switch-drops", dict(experts=e, gated=False, act="relu"), lambda: dict(
        router=SwitchRouter(dim=H, experts=e, capacity=1))
    yield "qwen-gated-shared", dict(experts=world), lambda: dict(
        router=TopKRouter(dim=H, experts=world, k=1, normalize=False), shared=GatedMLP(dim=H, hidden=8),
        shared_gate=torch.nn.Linear(H, 1, bias=False))
    yield "all-to-expert-0", dict(experts=e, backend="loop"), lambda: dict(router=ToExpertZero(dim=H, experts=e, k=1))


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    group = dist.group.WORLD
    report = {"world": world}
    for name, experts, make in cases(world):
        torch.manual_seed(0)
        full = MoE(experts=Experts(dim=H, hidden=I, **experts), **make())
        x = torch.randn(world * PER_RANK, T, H, requires_grad=True)
        g = torch.randn(world * PER_RANK, T, H)
        (full(x) * g).sum().backward()
        y_full = full(x).detach()

        torch.manual_seed(1)  # other initial weights: they must come from `full`
        ep = MoE(experts=ParallelExperts(dim=H, hidden=I, group=group, **experts), **make())
        held = ep.expert_slice
        assert ep.experts.num_experts == full.num_experts // world
        state = {k: (v[held] if k.startswith("experts.") else v) for k, v in full.state_dict().items()}
        ep.load_state_dict(state)
        mine = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        xr = x.detach()[mine].clone().requires_grad_()
        y, routing = ep.forward_routed(xr)
        (y * g[mine]).sum().backward()

        diffs = {"output": (y - y_full[mine]).abs().max().item(),
                 "input_grad": (xr.grad - x.grad[mine]).abs().max().item()}
        full_grads = dict(full.named_parameters())
        for k, p in ep.named_parameters():
            grad = p.grad.clone()
            if k.startswith("experts."):
                want = full_grads[k].grad[held]
            else:
                dist.all_reduce(grad)  # replicated weights: each rank has its own tokens' share
                want = full_grads[k].grad
            diffs[f"grad {k}"] = (grad - want).abs().max().item()
        worst = torch.tensor(max(diffs.values()))
        dist.all_reduce(worst, op=dist.ReduceOp.MAX)
        report[name] = {"max_diff": worst.item(), "local_load": routing.load.tolist(),
                        "dropped": routing.dropped.item()}
        assert worst.item() <= 1e-5, f"rank {rank} {name}: {diffs}"

    try:  # a clear error at construction when the experts do not divide over the ranks
        MoE(router=TopKRouter(dim=H, experts=world + 1, k=1),
            experts=ParallelExperts(dim=H, hidden=I, experts=world + 1, group=group))
        report["indivisible"] = "no error"
    except ValueError as err:
        report["indivisible"] = str(err)
    if rank == 0:
        with open(sys.argv[1], "w") as f:
            json.dump(report, f, indent=1)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
