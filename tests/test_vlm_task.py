"""The world task of LLaVA and InternVL (tatlas.models.vlm_task): which parts learn in each training
stage, the loss on answers (or captions) only, greedy exact match equal to decoding, the quick
demos, and `tatlas train llava|internvl` through the CLI."""

import dataclasses

import pytest
import torch
from typer.testing import CliRunner

import tatlas
import tatlas.models.internvl.system  # noqa: F401
import tatlas.models.llava.system  # noqa: F401
from tatlas.cli.main import app
from tatlas.data import EOS, ByteTokenizer
from tatlas.demo.spec import DemoOptions, DemoResult
from tatlas.models import vlm_task as V
from tatlas.train.optim import param_groups

SYSTEMS = ("llava", "internvl")
# what each stage trains, by parameter-name prefix (the papers' stages: LLaVA §4.1, InternVL 2.5 §4.2)
TRAINS = {
    ("llava", "align"): ("projector.",),
    ("llava", "instruct"): ("projector.", "language_model."),
    ("llava", "scratch"): ("projector.", "language_model.", "vision."),
    ("internvl", "warmup"): ("projector.", "projector_norm."),
    ("internvl", "full"): ("projector.", "projector_norm.", "language_model.", "vision."),
    ("internvl", "scratch"): ("projector.", "projector_norm.", "language_model.", "vision."),
}
NEVER = {"llava": ("vision.blocks.2.",), "internvl": ()}  # tower blocks after the one read (LLaVA reads layer -2)


def _model(system):
    torch.manual_seed(0)
    return tatlas.create(system, "tiny-world")


def _batch(model, data="qa", n=3, **kwargs):
    ds = V.WorldVLMData(model.config, V.WORLD_QUESTIONS[0], length=8, data=data, **kwargs)
    return ds, V.collate([ds[i] for i in range(n)])


@pytest.mark.parametrize("system, stage", sorted(TRAINS))
def test_stage_trains_its_parts_only(system, stage):
    model = _model(system)
    assert set(V.STAGES[system]) == {s for sy, s in TRAINS if sy == system}
    V.freeze_for_stage(model, stage)
    _, batch = _batch(model, data=V.STAGES[system][stage].data)
    V.vlm_loss(model, batch)["loss"].backward()
    allowed = TRAINS[(system, stage)]
    for name, p in model.named_parameters():
        learns = name.startswith(allowed) and not name.startswith(NEVER[system])
        assert p.requires_grad == learns, name
        assert (p.grad is not None and bool(p.grad.abs().sum() > 0)) == learns, name
    trainable = {n for g in param_groups(model, 0.1) for n in g["names"]}
    assert trainable == {n for n, p in model.named_parameters() if p.requires_grad}
    V.check_stage(model, V.get_stage(model.config, stage))


def test_a_stage_refuses_a_model_not_frozen_for_it():
    model = _model("llava")  # everything trainable, as built
    task = V.make_task(model.config, stage="align", length=8)
    batch = task.collate_fn([task.train_data[i] for i in range(2)])
    with pytest.raises(ValueError, match="freeze_for_stage"):
        task.loss_fn(model, batch)
    V.freeze_for_stage(model, "align")
    assert task.loss_fn(model, batch)["loss"].isfinite()


@pytest.mark.parametrize("system", SYSTEMS)
def test_loss_is_on_answers_only(system):
    model = _model(system)
    tok = ByteTokenizer()
    ds, batch = _batch(model, n=4, turns=2)
    for i in range(4):
        tokens, labels = batch["tokens"][i].tolist(), batch["labels"][i].tolist()
        qa = dict(ds.scenes[i]["qa"])
        target = [t != V.IGNORE for t in labels]
        # every run of targets is an answer and its EOS, right after the question it answers
        runs, t = [], 0
        while t < len(target):
            if target[t]:
                u = t
                while target[u + 1]:
                    u += 1
                runs.append((t, u))
                t = u + 1
            else:
                t += 1
        assert len(runs) == 2
        for t, u in runs:
            assert labels[t : u + 1] == tokens[t + 1 : u + 2]  # a position's label is the next token
            assert labels[u] == EOS
            before = tok.decode([x for x in tokens[: t + 1] if x < 256])
            asked = [q for q in qa if before.endswith(q)]
            assert len(asked) == 1, before
            assert tok.decode(labels[t:u]) == qa[asked[0]]
        assert not any(tokens[t + 1] == model.config.image_token_id for t in range(len(tokens) - 1) if target[t])
    # the loss is the mean cross-entropy over exactly those positions
    logits = model(batch["tokens"], pixels=batch["pixels"]).float()
    mask = batch["labels"] != V.IGNORE
    manual = torch.nn.functional.cross_entropy(logits[mask], batch["labels"][mask])
    assert torch.allclose(V.vlm_loss(model, batch)["loss"], manual, atol=1e-6)


def test_caption_targets_are_the_caption():
    model = _model("llava")
    ds, batch = _batch(model, data="captions", n=2)
    tok = ByteTokenizer()
    for i in range(2):
        labels = [t for t in batch["labels"][i].tolist() if t != V.IGNORE]
        assert labels[-1] == EOS and tok.decode(labels) == ds.scenes[i]["caption"]


@pytest.mark.parametrize("system", SYSTEMS)
def test_blind_data_has_no_image(system):
    model = _model(system)
    ds = V.WorldVLMData(model.config, V.WORLD_QUESTIONS[0], length=4, blind=True)
    item = ds[0]
    assert "pixels" not in item and model.config.image_token_id not in item["tokens"].tolist()
    seen = V.WorldVLMData(model.config, V.WORLD_QUESTIONS[0], length=4)[0]
    n = V.image_token_count(model.config, len(seen["pixels"]), tuple(seen["image_size"].tolist()))
    assert len(seen["tokens"]) == len(item["tokens"]) + n


def test_internvl_tiles_wide_scenes():
    model = _model("internvl")
    dynamic, single = V.tiling_settings(model.config, 2), V.tiling_settings(model.config, 1)
    tiles = V.vqa_items(model.config, V.WORLD_QUESTIONS[:1], n=2, wide=True, tiling=dynamic)
    one = V.vqa_items(model.config, V.WORLD_QUESTIONS[:1], n=2, wide=True, tiling=single)
    assert tiles[0].image_size == (32, 64) and tiles[0].pixels.shape == (3, 3, 32, 32)  # 1 x 2 tiles + thumbnail
    assert one[0].pixels.shape == (1, 3, 32, 32)
    assert [(it.question, it.answer) for it in tiles] == [(it.question, it.answer) for it in one]
    assert len(V.exact_match(model, tiles[:2])) == 2  # a forward over 3-tile images
    prompt = V.prompt_tokens(model.config, tiles[0])
    assert prompt.count(model.config.image_token_id) == 3 * model.config.tokens_per_tile


def test_bad_input_is_one_line():
    llava = _model("llava")
    tiny = tatlas.create("llava", "tiny").config  # image token 258 is the byte tokenizer's pad
    for call, msg in (
        (lambda: V.make_task(tiny), "tiny-world"),
        (lambda: V.get_stage(llava.config, "warmup"), "unknown stage 'warmup' for llava"),
        (lambda: V.Questions(kinds=("size",)), "Questions.kinds"),
        (lambda: V.WorldVLMData(llava.config, data="images"), "data: expected one of"),
        (lambda: V.WorldVLMData(llava.config, question_first=2.0), "question_first"),
        (lambda: V.system_name(tatlas.create("llm", "tiny").config), "LlavaConfig or InternVLConfig"),
    ):
        with pytest.raises(ValueError, match=msg) as e:
            call()
        assert "\n" not in str(e.value)


@pytest.fixture(scope="module")
def quick_llava(tmp_path_factory):
    """The LLaVA demo's quick recipe, trained once: (model, blind LLM, stage stats)."""
    from tatlas.demo.llava import QUICK, train_recipe

    model = _model("llava")
    options = DemoOptions(out_dir=tmp_path_factory.mktemp("recipe"), quick=True, progress=False)
    blind, stats = train_recipe(model, QUICK, options)
    return model, blind, stats


def test_recipe_trains_each_stage_and_exact_match_is_greedy_decoding(quick_llava):
    from tatlas.demo.llava import QUICK, generate_answers

    model, blind, stats = quick_llava
    assert {f"loss_{s}" for s, _, _ in QUICK.stages} | {"loss_blind"} <= set(stats)
    assert all(v == v for v in stats.values())  # finite numbers, no NaN
    # the blind LLM's weights went into the VLM, which then trained on
    assert not torch.equal(model.language_model.embed.weight, blind.embed.weight)
    items = V.vqa_items(model.config, seed=1, n=4)
    checked = 0
    for m, is_blind in ((model, False), (blind, True)):
        generated = generate_answers(m, items, blind=is_blind)
        flags = V.exact_match(m, items, blind=is_blind)
        assert flags == [g == it.answer for g, it in zip(generated, items)]
        # answers the model itself gives greedily (it stopped at EOS within the budget) are exact matches
        # (an answer with a lone non-UTF-8 byte decodes to U+FFFD and does not re-encode to its ids)
        own = [dataclasses.replace(it, answer=g) for g, it in zip(generated, items)
               if g and len(g) < 9 and "\ufffd" not in g]
        assert all(V.exact_match(m, own, blind=is_blind))
        checked += len(own)
    assert checked


@pytest.mark.parametrize("system", SYSTEMS)
def test_quick_demo_is_well_formed(system, tmp_path):
    from tatlas.demo import _builtin

    demo = {d.system: d for d in _builtin.BUILTIN}[system]
    result = demo.run(DemoOptions(out_dir=tmp_path, quick=True, progress=False))
    assert isinstance(result, DemoResult) and result.system == system
    assert 0 <= result.value <= 1 and 0 <= result.baseline_value <= 1
    keys = {"chance", "blind_oracle", "vqa_colour_accuracy", "blind_count_accuracy", "loss_blind"}
    if system == "internvl":
        keys |= {"wide_tiles_accuracy", "wide_one_tile_accuracy", "loss_full"}
    else:
        keys |= {"loss_scratch", "loss_instruct"}
    assert keys <= set(result.details)
    assert all(0 <= v <= 1 for k, v in result.details.items() if k.endswith("accuracy") or k in ("chance",))
    assert (tmp_path / result.artifacts["plot"]).is_file()


@pytest.mark.parametrize("system", SYSTEMS)
def test_tatlas_train_cli(system, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["train", system, "--steps", "2", "--batch-size", "4", "--out", str(tmp_path),
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    assert f"trained {system} (tiny-world) to step 2" in res.output and "vqa_accuracy" in res.output
    model = tatlas.load(tmp_path / "model.safetensors")
    assert model.config.image_token_id == 259
    res = runner.invoke(app, ["train", system, "--preset", "tiny", "--steps", "2", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "tiny-world" in res.output, res.output
