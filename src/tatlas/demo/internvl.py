"""``tatlas demo internvl``: InternVL's dynamic high resolution (Chen et al. 2024, InternVL 1.5 §3.2)
and its instruction tuning (InternVL 2.5 §4.2), in miniature.

The ``tiny-world`` InternVL (an InternViT of 32-px tiles, pixel shuffle to 16 tokens a tile, the
LayerNorm-MLP connector, a Qwen2-style decoder) learns the world's question-answer conversations
by the LLaVA demo's recipe (:func:`tatlas.demo.llava.train_recipe`): the decoder warmed up alone
on the conversations without images (the blind baseline), then InternVL's stage 2, ``"full"``:
tower, connector and LLM all trained, on square scenes and on 2:1 wide ones.

A wide scene (:func:`~tatlas.models.vlm_task.wide_image`) is a world scene beside an empty square of
its background, so its objects are small in the whole. In training each wide scene is seen either
the InternVL 1.5 way — cut into its closest grid of tiles (1 x 2) plus a thumbnail of the whole —
or squashed into one 32-px tile (half its width lost), half and half, so that neither way is new at
test time. Scored, as in the LLaVA demo: greedy answers through :func:`tatlas.generate.generate`
(static cache), exact match, on held-out colour-shape pairs — square scenes beside the blind LLM
and chance; and the same wide test scenes read from one downscaled tile and from tiles + thumbnail.
"""

from __future__ import annotations

import time

import torch

from .llava import Recipe, generate_answers, report_details, train_recipe, vqa_report
from .spec import Demo, DemoOptions, DemoResult

# 200/400 steps took 131 s on 2 quiet cores (VQA 0.30 vs blind 0.12); trimmed for the whole `tatlas demo`
RECIPE = Recipe(blind_steps=120, blind_lr=1.5e-3, stages=(("full", 300, 1.5e-3),))
QUICK = Recipe(blind_steps=12, blind_lr=1.5e-3, stages=(("full", 12, 1.5e-3),), batch=16)
WIDE = 0.5  # the fraction of training scenes made 2:1
TEST_SCENES, QUICK_TEST_SCENES = 100, 10


def run(options: DemoOptions) -> DemoResult:
    import tatlas
    import tatlas.models.internvl.system  # noqa: F401  (registers "internvl")
    from tatlas.models.vlm_task import WORLD_QUESTIONS, baseline_accuracy, score, tiling_settings, vqa_items

    start = time.perf_counter()
    recipe = QUICK if options.quick else RECIPE
    n = QUICK_TEST_SCENES if options.quick else TEST_SCENES
    torch.manual_seed(options.seed)
    model = tatlas.create("internvl", "tiny-world")
    dynamic, single = tiling_settings(model.config, max_tiles=2), tiling_settings(model.config, max_tiles=1)
    blind, stats = train_recipe(model, recipe, options, wide=WIDE, tilings=(dynamic, single))
    items = vqa_items(model.config, seed=options.seed + 1, n=n, tiling=dynamic)
    report = vqa_report(model, blind, items, options.seed)
    wide: dict[str, float] = {}
    for name, tiling in (("tiles", dynamic), ("one_tile", single)):
        wide_items = vqa_items(model.config, seed=options.seed + 2, n=n, wide=True, tiling=tiling)
        answers = generate_answers(model, wide_items)
        wide.update({f"wide_{name}_{k}": v for k, v in
                     score(wide_items, [a == it.answer for a, it in zip(answers, wide_items, strict=True)]).items()})
    wide.update({f"wide_chance_{k}": v for k, v in baseline_accuracy(wide_items, WORLD_QUESTIONS,
                                                                     seed=options.seed)["chance"].items()})
    return DemoResult(
        system="internvl",
        claim="InternVL answers questions about colour-shape pairs it never saw, which its LLM alone cannot; "
              "on wide scenes, tiles + thumbnail vs one downscaled tile",
        metric=f"VQA exact match, held-out colour-shape pairs ({len(items)} questions)",
        value=report["vqa_accuracy"],
        baseline="the same LLM without the image",
        baseline_value=report["blind_accuracy"],
        seconds=time.perf_counter() - start,
        artifacts={"plot": "run-full/metrics.png"},
        details=report_details(report, stats, len(items), wide_tiles_accuracy=wide.pop("wide_tiles_accuracy"),
                               wide_one_tile_accuracy=wide.pop("wide_one_tile_accuracy"), **wide),
    )


DEMO = Demo(system="internvl", run=run, expected_seconds=76)
