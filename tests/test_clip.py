"""The ``clip`` row beyond parity: presets, the model's invariants, preprocessing equal to
transformers' ``CLIPImageProcessor`` on real photographs, zero-shot classification, the contrastive
loss and its temperature cap, training through the shared trainer, the ``tatlas clip`` commands
and their errors on bad input."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import tatlas
import tatlas.models.clip.system  # noqa: F401  (registers "clip")
from tatlas.cli.clip import app as clip_app
from tatlas.data.world import WorldConfig, WorldDataset
from tatlas.models.clip.config import PRESETS
from tatlas.models.clip.preprocess import open_rgb, preprocess
from tatlas.models.clip.task import MAX_LOGIT_SCALE, clip_loss, make_task, world_zero_shot
from tatlas.models.clip.tokenizer import CLIPTokenizer
from tatlas.models.clip.zeroshot import build_classifier


@pytest.fixture(scope="module")
def tok() -> CLIPTokenizer:
    return CLIPTokenizer()


def tiny(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return tatlas.create("clip", "tiny", **overrides).eval()


def test_presets_have_openai_parameter_counts():
    # OpenAI's released models, parameters counted from their state dicts
    expected = {"ViT-B/32": 151_277_313, "ViT-B/16": 149_620_737, "ViT-L/14": 427_616_513,
                "ViT-L/14@336": 427_944_193}
    for name, count in expected.items():
        model = tatlas.create("clip", name, device="meta")
        assert sum(p.numel() for p in model.parameters()) == count, name
    c = PRESETS["ViT-L/14@336"]
    assert (c.vision.image_size, c.vision.patch, c.vision.heads, c.text.heads, c.embed_dim) == (336, 14, 16, 12, 768)
    assert tiny().logit_scale.item() == pytest.approx(math.log(1 / 0.07))


def test_image_feature_is_ln_post_of_the_class_token_only(gen):
    model = tiny()
    pixels = torch.randn(3, 3, 32, 32, generator=gen)
    with torch.no_grad():
        before_norm = model.vision(pixels, layer=-1)  # [B, 1 + N, C] after the last block
        cls_only = model.vision.post_norm(before_norm[:, :1])[:, 0]
        torch.testing.assert_close(model.encode_image(pixels), model.image_proj(cls_only), atol=1e-6, rtol=1e-6)
    assert model.vision.patch_embed.proj.bias is None and model.image_proj.bias is None
    assert model.text_proj.bias is None


def test_encoders_batched_equal_single_and_logits_are_scaled_cosines(gen, tok):
    model = tiny()
    pixels = torch.randn(4, 3, 32, 32, generator=gen)
    tokens = tok(["a red circle", "a small blue square left of a large green star", "x", ""], context_length=32)
    with torch.no_grad():
        img, txt = model.encode_image(pixels), model.encode_text(tokens)
        for i in range(4):
            torch.testing.assert_close(model.encode_image(pixels[i : i + 1]), img[i : i + 1], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(model.encode_text(tokens[i : i + 1]), txt[i : i + 1], atol=1e-5, rtol=1e-5)
        out = model(pixels, tokens[:3])
    expected = model.logit_scale.exp() * F.normalize(img, dim=-1) @ F.normalize(txt[:3], dim=-1).t()
    torch.testing.assert_close(out.logits_per_image, expected)
    torch.testing.assert_close(out.logits_per_text, expected.t())
    assert out.logits_per_image.shape == (4, 3)


def test_pooled_shortcuts_equal_the_plain_towers(gen, tok):
    """The optimised CLIP (``tatlas.optimize``: FastCLIP) skips padding after the last end token and
    runs the last block for the pooled token only, through oneDNN's matmul on CPU: all equal to
    the plain definitions, ``encode_image``/``encode_text`` of :class:`CLIP`."""
    from tatlas.models.clip.model import CLIP, FastCLIP
    model = tiny()
    pixels = torch.randn(3, 3, 32, 32, generator=gen)
    tokens = tok(["a photo of a cat", "a small striped red circle left of a large blue square", ""], context_length=32)
    with torch.no_grad():
        plain_image = model.image_proj(model.vision(pixels)[:, 0])
        plain_text = model.text_proj(model.text(tokens)[torch.arange(3), tokens.argmax(1)])
        assert type(model) is CLIP
        torch.testing.assert_close(model.encode_image(pixels), plain_image)
        torch.testing.assert_close(model.encode_text(tokens), plain_text)
        keys = list(model.state_dict())
        fast = tatlas.optimize(model)
        assert type(fast) is FastCLIP  # (its 32-wide linears stay nn.Linear: too small for oneDNN to pay)
        assert list(fast.state_dict()) == keys
        torch.testing.assert_close(fast.encode_image(pixels), plain_image, atol=2e-6, rtol=1e-5)
        torch.testing.assert_close(fast.encode_text(tokens), plain_text, atol=2e-6, rtol=1e-5)
    one_layer = tatlas.optimize(tiny(vision=dataclasses.replace(PRESETS["tiny"].vision, layers=1),
                                     text=dataclasses.replace(PRESETS["tiny"].text, layers=1)))
    with torch.no_grad():
        torch.testing.assert_close(one_layer.encode_image(pixels), one_layer.image_proj(one_layer.vision(pixels)[:, 0]))
        torch.testing.assert_close(one_layer.encode_text(tokens),
                                   one_layer.text_proj(one_layer.text(tokens)[torch.arange(3), tokens.argmax(1)]),
                                   atol=2e-6, rtol=1e-5)


def test_text_is_causal_and_pooled_at_the_end_token(gen, tok):
    model = tiny()
    tokens = tok(["a photo of a cat", "a photo of a dog"], context_length=32)
    changed = tokens.clone()
    changed[:, 10:] = 7  # after the end token (position 6): invisible to it under the causal mask
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(changed), model.encode_text(tokens))
        shorter = model.encode_text(tokens[:, :8])  # the context may be shorter than 32
    torch.testing.assert_close(shorter, model.encode_text(tokens), atol=1e-5, rtol=1e-5)
    # "eos" pooling: the first end token, even when larger ids follow it
    eos = dataclasses.replace(PRESETS["tiny"].text, pool="eos", eos_token_id=5)
    m = tiny(text=eos)
    ids = torch.tensor([[1, 2, 5, 300, 400], [1, 5, 9, 5, 2]])
    assert m.text.pool_index(ids).tolist() == [2, 1]
    with pytest.raises(ValueError, match=r"every row needs the end-of-text token \(id 5\)"):
        m.encode_text(torch.tensor([[1, 2, 3]]))


def test_bad_model_inputs_are_named(tok):
    model = tiny()
    with pytest.raises(ValueError, match=r"expected 1..32 positions \(the context length\), got 77"):
        model.encode_text(tok("a cat"))  # tokenised for 77, the tiny model has 32
    with pytest.raises(ValueError, match=r"expected an integer tensor \[B, T\], got torch.float32"):
        model.encode_text(torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"expected ids in 0..49407, got 50000"):
        model.encode_text(torch.tensor([[49406, 50000, 49407]]))
    with pytest.raises(ValueError, match=r"pixels: expected \[B, C, 32, 32\], got \[1, 3, 64, 64\]"):
        model.encode_image(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="image_size .* must be a multiple of patch"):
        tatlas.create("clip", "tiny", vision=dataclasses.replace(PRESETS["tiny"].vision, patch=7))
    with pytest.raises(ValueError, match="CLIPTextConfig.pool: expected one of"):
        dataclasses.replace(PRESETS["tiny"].text, pool="mean")


# ---------------------------------------------------------------------------------------------
# Preprocessing
# ---------------------------------------------------------------------------------------------


def _sample_photos() -> list[Path]:
    import sklearn.datasets

    folder = Path(sklearn.datasets.__file__).parent / "images"
    return [folder / "china.jpg", folder / "flower.jpg"]


def test_preprocessing_equals_transformers_on_real_photographs():
    from PIL import Image
    from transformers import CLIPImageProcessor

    hf = CLIPImageProcessor()
    worst = 0.0
    for path in _sample_photos():
        photo = Image.open(path)
        rgba = np.array(photo.convert("RGBA"))
        rgba[..., 3] = np.linspace(0, 255, rgba.shape[1]).astype(np.uint8)[None]
        variants = [photo, photo.transpose(Image.Transpose.ROTATE_90), photo.convert("L"),
                    Image.fromarray(rgba), photo.convert("P"), photo.convert("CMYK")]
        for img in variants:
            for size in (224, 336):
                ref = hf(images=img, size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                         return_tensors="pt")["pixel_values"][0]
                ours = preprocess(img, size)
                assert ours.shape == ref.shape == (3, size, size)
                worst = max(worst, (ours - ref).abs().max().item())
    assert worst <= 1e-5
    assert preprocess(_sample_photos()[0]).abs().max() > 1.0  # really normalised, not [0, 1]


def test_unreadable_images_are_one_line_errors_naming_the_file(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(_sample_photos()[0].read_bytes()[:300])  # truncated JPEG
    (tmp_path / "notes.png").write_text("not an image")
    for name in ("broken.jpg", "notes.png", "missing.png"):
        with pytest.raises(ValueError) as info:
            open_rgb(tmp_path / name)
        message = str(info.value)
        assert message.startswith(str(tmp_path / name)) and "\n" not in message


# ---------------------------------------------------------------------------------------------
# Zero-shot, loss, training
# ---------------------------------------------------------------------------------------------


def test_zero_shot_classifier_ensembles_normalised_template_embeddings(gen, tok):
    model = tiny()
    templates = ("a photo of a {}.", "a drawing of a {}.")
    clf = build_classifier(model, tok, ["cat", "dog"], templates)
    with torch.no_grad():
        e = F.normalize(model.encode_text(tok([t.format("dog") for t in templates], context_length=32)), dim=-1)
    torch.testing.assert_close(clf.weights[1], F.normalize(e.mean(0), dim=0))
    probs = clf.probabilities(model, torch.randn(3, 3, 32, 32, generator=gen))
    assert probs.shape == (3, 2)
    torch.testing.assert_close(probs.sum(1), torch.ones(3))
    with pytest.raises(ValueError, match="templates: expected strings with a '{}'"):
        build_classifier(model, tok, ["cat"], ("a photo",))


def test_loss_is_symmetric_cross_entropy_with_temperature_capped_at_100(gen, tok):
    model = tiny()
    batch = {"pixels": torch.randn(4, 3, 32, 32, generator=gen),
             "tokens": tok(["a red circle", "a blue square", "a green star", "a pink cross"], context_length=32)}
    out = clip_loss(model, batch)
    logits = model(batch["pixels"], batch["tokens"]).logits_per_image
    target = torch.arange(4)
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
    torch.testing.assert_close(out["loss"], expected)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1000.0))
    capped = clip_loss(model, batch)
    assert capped["logit_scale"].item() == pytest.approx(100.0)
    capped["loss"].backward()
    assert model.logit_scale.grad.item() == 0.0  # beyond the cap: no pull further up
    assert MAX_LOGIT_SCALE == pytest.approx(math.log(100.0))
    # a repeated caption: both copies are right answers for both images, half the weight each
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1 / 0.07))
    batch["tokens"][3] = batch["tokens"][0]
    logits = model(batch["pixels"], batch["tokens"]).logits_per_image
    soft = torch.eye(4)
    soft[0, 3] = soft[3, 0] = 1.0
    soft = soft / soft.sum(1, keepdim=True)
    expected = (F.cross_entropy(logits, soft) + F.cross_entropy(logits.t(), soft)) / 2
    torch.testing.assert_close(clip_loss(model, batch)["loss"], expected)


def test_train_task_learns_through_the_shared_trainer(tmp_path):
    from tatlas.train import TrainConfig
    from tatlas.train.run import train_system

    cfg = TrainConfig(steps=4, batch_size=8, lr=1e-3, out_dir=tmp_path / "run", progress=False, log_every=2)
    result = train_system("clip", cfg, preset="tiny")
    assert result.steps == 4 and math.isfinite(result.final_loss)
    assert {"zero_shot_acc", "held_out_acc", "colour_acc", "shape_acc"} <= set(result.eval)
    loaded = tatlas.load(result.model_path, system="clip")
    assert loaded.config == PRESETS["tiny"]
    # and a few more steps really lower the loss on a fixed batch
    model = tiny()
    task = make_task(model.config, length=16)
    batch = task.collate_fn([task.train_data[i] for i in range(16)])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    model.train()
    first = clip_loss(model, batch)["loss"].item()
    for _ in range(30):
        loss = clip_loss(model, batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    with pytest.raises(ValueError, match="uses the CLIP BPE .* vocab_size=99"):
        make_task(tiny(text=dataclasses.replace(PRESETS["tiny"].text, vocab_size=99)).config)


def test_world_zero_shot_report_is_over_held_out_pairs():
    model = tiny()
    report = world_zero_shot(model, n=16)
    assert report.chance == pytest.approx(1 / 48) and report.held_out_chance == pytest.approx(1 / 8)
    # right among all 48 pairs implies right among the 8 held-out ones (every test label is held out)
    assert 0.0 <= report.accuracy <= report.held_out_accuracy <= 1.0 and report.n == 16
    test = WorldDataset("test", WorldConfig(max_objects=1, modalities=("caption",)), seed=1, length=4)
    assert all(" of " not in test[i]["caption"] for i in range(4))  # single objects


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("clip_cli")
    model = tiny()
    checkpoint = tatlas.save(model, folder / "tiny.safetensors")
    world = WorldDataset("test", WorldConfig(modalities=("image",)), length=2)
    images = []
    for i in range(2):
        path = folder / f"scene{i}.png"
        Image.fromarray((world[i]["image"].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(path)
        images.append(path)
    (folder / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return model, checkpoint, images, folder


def test_cli_zero_shot_ranks_labels(cli_files):
    model, checkpoint, images, _ = cli_files
    res = CliRunner().invoke(clip_app, ["zero-shot", *map(str, images), "--labels", "red circle,blue square,cat",
                                        "--model", str(checkpoint)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == str(images[0]) and len(lines) == 8
    probs = [float(line.split("%")[0]) / 100 for line in lines[1:4]]
    assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=1e-3)


def test_cli_embed_writes_npy_and_safetensors(cli_files, tmp_path, tok):
    from safetensors import safe_open

    model, checkpoint, images, _ = cli_files
    inputs = [str(images[0]), "a red circle", str(images[1])]
    res = CliRunner().invoke(clip_app, ["embed", *inputs, "--out", str(tmp_path / "e.npy"), "--model", str(checkpoint)])
    assert res.exit_code == 0, res.output
    assert "3 x 32 embeddings (2 images, 1 texts)" in res.output
    arr = np.load(tmp_path / "e.npy")
    with torch.no_grad():
        text = F.normalize(model.encode_text(tok("a red circle", context_length=32)), dim=-1)[0]
    np.testing.assert_allclose(arr[1], text.numpy(), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(arr, axis=1), 1.0, atol=1e-5)
    res = CliRunner().invoke(clip_app, ["embed", "a cat", "--text", "--no-normalise", "--out",
                                        str(tmp_path / "e.safetensors"), "--model", str(checkpoint)])
    assert res.exit_code == 0, res.output
    with safe_open(str(tmp_path / "e.safetensors"), "pt") as f:
        assert f.get_tensor("embeddings").shape == (1, 32) and f.metadata()["kinds"] == '["text"]'


def test_cli_bad_input_is_one_clear_line(cli_files, tmp_path, monkeypatch):
    _, checkpoint, images, folder = cli_files
    run = lambda *args: CliRunner().invoke(clip_app, list(args))  # noqa: E731
    monkeypatch.delenv("TATLAS_CLIP_MODEL", raising=False)
    res = run("zero-shot", str(images[0]), "--labels", "a,b")
    assert res.exit_code == 2 and "no CLIP model given: pass --model PATH" in res.output
    res = run("zero-shot", str(folder / "bad.png"), "--labels", "a,b", "--model", str(checkpoint))
    assert res.exit_code == 2 and f"{folder / 'bad.png'}: not a readable image" in res.output
    assert len(res.output.strip().splitlines()) == 1
    res = run("embed", "missing.jpg", "--out", str(tmp_path / "x.npy"), "--model", str(checkpoint))
    assert res.exit_code == 2 and "missing.jpg: no such image file" in res.output
    res = run("embed", "a cat", "--out", str(tmp_path / "x.csv"), "--model", str(checkpoint))
    assert res.exit_code == 2 and "expected a .npy or .safetensors" in res.output
    res = run("embed", "red " * 40, "--text", "--no-truncate", "--out", str(tmp_path / "x.npy"), "--model",
              str(checkpoint))
    assert res.exit_code == 2 and "over the context length 32" in res.output
    res = run("zero-shot", str(images[0]), "--labels", "a,b", "--model", str(folder / "weights.pt"))
    assert res.exit_code == 2 and "no such file" in res.output
    monkeypatch.setenv("TATLAS_CLIP_MODEL", str(checkpoint))
    assert run("zero-shot", str(images[0]), "--labels", "a,b").exit_code == 0


def test_demo_quick_run_reports_zero_shot_accuracy(tmp_path):
    from tatlas.demo import DemoOptions
    from tatlas.demo.clip import run

    result = run(DemoOptions(out_dir=tmp_path, quick=True, progress=False))
    assert result.system == "clip" and result.baseline_value == pytest.approx(1 / 48)
    assert 0.0 <= result.value <= result.details["held_out_only_accuracy"] <= 1.0
    assert result.details["steps"] == 100 and (tmp_path / result.artifacts["weights"]).is_file()
    # 100 steps (~6 s) already beat chance on pairs never seen in training (about 17% vs 2%)
    assert result.beats_baseline and result.value > 3 * result.baseline_value
    assert result.details["held_out_only_accuracy"] > 4 * result.details["held_out_only_chance"]


def test_tatlas_command_has_the_clip_group():
    from tatlas.cli.main import app

    res = CliRunner().invoke(app, ["clip", "--help"])
    assert res.exit_code == 0 and "zero-shot" in res.output and "embed" in res.output
