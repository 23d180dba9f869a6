"""``tatlas demo llava``: visual instruction tuning (Liu et al. 2023, "Visual Instruction Tuning")
in miniature — a language model that learns to answer questions about images, and answers them
for colour-shape pairs it never saw.

The world's ``"train"`` scenes never show (nor name) the held-out colour-shape pairs; every
``"test"`` scene's main object is one. The questions (:data:`~tatlas.models.vlm_task.WORLD_QUESTIONS`):
the main object's colour, asked by its shape ("what colour is the star?"), and its shape, asked by
its colour ("what shape is the red object?"), in one-object scenes; the object count ("how many
objects are there?") of one- to three-object scenes. A held-out pair's colour (or shape) is never
the answer to that question in training, so a text-only model cannot answer it: it must be read
from the image, which is the compositional part.

The recipe (:func:`train_recipe`), all through the shared trainer, from random weights (the paper
starts from a pretrained CLIP tower and a pretrained Vicuna; a one-minute model has neither):

0. *LLM warm-up*: the ``tiny-world`` decoder alone (:class:`~tatlas.models.llm.LLM`) learns the
   question-answer conversations with the image tokens absent. This is also the **blind baseline**:
   the same LLM on the same questions and answers, without the image.
1. ``"scratch"`` (:data:`~tatlas.models.vlm_task.STAGES`): LLaVA with that LLM, every part trained
   on the conversations with their images (the random CLIP tower has to learn to see: the stage
   the papers skip by starting from CLIP).
2. ``"instruct"`` (§4.1 stage 2): the vision tower frozen, projector and LLM trained on.

Scored: greedy answers through :func:`tatlas.generate.generate` (static cache), exact match, on
held-out test scenes, beside the blind LLM and chance (each question kind's most frequent training
answer); ``blind_oracle`` is the best any text-only model can score (each exact question's most
frequent training answer). Shape is where a minute is too short: the tiny tower learns colours
and counts long before shapes, and the language prior (a red star never was) wins there.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import EOS, PAD, ByteTokenizer
from ..generate import GenerationConfig, generate
from ..train import TrainConfig, Trainer
from .spec import Demo, DemoOptions, DemoResult


@dataclass(frozen=True)
class Recipe:
    """Steps of the blind LLM warm-up, then each VLM stage's ``(name, steps, lr)``; one batch size."""

    blind_steps: int
    blind_lr: float
    stages: tuple[tuple[str, int, float], ...]
    batch: int = 32


# chosen from short runs on 1 of 2 CPU cores under load (learning rates 1e-3..3e-3, warm-ups, 0-200
# warm-up steps, captions mixed in or not): at 3e-3 with a short warm-up the VLM stays on its
# language prior; a warmed-up LLM makes the image's tokens pay off sooner.
# 200/300/100 steps took 156 s on 2 quiet cores (VQA 0.57 vs blind 0.16); trimmed so that the whole
# `tatlas demo` stays near 10 minutes.
RECIPE = Recipe(blind_steps=120, blind_lr=1.5e-3, stages=(("scratch", 220, 1.5e-3), ("instruct", 60, 1e-3)))
QUICK = Recipe(blind_steps=12, blind_lr=1.5e-3, stages=(("scratch", 12, 1.5e-3), ("instruct", 6, 1e-3)), batch=16)
TEST_SCENES, QUICK_TEST_SCENES = 100, 10


def fit(model: nn.Module, task: Any, steps: int, lr: float, batch: int, out_dir: Path, options: DemoOptions) -> Any:
    """One stage through the shared trainer (AdamW, warm-up over a tenth of it, cosine)."""
    cfg = TrainConfig(steps=steps, batch_size=batch, lr=lr, warmup_steps=max(1, steps // 10), weight_decay=0.1,
                      log_every=max(1, steps // 8), seed=options.seed, out_dir=out_dir, progress=options.progress)
    return Trainer(model, task.loss_fn, task.train_data, cfg, collate_fn=task.collate_fn).fit()


def train_recipe(model: nn.Module, recipe: Recipe, options: DemoOptions, **task_kwargs: Any
                 ) -> tuple[nn.Module, dict[str, float]]:
    """Train ``model`` (LLaVA or InternVL) by ``recipe``: the blind LLM warm-up, its weights into
    ``model.language_model``, then each stage (:func:`~tatlas.models.vlm_task.freeze_for_stage`).
    Returns the blind LLM and each run's final loss (``loss_<name>``) and seconds. ``task_kwargs`` go
    to :func:`~tatlas.models.vlm_task.make_task` (question sets, wide scenes, tilings ...)."""
    from ..models.llm import LLM
    from ..models.vlm_task import freeze_for_stage, make_task

    stats: dict[str, float] = {}
    first = recipe.stages[0][0]
    blind = LLM(model.config.text)
    task = make_task(model.config, options.seed, stage=first, blind=True, **task_kwargs)
    result = fit(blind, task, recipe.blind_steps, recipe.blind_lr, recipe.batch, options.out_dir / "run-blind", options)
    stats.update(loss_blind=result.final_loss, seconds_blind=result.elapsed_s)
    model.language_model.load_state_dict(blind.state_dict())
    for name, steps, lr in recipe.stages:
        freeze_for_stage(model, name)
        task = make_task(model.config, options.seed, stage=name, **task_kwargs)
        result = fit(model, task, steps, lr, recipe.batch, options.out_dir / f"run-{name}", options)
        stats.update({f"loss_{name}": result.final_loss, f"seconds_{name}": result.elapsed_s})
    return blind, stats


@torch.no_grad()
def generate_answers(model: nn.Module, items: Sequence[Any], *, blind: bool = False, batch_size: int = 64
                     ) -> list[str]:
    """Greedy answers through :func:`tatlas.generate.generate` (static cache, stop at ``EOS``) to each
    item's question, with its image unless ``blind`` (a text-only model asked the question alone)."""
    from ..models.vlm_task import image_inputs, prompt_tokens

    tok = ByteTokenizer()
    gen = GenerationConfig(max_new_tokens=10, stop_tokens=(EOS,), pad_token=PAD, static_cache=True)
    config = getattr(model, "config", None)
    model.eval()
    out: list[str] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        prompts = [prompt_tokens(config, it, blind=blind) for it in chunk]
        kwargs = {} if blind else image_inputs(config, chunk)
        result = generate(model, prompts, gen, **kwargs)
        out += [tok.decode(ids) for ids in result.as_lists(stop_tokens=(EOS,))]
    return out


def vqa_report(model: nn.Module, blind: nn.Module, items: Sequence[Any], seed: int) -> dict[str, float]:
    """Greedy exact-match accuracy (overall and per kind) of the VLM, the blind LLM, chance and the
    blind oracle on ``items``, flat: ``vqa_accuracy``, ``blind_colour_accuracy``, ``chance_...``."""
    from ..models.vlm_task import WORLD_QUESTIONS, baseline_accuracy, score

    out: dict[str, float] = {}
    for name, m, is_blind in (("vqa", model, False), ("blind", blind, True)):
        answers = generate_answers(m, items, blind=is_blind)
        out.update({f"{name}_{k}": v for k, v in score(items, [a == it.answer for a, it in
                                                               zip(answers, items, strict=True)]).items()})
    for name, accs in baseline_accuracy(items, WORLD_QUESTIONS, seed=seed).items():
        out.update({f"{name}_{k}": v for k, v in accs.items()})
    return out


def run(options: DemoOptions) -> DemoResult:
    import tatlas
    import tatlas.models.llava.system  # noqa: F401  (registers "llava")
    from tatlas.models.vlm_task import vqa_items

    start = time.perf_counter()
    recipe = QUICK if options.quick else RECIPE
    torch.manual_seed(options.seed)
    model = tatlas.create("llava", "tiny-world")
    blind, stats = train_recipe(model, recipe, options)
    items = vqa_items(model.config, seed=options.seed + 1, n=QUICK_TEST_SCENES if options.quick else TEST_SCENES)
    report = vqa_report(model, blind, items, options.seed)
    return DemoResult(
        system="llava",
        claim="a language model taught to see answers questions about colour-shape pairs it never saw, "
              "which the same LLM without the image cannot",
        metric=f"VQA exact match, held-out colour-shape pairs ({len(items)} questions)",
        value=report["vqa_accuracy"],
        baseline="the same LLM without the image",
        baseline_value=report["blind_accuracy"],
        seconds=time.perf_counter() - start,
        artifacts={"plot": "run-scratch/metrics.png"},
        details=report_details(report, stats, len(items)),
    )


def report_details(report: dict[str, float], stats: dict[str, float], questions: int,
                   **extra: float) -> dict[str, float]:
    """A VLM demo's details: ``chance`` and ``blind_oracle`` first, ``extra``, the rest of
    :func:`vqa_report` (less the headline figures), the training ``stats``."""
    headline = ("vqa_accuracy", "blind_accuracy", "chance_accuracy", "blind_oracle_accuracy")
    return {"chance": report["chance_accuracy"], "blind_oracle": report["blind_oracle_accuracy"], **extra,
            **{k: v for k, v in report.items() if k not in headline}, **stats,
            "questions": float(questions), "torch_threads": float(torch.get_num_threads())}


DEMO = Demo(system="llava", run=run, expected_seconds=71)
