"""The Flamingo world task (models/flamingo/task.py): episodes whose task only the examples show,
labels, the loss's trainable parts, gates closed, exact match against generate, and the demo's quick
recipe end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tatlas
import tatlas.models.flamingo.system  # noqa: F401  (registers "flamingo")
from tatlas.data import ByteTokenizer
from tatlas.data.world import held_out_pairs
from tatlas.models.flamingo.task import (
    IGNORE, TASKS, FewShotEpisodes, SceneBank, collate, draw_episode, episode_tokens, eval_episodes, exact_match,
    few_shot_accuracy, fewshot_loss, freeze_for_fewshot, gates_closed,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return tatlas.create("flamingo", "tiny-world")


@pytest.fixture(scope="module")
def banks(model):
    v = model.config.vision
    kw = {"image_size": v.image_size, "mean": v.image_mean, "std": v.image_std, "per_kind": 3}
    return SceneBank("train", **kw), SceneBank("test", seed=1, **kw)


def _text(config, ids) -> str:
    names = {config.media_token_id: "<image>", config.eoc_token_id: "<eoc>"}
    return "".join(names[i] if i in names else ByteTokenizer().decode([i]) for i in ids)


def test_banks_hold_their_split(banks):
    train, test = banks
    held = set(held_out_pairs())
    assert not set(train.kinds) & held and set(test.kinds) <= held
    assert train.images.shape[1:] == (3, 32, 32)
    for bank in banks:  # each scene's answers are its one object's attributes
        for i in range(len(bank)):
            kind = next(k for k, idx in bank.by_kind.items() if i in idx)
            assert (bank.answer(i, "colour"), bank.answers[i]["shape"]) == kind
            assert bank.answer(i, "size") in ("small", "large")
            assert bank.answer(i, "texture") in ("plain", "striped", "dotted")


def test_eval_episodes_nest_and_cycle_the_tasks(banks):
    _, test = banks
    episodes = eval_episodes(test, n=30, max_shots=4)
    assert [ep.task for ep in episodes[:6]] == list(TASKS) * 2
    for ep in episodes:
        assert len(ep.support_scenes) == 4 and len(set(ep.support_scenes)) == 4
        assert ep.query_scene not in ep.support_scenes
        assert ep.with_shots(1).support_scenes == ep.support_scenes[:1]
        assert ep.with_shots(0).support_scenes == () and ep.with_shots(0).query_scene == ep.query_scene
    assert eval_episodes(test, n=30) == eval_episodes(test, n=30)  # fixed
    with pytest.raises(ValueError, match="task: expected one of"):
        draw_episode(np.random.default_rng(0), test, shots=1, task="shape")


def test_prompt_shows_the_task_only_through_its_examples(model, banks):
    config = model.config
    _, test = banks
    ep = eval_episodes(test, n=2)[1].with_shots(2)  # a "size" episode
    assert ep.task == "size"
    tokens, labels = episode_tokens(config, test, ep)
    answers = [test.answer(s, "size") for s in ep.support_scenes]
    want = test.answer(ep.query_scene, "size")
    assert _text(config, tokens) == f"<image>{answers[0]}.<eoc><image>{answers[1]}.<eoc><image>{want}."
    assert ByteTokenizer().decode([t for t in labels if t != IGNORE]) == want + "."  # only the query's answer
    for t, label in enumerate(labels):
        if label != IGNORE:
            assert tokens[t + 1] == label
    # training labels every answer (each support is a query with fewer shots), never the <eoc>
    tokens, labels = episode_tokens(config, test, ep, label_supports=True)
    assert ByteTokenizer().decode([t for t in labels if t != IGNORE]) == "".join(a + "." for a in [*answers, want])
    prompt, _ = episode_tokens(config, test, ep, answer=False)
    assert prompt == tokens[: len(prompt)] and prompt[-1] == config.media_token_id


def test_training_data(model, banks):
    config = model.config
    data = FewShotEpisodes(config, banks[0], length=40)
    items = [data[i] for i in range(40)]
    assert {len(it["pixels"]) for it in items} == {1, 2, 3, 4, 5}  # 0..4 shots and the query
    for it in items:
        assert int((it["tokens"] == config.media_token_id).sum()) == len(it["pixels"])
    batch = collate(items[:8])
    assert batch["pixels"].shape[:2] == (8, int((batch["tokens"] == config.media_token_id).sum(1).max()))
    assert torch.equal(data[3]["tokens"], items[3]["tokens"])  # a fixed draw


def test_loss_trains_only_resampler_and_gates(model, banks):
    trainable = freeze_for_fewshot(model)
    assert trainable and all(n.startswith(("resampler.", "cross_layers.")) for n in trainable)
    data = FewShotEpisodes(model.config, banks[0], length=8)
    model.zero_grad(set_to_none=True)
    out = fewshot_loss(model, collate([data[i] for i in range(4)]))
    out["loss"].backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == (name in trainable), name
    # the gates start closed, so the LM's input is the LM's alone; the gates still get gradients
    assert model.cross_layers[0].attn_gate.grad.abs().sum() > 0


def test_gates_closed_is_the_lm_alone(model, banks):
    _, test = banks
    episodes = eval_episodes(test, n=4)
    with torch.no_grad():
        for layer in model.cross_layers:
            layer.attn_gate.fill_(0.5)
            layer.mlp_gate.fill_(0.5)
    items = [{"tokens": torch.tensor(episode_tokens(model.config, test, ep)[0]), "labels": torch.zeros(1),
              "pixels": test.images[[*ep.support_scenes, ep.query_scene]]} for ep in episodes]
    batch = collate([{**it, "labels": it["tokens"]} for it in items])
    lm = model.language_model(batch["tokens"])
    assert not torch.allclose(model(batch["tokens"], pixels=batch["pixels"]), lm)
    with gates_closed(model):
        torch.testing.assert_close(model(batch["tokens"], pixels=batch["pixels"]), lm)
    assert float(model.cross_layers[0].attn_gate.detach()) == 0.5
    accs = few_shot_accuracy(model, test, episodes)
    assert set(accs) == {0, 1, 2, 4} and all(0.0 <= a <= 1.0 for a in accs.values())
    assert len(exact_match(model, test, episodes)) == 4


def test_exact_match_agrees_with_generate(model, banks):
    from tatlas.generate import GenerationConfig, generate

    _, test = banks
    config = model.config
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for p in model.cross_layers.parameters():
            p.add_(0.3 * torch.from_numpy(rng.standard_normal(tuple(p.shape))).float())
    for ep in eval_episodes(test, n=3):
        ep = ep.with_shots(1)
        prompt, _ = episode_tokens(config, test, ep, answer=False)
        pixels = test.images[[*ep.support_scenes, ep.query_scene]][None]
        want = ByteTokenizer().encode(test.answer(ep.query_scene, ep.task) + ".")
        out = generate(model, [prompt], GenerationConfig(max_new_tokens=len(want)), pixels=pixels).as_lists()[0]
        assert exact_match(model, test, [ep]) == [out == want]


def test_quick_demo_is_well_formed(tmp_path):
    from tatlas.demo import _builtin
    from tatlas.demo.spec import DemoOptions

    demo = {d.system: d for d in _builtin.BUILTIN}["flamingo"]
    result = demo.run(DemoOptions(out_dir=tmp_path, quick=True, progress=False))
    assert result.system == "flamingo" and result.baseline == "0-shot"
    assert 0.0 <= result.value <= 1.0 and result.value == result.details["acc_4shot"]
    assert result.baseline_value == result.details["acc_0shot"]
    assert {f"acc_4shot_{t}" for t in TASKS} <= set(result.details)
    assert (tmp_path / "accuracy.txt").read_text().startswith("shots  flamingo  gates_closed")
    assert (tmp_path / "run-flamingo" / "metrics.png").exists()
