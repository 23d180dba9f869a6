"""ImageGPT beyond parity: palettes, cached decoding, probe features, completion, image files,
the converter's round trip, bad input, and the demo in quick mode."""

import math

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

import tatlas
from tatlas.demo import DemoOptions
from tatlas.jobs.imagegpt import complete, complete_image_file
from tatlas.demo.imagegpt import run as run_demo
from tatlas.models.imagegpt import ImageGPT, fit_palette
from tatlas.models.imagegpt.convert import from_hf, to_hf
from tatlas.models.imagegpt.palette import default_colours
from tatlas.models.imagegpt.sample import ImageReadError, read_image


@pytest.fixture(scope="module")
def model() -> ImageGPT:
    torch.manual_seed(0)
    m = tatlas.create("imagegpt", "tiny", image_size=6, dim=32, layers=3, heads=4).eval()
    with torch.no_grad():  # a less uniform next-pixel distribution than the init's
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return m


def test_palette_encode_decode_round_trip(model, gen):
    colours = torch.rand(16, 3, generator=gen)
    model.palette.set_(colours)
    tokens = torch.randint(0, 16, (3, 36), generator=gen)
    images = model.decode_images(tokens)
    assert images.shape == (3, 3, 6, 6)
    assert torch.equal(model.encode_images(images), tokens)
    # encoding picks the nearest colour: a slightly moved colour still maps back
    assert torch.equal(model.encode_images((images + 1e-3).clamp(0, 1)), tokens)


def test_kmeans_palette_is_deterministic_and_fits_the_data(gen):
    colours = torch.tensor([[0.1, 0.2, 0.9], [0.8, 0.1, 0.1], [0.2, 0.9, 0.2], [0.95, 0.95, 0.95]])
    idx = torch.randint(0, 4, (20, 8, 8), generator=gen)
    images = (colours[idx] + 0.02 * torch.randn(20, 8, 8, 3, generator=gen)).clamp(0, 1).permute(0, 3, 1, 2)
    a, b = fit_palette(images, 4, seed=3), fit_palette(images, 4, seed=3)
    assert torch.equal(a, b)
    # every true colour has a cluster within noise distance
    assert torch.cdist(colours, a).min(dim=1).values.max() < 0.05
    assert fit_palette(images, 16, seed=0, max_pixels=500).shape == (16, 3)


def test_default_palette_is_a_lattice_or_grey_ramp():
    lattice = default_colours(512)
    assert lattice.shape == (512, 3) and len(torch.unique(lattice, dim=0)) == 512
    grey = default_colours(16)
    assert torch.equal(grey[:, 0], grey[:, 1]) and grey[0, 0] == 0 and grey[-1, 0] == 1


def test_palette_that_does_not_fit_the_vocabulary_is_an_error(model):
    with pytest.raises(ValueError, match=r"palette of 8 colours does not fit a model with 16 colour clusters "
                                         r"\(vocabulary 17"):
        model.palette.set_(torch.rand(8, 3))


def test_features_shape_and_layer_bounds(model, gen):
    tokens = torch.cat([torch.full((4, 1), 16), torch.randint(0, 16, (4, 35), generator=gen)], dim=1)
    with torch.no_grad():
        every = model.pooled_features(tokens)
        assert every.shape == (4, 4, 32)
        for layer in range(4):
            torch.testing.assert_close(model.features(tokens, layer), every[:, layer], atol=1e-5, rtol=1e-5)
    for bad in (-1, 4):
        with pytest.raises(ValueError, match=r"layer: expected 0..3 .*got " + str(bad)):
            model.features(tokens, bad)


def test_tokens_out_of_range_are_named(model):
    with pytest.raises(ValueError, match=r"tokens: expected ids in 0..16, got 17"):
        model(torch.tensor([[16, 0, 17]]))
    with pytest.raises(ValueError, match=r"expected an integer tensor"):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"expected colour tokens in \[0, 15\], got values in \[0, 16\]"):
        complete(model, torch.full((1, 36), 16).index_fill_(1, torch.tensor([0]), 0))
    with pytest.raises(ValueError, match=r"expected \[B, 3, 6, 6\]"):
        model.encode_images(torch.rand(1, 3, 5, 5))


def test_completion_keeps_the_given_prefix(model, gen):
    pixels = torch.randint(0, 16, (2, 36), generator=gen)
    out = complete(model, pixels, fraction=0.5, n_samples=3, temperature=1.0, top_k=8, seed=0)
    assert out.shape == (2, 3, 36)
    assert torch.equal(out[:, :, :18], pixels[:, None, :18].expand(2, 3, 18))
    assert out.min() >= 0 and out.max() < 16
    assert torch.equal(out, complete(model, pixels, fraction=0.5, n_samples=3, top_k=8, seed=0))  # seeded
    assert not torch.equal(out[:, 0, 18:], out[:, 1, 18:])  # samples differ
    whole = complete(model, pixels, fraction=1.0)
    assert torch.equal(whole[:, 0], pixels)
    uncond = complete(model, pixels[:1], fraction=0.0, temperature=0.0)
    assert uncond.shape == (1, 1, 36)


def test_complete_image_file_writes_the_grid_from_any_mode(model, tmp_path, gen):
    rgba = np.random.default_rng(0).random((10, 14, 4)).astype(np.float32)
    rgba[..., 3] = 0.5
    mpimg.imsave(tmp_path / "rgba.png", rgba)
    grey = np.random.default_rng(1).random((9, 9)).astype(np.float32)
    mpimg.imsave(tmp_path / "grey.png", grey, cmap="gray")
    from PIL import Image  # Pillow ships with matplotlib; used here only to write a palette-mode PNG

    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8), mode="L").convert("P").save(tmp_path / "pal.png")
    for name in ("rgba.png", "grey.png", "pal.png"):
        report = complete_image_file(tmp_path / name, out=tmp_path / f"grid-{name}", model=model, top_half=True,
                                     samples=2, top_k=4)
        grid = mpimg.imread(report.out)
        assert grid.ndim == 3 and grid.shape[0] > 64 and grid.shape[1] > 4 * 64
        assert report.kept == 18 and report.total == 36
        assert any("resized" in n for n in report.notes)
    image, notes = read_image(tmp_path / "rgba.png", 6)
    assert image.shape == (3, 6, 6) and 0 <= image.min() and image.max() <= 1
    assert "alpha channel composited over black" in notes and "resized 14x10 -> 6x6 (aspect ratio changed)" in notes


def test_corrupt_or_missing_image_is_a_one_line_error(model, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.raises(ImageReadError, match=r"broken.png: not a readable image") as e:
        complete_image_file(bad, out=tmp_path / "g.png", model=model)
    assert "\n" not in str(e.value)
    with pytest.raises(ImageReadError, match=r"missing.png: no such image file"):
        read_image(tmp_path / "missing.png", 6)
    with pytest.raises(ValueError, match="no model given"):
        complete_image_file(bad, out=tmp_path / "g.png")


def test_converter_round_trip(model, tmp_path, gen):
    model.palette.set_(torch.rand(16, 3, generator=gen))
    config, state = from_hf(to_hf(model, tmp_path / "hf"))
    assert config == model.config
    assert state.keys() == model.state_dict().keys()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(state[k], v, msg=k)
    again = tatlas.load(tatlas.save(model, tmp_path / "ours.safetensors"))
    torch.testing.assert_close(again.palette.clusters, model.palette.clusters)  # the palette travels with the model


def test_demo_quick_mode_returns_finite_numbers(tmp_path):
    result = run_demo(DemoOptions(out_dir=tmp_path, quick=True, progress=False))
    assert result.system == "imagegpt"
    numbers = [result.value, result.baseline_value, *result.details.values()]
    assert all(math.isfinite(x) for x in numbers)
    assert 0.0 <= result.value <= 1.0 and 0.0 <= result.baseline_value <= 1.0
    assert (tmp_path / "completions.png").is_file() and (tmp_path / "run" / "model.safetensors").is_file()
