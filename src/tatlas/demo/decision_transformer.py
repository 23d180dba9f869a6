"""``tatlas demo decision_transformer``: the return conditioning of Chen et al. 2021 (§5.3, "Does
Decision Transformer perform behavior cloning on a subset of the data?" and Figure 4, "achieved
vs target return") in miniature.

Mixed-quality CartPole-v1 episodes (random, a lean-following rule, an expert, and the expert with
random actions at a per-episode rate drawn from U(0, 1)) train the tiny model for ~30 s on 2 CPU
cores; it is then rolled out asked for several target returns. The achieved return rises with the
target, and at the top target lies well above the average return in the data (what behaviour
cloning of the whole dataset would be expected to reach).
"""

from __future__ import annotations

import time

import numpy as np

from ..jobs.decision_transformer import DTTrainOptions, collect_dataset, evaluate_checkpoint, plot_returns, train_on_dataset
from .spec import Demo, DemoOptions, DemoResult

# ---------------------------------------------------------------------- the demo

DEMO_ENV = "CartPole-v1"
DEMO_EPISODES = 200
DEMO_STEPS = 800
DEMO_TARGETS = (25.0, 100.0, 200.0, 350.0, 500.0)
DEMO_EVAL_EPISODES = 20


def run(options: DemoOptions) -> DemoResult:
    start = time.perf_counter()
    quick = options.quick
    episodes, steps, batch = (30, 20, 16) if quick else (DEMO_EPISODES, DEMO_STEPS, 32)
    targets = (DEMO_TARGETS[1], DEMO_TARGETS[-1]) if quick else DEMO_TARGETS
    eval_episodes = 3 if quick else DEMO_EVAL_EPISODES
    path, data = collect_dataset(DEMO_ENV, options.out_dir / "cartpole-mixed-v0", episodes=episodes, seed=options.seed)
    result = train_on_dataset(data, options.out_dir / "run", DTTrainOptions(
        preset="tiny-discrete", steps=steps, batch_size=batch, lr=1e-3, seed=options.seed, eval_episodes=0,
        progress=options.progress))
    results = evaluate_checkpoint(result.model_path, DEMO_ENV, list(targets), episodes=eval_episodes,
                                  seed=10_000 + options.seed)
    returns = data.returns()
    mean, best = float(returns.mean()), float(returns.max())
    plot = plot_returns(results, options.out_dir / "target_vs_achieved.png", data_mean=mean, data_best=best,
                        title=f"Decision Transformer, {DEMO_ENV}: {len(returns)} mixed-quality episodes")
    series = ", ".join(f"{r.target:.0f}→{r.mean:.0f}" for r in results)
    achieved = np.array([r.mean for r in results])
    rank = float(np.corrcoef(np.argsort(np.argsort(targets)), np.argsort(np.argsort(achieved)))[0, 1])
    return DemoResult(
        system="decision_transformer",
        claim="achieved return follows the target return asked for, beyond the data's average",
        metric=f"achieved return at target {targets[-1]:.0f} (target→achieved: {series}; data best {best:.0f})",
        value=results[-1].mean,
        baseline="average return in the data",
        baseline_value=mean,
        artifacts={"plot": plot.name, "dataset": path.name, "training": "run/metrics.png"},
        details={
            **{f"achieved@{r.target:.0f}": r.mean for r in results},
            **{f"std@{r.target:.0f}": r.std for r in results},
            "data_best": best, "data_mean": mean, "data_episodes": float(len(returns)),
            "target_achieved_rank_correlation": rank, "final_loss": result.final_loss,
            "steps": float(result.steps), "train_seconds": result.elapsed_s, "seconds": time.perf_counter() - start,
        },
    )


DEMO = Demo(system="decision_transformer", run=run, expected_seconds=49)
