"""``tatlas demo moe``: a mixture-of-experts LM (8 experts, top-2) against a dense LM with the same
active parameters per token, trained for the same steps on the same text: the MoE reaches a lower
validation loss — the Switch Transformer / Mixtral result (more parameters at equal compute) in
miniature. Writes a PNG of the experts' load over training."""

from __future__ import annotations

import dataclasses

import torch

from ..models.llm import PRESETS
from ..models.llm.task import lm_loss, train_task
from ..train import Trainer, TrainConfig
from .spec import Demo, DemoOptions, DemoResult


def _active_mlp_params(config) -> int:
    if config.moe is None:
        return 3 * config.dim * config.mlp_hidden
    return 3 * config.dim * config.moe.hidden * config.moe.k


def run(options: DemoOptions) -> DemoResult:
    steps = 40 if options.quick else 300
    dense_cfg = PRESETS["tiny"]
    moe_cfg = PRESETS["tiny-moe"]
    assert _active_mlp_params(dense_cfg) == _active_mlp_params(moe_cfg)
    results, loads = {}, []

    def train(name, config):
        import tatlas

        torch.manual_seed(options.seed)
        model = tatlas.models.get_system("llm").model_cls(config)
        task = train_task(config, options.seed)

        def loss_fn(m, batch):
            routings = []  # one Routing per MoE layer of this forward
            out = lm_loss(m, batch, routings=routings)
            if name == "moe" and m.training:
                loads.append(torch.stack([r.load.float() for r in routings]).mean(0).cpu())
            return out

        cfg = TrainConfig(steps=steps, batch_size=16, lr=2e-3, warmup_steps=steps // 10, seed=options.seed,
                          log_every=25, out_dir=options.out_dir / name, progress=options.progress)
        result = Trainer(model, loss_fn, task.train_data, cfg, eval_fn=task.eval_fn).fit()
        results[name] = result
        return result

    train("dense", dense_cfg)
    train("moe", dataclasses.replace(moe_cfg))
    load = torch.stack(loads)  # [steps, E] assignments per expert (mean over layers)
    share = load / load.sum(1, keepdim=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.stackplot(range(1, len(share) + 1), share.T.numpy(), labels=[f"expert {e}" for e in range(share.shape[1])])
    ax.set(xlabel="step", ylabel="share of token assignments", title="MoE expert load over training", ylim=(0, 1))
    ax.legend(loc="upper right", fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(options.out_dir / "expert_load.png", dpi=120)
    plt.close(fig)
    dense, moe = results["dense"].eval["val_loss"], results["moe"].eval["val_loss"]
    return DemoResult(
        system="moe",
        claim="an MoE LM (8 experts, top-2) vs a dense LM of equal active parameters, same steps",
        metric="MoE val loss (nats/token)",
        value=moe,
        baseline="dense val loss",
        baseline_value=dense,
        higher_is_better=False,
        artifacts={"expert_load": "expert_load.png", "moe_plot": "moe/metrics.png", "dense_plot": "dense/metrics.png"},
        details={"steps": float(steps), "max_expert_share_last": float(share[-20:].mean(0).max()),
                 "min_expert_share_last": float(share[-20:].mean(0).min())},
    )


DEMO = Demo(system="moe", run=run, expected_seconds=54)
