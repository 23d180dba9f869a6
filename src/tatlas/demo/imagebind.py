"""``tatlas demo imagebind``: ImageBind's emergent alignment (Girdhar et al. 2023, §4.1, §4.4) in
miniature.

The tiny-world ImageBind learns from single-object world scenes for about a minute, with every
modality paired *only with images* (image-text, image-audio, image-depth, image-thermal, image-IMU;
:mod:`tatlas.models.imagebind.task`). It is then asked to retrieve across pairs it never saw
together -- audio -> text, depth -> text, IMU -> text, audio -> depth (and thermal -> text) -- on
fresh scenes. A hit is a gallery item that agrees with the query on every attribute both
modalities show (a sound, a motion and a caption show colour, shape, size and texture; a depth map
only shape and size); text galleries hold distinct captions; chance is computed exactly under the
same definition. The baseline is the same retrieval with the untrained model.

Embedding arithmetic (§4.4): the image of a scene plus the sound of another (a different colour
and a different shape) should retrieve images that take a property from each -- the image's shape
in the sound's colour (or the image's colour with the sound's shape: a sum cannot say which comes
from which) -- among images of neither source's own class, compared with either embedding alone
(:func:`tatlas.models.imagebind.task.arithmetic_retrieval`).
"""

from __future__ import annotations

import time

import torch

from ..train import TrainConfig, Trainer
from .spec import Demo, DemoOptions, DemoResult

# The recipe (from a handful of short runs on the mean emergent R@1, under a load average of ~5 on
# 2 cores): all six tiny-world encoders trained jointly from scratch on SCENES single-object scenes,
# rendered once and cached; batch 64 beat batch 128 at equal samples (0.30 against 0.15 at 15k
# samples) and matched batch 32; AdamW at 3e-3 with warm-up and cosine decay. 200 steps gave 0.21,
# 280 steps 0.35 and the arithmetic needs the longer run (at 200 steps the sum was no better than
# the sound alone).
STEPS, QUICK_STEPS, BATCH, LR, SCENES, QUICK_SCENES, EVAL_N = 280, 4, 64, 3e-3, 2048, 128, 512
HEADLINE = (("audio", "text"), ("depth", "text"), ("imu", "text"), ("audio", "depth"))


def _table(trained, untrained) -> str:
    """The retrieval and arithmetic numbers of a trained and an untrained model's ``BindReport``, as text."""
    from tatlas.models.imagebind.task import shared_attributes

    lines = [(f"{'retrieval (query -> gallery)':32s} {'R@1':>6s} {'R@5':>6s} {'untrained R@1':>14s} "
              f"{'chance R@1':>11s} {'chance R@5':>11s}  match on")]
    for pair, r in trained.retrieval.items():
        kind = "emergent" if pair in trained.emergent else "trained"
        name = f"{pair[0]} -> {pair[1]} ({kind})"
        lines.append(f"{name:32s} {r['r@1']:6.3f} {r['r@5']:6.3f} {untrained.retrieval[pair]['r@1']:14.3f} "
                     f"{r['chance@1']:11.3f} {r['chance@5']:11.3f}  {'+'.join(shared_attributes(*pair))}")
    a, u = trained.arithmetic, untrained.arithmetic
    lines.append("")
    lines.append(f"arithmetic: image + sound (other colour, other shape) -> an image with a property of each "
                 f"(source classes left out), {int(a['pairs'])} queries over {trained.n} images")
    lines.append(f"{'query':32s} {'R@1':>6s} {'R@5':>6s} {'untrained R@1':>14s}")
    for name in ("sum", "image", "audio"):
        label = {"sum": "image + audio", "image": "image alone", "audio": "audio alone"}[name]
        lines.append(f"{label:32s} {a[name + '@1']:6.3f} {a[name + '@5']:6.3f} {u[name + '@1']:14.3f}")
    lines.append(f"{'chance':32s} {a['chance@1']:6.3f} {a['chance@5']:6.3f}")
    return "\n".join(lines) + "\n"


def run(options: DemoOptions) -> DemoResult:
    """Every op here is small: on a shared 2-core machine two threads made a training step 10x
    slower (6-10 s against 0.6 s, under a load average of 4.7), on a quiet one they help; the shared
    trainer picks the thread count by timing its own steps (:mod:`tatlas.nn.threads`)."""
    import tatlas
    import tatlas.models.imagebind.system  # registers "imagebind"
    from tatlas.models.imagebind.task import BindDataset, bind_report, make_task

    start = time.perf_counter()
    steps = QUICK_STEPS if options.quick else STEPS
    scenes = QUICK_SCENES if options.quick else SCENES
    eval_n = QUICK_SCENES if options.quick else EVAL_N
    torch.manual_seed(options.seed)
    model = tatlas.create("imagebind", "tiny-world")
    eval_data = BindDataset(model.config, seed=options.seed + 10_000, length=eval_n).prerender()
    untrained = bind_report(model, seed=options.seed, data=eval_data)
    task = make_task(model.config, options.seed, length=scenes)
    task.train_data.prerender()
    render_s = time.perf_counter() - start
    cfg = TrainConfig(steps=steps, batch_size=min(BATCH, scenes), lr=LR, warmup_steps=max(1, steps // 10),
                      weight_decay=0.1, eval_every=None, log_every=10, seed=options.seed,
                      out_dir=options.out_dir / "run", progress=options.progress)
    result = Trainer(model, task.loss_fn, task.train_data, cfg, collate_fn=task.collate_fn).fit()
    report = bind_report(model, seed=options.seed, data=eval_data)
    options.out_dir.mkdir(parents=True, exist_ok=True)
    (options.out_dir / "retrieval.txt").write_text(_table(report, untrained))

    details: dict[str, float] = {f"{q}->{g} r@1": report.retrieval[(q, g)]["r@1"] for q, g in HEADLINE}
    for (q, g), r in report.retrieval.items():
        for key in ("r@1", "r@5", "chance@1", "chance@5"):
            details[f"{q}->{g} {key}"] = r[key]
        details[f"{q}->{g} untrained r@1"] = untrained.retrieval[(q, g)]["r@1"]
    for key, v in report.arithmetic.items():
        details[f"arithmetic {key}"] = v
    for key in ("sum@1", "image@1", "audio@1"):
        details[f"arithmetic untrained {key}"] = untrained.arithmetic[key]
    details.update({
        "headline_chance_r@1": report.mean_emergent("chance@1", HEADLINE),
        "eval_scenes": float(report.n), "train_scenes": float(scenes), "steps": float(result.steps),
        "final_loss": result.final_loss, "samples_per_s": result.samples_per_s, "render_s": render_s,
        "torch_threads": float(torch.get_num_threads()),
    })
    return DemoResult(
        system="imagebind",
        claim="retrieval between modalities never trained together (audio/depth/IMU -> text, audio -> depth), "
              "bound only through images",
        metric="mean emergent R@1 (audio->text, depth->text, IMU->text, audio->depth)",
        value=report.mean_emergent("r@1", HEADLINE),
        baseline="untrained model",
        baseline_value=untrained.mean_emergent("r@1", HEADLINE),
        artifacts={"plot": "run/metrics.png", "table": "retrieval.txt", "weights": "run/model.safetensors"},
        details=details,
    )


DEMO = Demo(system="imagebind", run=run, expected_seconds=91)
