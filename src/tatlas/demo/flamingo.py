"""``tatlas demo flamingo``: few-shot learning in context (Alayrac et al. 2022, "Flamingo", §3 and
Figure 1) in miniature: a handful of interleaved examples tells the model which task to do.

Each test prompt interleaves pictures and text (:mod:`tatlas.models.flamingo.task`)::

    <image>red.<|endofchunk|><image>blue.<|endofchunk|> ... <image>___

An episode's task (the object's colour, its size or its texture) is never named; only the examples
show it. The pictures are of the world's held-out colour-shape pairs (never seen in training).
Scored by greedy exact match at 0, 1, 2, 4 shots on the same queries: with no example the model
can only guess the task (at best about 1/3 of the queries right); with examples it reads the task
off their answers and the answer off the query picture.

The recipe, all through the shared trainer, each part trained as the paper has it:

1. *LM*: the ``tiny-world`` decoder pretrained on the text corpus with the world's captions (so it
   knows the words). Then it is frozen.
2. *Vision*: the CLIP ``tiny`` model trained contrastively on the world's captioned scenes (the CLIP
   row's task); its image tower is copied into Flamingo and frozen.
3. *Flamingo*: only the Perceiver resampler and the tanh-gated cross-attention layers learn, on
   training-split episodes with 0 to 4 shots.

Baselines: the 0-shot figure, and the same model with its gates closed (``tanh(0)``: the frozen LM
alone, which can read the task from the examples but cannot see the query).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.world import WorldConfig
from ..train import TrainConfig, Trainer
from .spec import Demo, DemoOptions, DemoResult


@dataclass(frozen=True)
class Recipe:
    """Steps, batch and learning rate of each stage; test episodes."""

    lm: tuple[int, int, float]
    clip: tuple[int, int, float]
    flamingo: tuple[int, int, float]
    episodes: int
    per_kind: int = 16


RECIPE = Recipe(lm=(200, 32, 3e-3), clip=(250, 64, 2e-3), flamingo=(500, 32, 3e-3), episodes=198)
QUICK = Recipe(lm=(20, 16, 3e-3), clip=(10, 32, 2e-3), flamingo=(20, 16, 2e-3), episodes=30, per_kind=4)
CLIP_WORLD = WorldConfig(max_objects=1)


def fit(model: nn.Module, task: Any, stage: tuple[int, int, float], out_dir: Path, options: DemoOptions,
        loss_fn: Any = None, collate_fn: Any = None) -> Any:
    """One stage through the shared trainer (AdamW, warm-up over a tenth, cosine), no evaluation."""
    steps, batch, lr = stage
    cfg = TrainConfig(steps=steps, batch_size=batch, lr=lr, warmup_steps=max(1, steps // 10), weight_decay=0.1,
                      log_every=max(1, steps // 8), seed=options.seed, out_dir=out_dir, progress=options.progress)
    return Trainer(model, loss_fn or task.loss_fn, task if loss_fn else task.train_data, cfg,
                   collate_fn=collate_fn or getattr(task, "collate_fn", None)).fit()


def run(options: DemoOptions) -> DemoResult:
    import tatlas
    import tatlas.models.clip.system  # noqa: F401  (registers "clip")
    import tatlas.models.flamingo.system  # noqa: F401  (registers "flamingo")
    from tatlas.models.clip.config import PRESETS as CLIP_PRESETS
    from tatlas.models.clip.task import make_task as clip_task
    from tatlas.data import TextDataset
    from tatlas.models.flamingo.task import (
        TASKS, SceneBank, eval_episodes, few_shot_accuracy, freeze_for_fewshot, gates_closed, make_task,
    )
    from tatlas.models.llm.task import lm_loss
    from tatlas.models.llm import LLM

    start = time.perf_counter()
    recipe = QUICK if options.quick else RECIPE
    torch.manual_seed(options.seed)
    model = tatlas.create("flamingo", "tiny-world")
    config = model.config
    stats: dict[str, float] = {}

    # 1. the LM: pretrained on text with the world's captions, then frozen
    lm = LLM(config.text)
    text = TextDataset("train", 64, options.seed, world_captions=4000)
    result = fit(lm, text, recipe.lm, options.out_dir / "run-lm", options, loss_fn=lm_loss)
    stats.update(loss_lm=result.final_loss, seconds_lm=result.elapsed_s)
    model.language_model.load_state_dict(lm.state_dict())

    # 2. the vision tower: CLIP on the world's captioned scenes, its image tower copied in
    clip_config = dataclasses.replace(CLIP_PRESETS["tiny"], vision=config.vision,
                                      text=dataclasses.replace(CLIP_PRESETS["tiny"].text, context_length=16))
    clip = tatlas.create("clip", "tiny", vision=clip_config.vision, text=clip_config.text)
    task = clip_task(clip.config, options.seed, length=2048, world=CLIP_WORLD, cache=True)
    result = fit(clip, dataclasses.replace(task, eval_fn=None), recipe.clip, options.out_dir / "run-clip", options)
    stats.update(loss_clip=result.final_loss, seconds_clip=result.elapsed_s)
    model.vision.load_state_dict(clip.vision.state_dict())

    # 3. Flamingo: resampler and gated cross-attention only
    trainable = freeze_for_fewshot(model)
    v = config.vision
    bank_args = {"image_size": v.image_size, "mean": v.image_mean, "std": v.image_std, "per_kind": recipe.per_kind}
    train_bank = SceneBank("train", seed=options.seed, **bank_args)
    task = make_task(config, options.seed, bank=train_bank)
    result = fit(model, task, recipe.flamingo, options.out_dir / "run-flamingo", options)
    stats.update(loss_flamingo=result.final_loss, seconds_flamingo=result.elapsed_s,
                 trainable_params=float(sum(p.numel() for n, p in model.named_parameters() if n in trainable)))

    # scored on held-out pairs and unseen words
    test_bank = SceneBank("test", seed=options.seed + 1, **bank_args)
    episodes = eval_episodes(test_bank, seed=options.seed + 1, n=recipe.episodes)
    accs = few_shot_accuracy(model, test_bank, episodes)
    with gates_closed(model):
        blind = few_shot_accuracy(model, test_bank, episodes)
    seen = few_shot_accuracy(model, train_bank, eval_episodes(train_bank, seed=options.seed + 2, n=recipe.episodes),
                             shots=(4,))
    per_task = {f"acc_4shot_{t}": few_shot_accuracy(model, test_bank, episodes[i :: len(TASKS)], shots=(4,))[4]
                for i, t in enumerate(TASKS)}
    details = {**{f"acc_{k}shot": a for k, a in accs.items()}, **per_task,
               **{f"gates_closed_{k}shot": a for k, a in blind.items()}, "train_split_acc_4shot": seen[4],
               **stats, "episodes": float(len(episodes)), "torch_threads": float(torch.get_num_threads())}
    (options.out_dir / "accuracy.txt").write_text(
        "shots  flamingo  gates_closed\n" + "".join(f"{k:5d}  {accs[k]:8.3f}  {blind[k]:12.3f}\n" for k in accs))
    return DemoResult(
        system="flamingo",
        claim="a few interleaved examples tell the frozen LM which task to do: accuracy rises with the shots",
        metric=f"4-shot exact match, colour/size/texture task shown only by examples, held-out pairs ({len(episodes)} prompts)",
        value=accs[4],
        baseline="0-shot",
        baseline_value=accs[0],
        seconds=time.perf_counter() - start,
        artifacts={"plot": "run-flamingo/metrics.png", "accuracy": "accuracy.txt"},
        details=details,
    )


DEMO = Demo(system="flamingo", run=run, expected_seconds=121)
