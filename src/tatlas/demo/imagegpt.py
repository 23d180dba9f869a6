"""``tatlas demo imagegpt``: pre-train the tiny ImageGPT on the embedded digits (8x8 digits at
random offsets on a 12x12 canvas, 16 k-means colours) and show the headline of Chen et al. 2020
(§4: linear probes on the average-pooled features of a model trained only to predict the next
pixel, best from an intermediate layer) beside a linear probe on the raw pixels and beside chance;
then complete the bottom halves of test digits (the paper's Figure 1).

Raw pixels are a strong linear representation of centred digits (~97 %); the random offsets are
what a linear map of pixels cannot undo, as with the objects of natural images. The probe's layer
and strength are chosen on a validation fifth of the training digits, never on the test set.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch
from torch import Tensor, nn

from ..models.imagegpt.sample import (
    kept_pixels,
    mask_images,
    write_grid,
)
from ..jobs.imagegpt import complete
from .spec import Demo, DemoOptions, DemoResult


# ---------------------------------------------------------------------- the demo

# The tiny preset (12x12 canvases, 144 pixels per image): sized for about a minute on 2 CPU cores.
DEMO_OVERRIDES: dict[str, object] = {}
DEMO_STEPS = 600
DEMO_BATCH = 32
DEMO_LR = 3e-3

PROBE_C = (0.01, 0.1, 1.0)  # inverse L2 strengths tried for every probe, chosen on validation


def _probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, *,
           seed: int, max_iter: int, C: float) -> float:
    """Test accuracy of a linear probe: standardised inputs, L2 logistic regression."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    # one BLAS thread: these problems are small, and threads that wait for busy cores slow them 100x
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # quick mode stops lbfgs early on purpose
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, random_state=seed))
        clf.fit(train_x, train_y)
        return float(clf.score(test_x, test_y))


def probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, *,
                   seed: int = 0, max_iter: int = 500) -> tuple[float, float]:
    """``(validation accuracy, test accuracy)`` of a linear probe whose strength ``C`` is chosen
    from :data:`PROBE_C` on a validation fifth of the training set (never on the test set), then
    refitted on the whole training set."""
    order = np.random.default_rng(seed).permutation(len(train_y))
    val, fit = order[: len(train_y) // 5], order[len(train_y) // 5 :]
    scores = {C: _probe(train_x[fit], train_y[fit], train_x[val], train_y[val], seed=seed, max_iter=max_iter, C=C)
              for C in PROBE_C}
    best = max(PROBE_C, key=lambda C: scores[C])
    return scores[best], _probe(train_x, train_y, test_x, test_y, seed=seed, max_iter=max_iter, C=best)


@torch.no_grad()
def _features(model: nn.Module, pixels: Tensor, batch: int = 256) -> np.ndarray:
    """Pooled features of every layer, ``[N, layers + 1, C]``."""
    model.eval()
    out = [model.pooled_features(model.inputs(pixels[i : i + batch])) for i in range(0, len(pixels), batch)]
    return torch.cat(out).float().numpy()


def linear_probes(model: nn.Module, train_images: Tensor, train_labels: Tensor, test_images: Tensor,
                  test_labels: Tensor, *, seed: int = 0, max_iter: int = 500) -> dict[str, float]:
    """Linear probes (:func:`probe_accuracy`) on every layer's pooled features. The best layer is
    chosen by validation accuracy (never on the test set). Returns ``best_layer``, ``probe`` (its
    test accuracy), ``val/layer<l>`` and ``test/layer<l>`` for every layer."""
    train_f = _features(model, model.encode_images(train_images))
    test_f = _features(model, model.encode_images(test_images))
    y, y_test = train_labels.numpy(), test_labels.numpy()
    out: dict[str, float] = {}
    for layer in range(train_f.shape[1]):
        out[f"val/layer{layer}"], out[f"test/layer{layer}"] = probe_accuracy(
            train_f[:, layer], y, test_f[:, layer], y_test, seed=seed, max_iter=max_iter)
    best = max(range(train_f.shape[1]), key=lambda layer: out[f"val/layer{layer}"])
    out["best_layer"], out["probe"] = float(best), out[f"test/layer{best}"]
    return out


def run(options: DemoOptions) -> DemoResult:
    import tatlas
    from ..models.imagegpt.task import digit_images
    from ..train import TrainConfig
    from ..train.run import train_system

    start = time.perf_counter()
    steps, batch = (8, 16) if options.quick else (DEMO_STEPS, DEMO_BATCH)
    cfg = TrainConfig(steps=steps, batch_size=batch, lr=DEMO_LR, warmup_steps=max(1, steps // 20), weight_decay=0.01,
                      min_lr_ratio=0.05, log_every=25, seed=options.seed, out_dir=options.out_dir / "run",
                      progress=options.progress)
    result = train_system("imagegpt", cfg, preset="tiny", overrides=DEMO_OVERRIDES)
    model = tatlas.load(result.model_path, system="imagegpt").eval()
    c = model.config
    train_x, train_y = digit_images("train", size=c.image_size, seed=options.seed)
    test_x, test_y = digit_images("test", size=c.image_size, seed=options.seed)
    max_iter = 100 if options.quick else 500
    if options.quick:  # probes on a subset
        train_x, train_y, test_x, test_y = train_x[:400], train_y[:400], test_x[:200], test_y[:200]

    probes = linear_probes(model, train_x, train_y, test_x, test_y, seed=options.seed, max_iter=max_iter)
    torch.manual_seed(options.seed)
    untrained = tatlas.create("imagegpt", "tiny", **DEMO_OVERRIDES).eval()
    untrained.palette.set_(model.palette.clusters)
    probes_untrained = linear_probes(untrained, train_x, train_y, test_x, test_y, seed=options.seed,
                                     max_iter=max_iter)
    _, pixels = probe_accuracy(train_x.flatten(1).numpy(), train_y.numpy(), test_x.flatten(1).numpy(),
                               test_y.numpy(), seed=options.seed, max_iter=max_iter)

    shown = 4 if options.quick else 8
    tokens = model.encode_images(test_x[:shown])
    fraction = (c.image_size // 2) / c.image_size
    samples = complete(model, tokens, fraction=fraction, n_samples=3, temperature=1.0, seed=options.seed)
    kept = kept_pixels(tokens.shape[1], fraction)
    grid = write_grid(options.out_dir / "completions.png", test_x[:shown],
                      mask_images(model.decode_images(tokens), kept),
                      model.decode_images(samples.flatten(0, 1)).unflatten(0, (shown, 3)))
    best = int(probes["best_layer"])
    return DemoResult(
        system="imagegpt",
        claim="linear probe on pooled features of a model trained only to predict pixels, vs raw pixels",
        metric=f"probe accuracy (layer {best} of {c.layers})",
        value=probes["probe"],
        baseline="raw-pixel probe",
        baseline_value=pixels,
        artifacts={"completions": grid.name, "plot": "run/metrics.png"},
        details={
            "chance": 0.1, "untrained_model_probe": probes_untrained["probe"],
            "val_bits_per_pixel": result.eval.get("val_bits_per_pixel", float("nan")), "steps": float(result.steps),
            "train_seconds": result.elapsed_s, "seconds": time.perf_counter() - start,
            **{k: v for k, v in probes.items() if k.startswith("test/")},
        },
    )


DEMO = Demo(system="imagegpt", run=run, expected_seconds=178)
