"""The Flamingo world task (models/flamingo/task.py): episodes, labels, the loss's trainable parts,
gates closed, and the demo end to end in quick mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tatlas
import tatlas.models.flamingo.system  # noqa: F401  (registers "flamingo")
from tatlas.data import ByteTokenizer
from tatlas.data.world import held_out_pairs
from tatlas.models.flamingo.task import (
    BINDING, IGNORE, CopyText, FewShotEpisodes, SceneBank, collate, episode_tokens, eval_episodes, exact_match,
    few_shot_accuracy, fewshot_loss, freeze_for_fewshot, gates_closed, nonsense_words,
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


def test_words_are_split():
    train, test = set(nonsense_words("train")), set(nonsense_words("test"))
    assert len(test) == 120 and len(train) > 500 and not train & test


def test_banks_hold_their_split(banks):
    train, test = banks
    held = set(held_out_pairs())
    assert not set(train.kinds) & held and set(test.kinds) <= held
    assert train.images.shape[1:] == (3, 32, 32)


def test_eval_episodes(model, banks):
    _, test = banks
    words = set(nonsense_words("test"))
    for ep in eval_episodes(test, n=30, n_way=2, max_shots=4):
        assert set(ep.names) <= words and len(set(ep.names)) == 2
        assert sorted(ep.support_kinds) == [0] * 4 + [1] * 4
        kinds = [next(k for k, idx in test.by_kind.items() if s in idx) for s in ep.support_scenes]
        query = next(k for k, idx in test.by_kind.items() if ep.query_scene in idx)
        # the query's kind is among the supports, always with the query's name, never the other's
        assert {kinds[j] for j, k in enumerate(ep.support_kinds) if k == ep.query_kind} == {query}
        assert query not in {kinds[j] for j, k in enumerate(ep.support_kinds) if k != ep.query_kind}
        assert ep.query_scene not in ep.support_scenes
        one = ep.with_shots(1)
        assert sorted(one.support_kinds) == [0, 1] and set(one.support_scenes) <= set(ep.support_scenes)
        assert ep.with_shots(0).support_kinds == ()


def test_labels_only_on_the_answer(model, banks):
    config = model.config
    ep = eval_episodes(banks[1], n=1)[0].with_shots(2)
    tokens, labels = episode_tokens(config, ep, label_repeats=False)
    assert tokens.count(config.media_token_id) == 5
    targets = [t for t in labels if t != IGNORE]
    assert ByteTokenizer().decode(targets) == ep.names[ep.query_kind] + "."
    assert _text(config, tokens).endswith(f"<image>{BINDING}{ep.names[ep.query_kind]}.")
    # with repeats: also each support whose name was bound before, never a name's first showing
    tokens, labels = episode_tokens(config, ep)
    for t, label in enumerate(labels):
        if label != IGNORE:
            assert tokens[t + 1] == label
    for name in ep.names:  # the position before a name's first showing is no target
        for t in range(len(tokens) - 3):
            if _text(config, tokens[t + 1 : t + 4]) == name:
                assert labels[t] == IGNORE
                break


def test_training_data_and_copy_text(model, banks):
    config = model.config
    data = FewShotEpisodes(config, banks[0], length=16)
    batch = collate([data[i] for i in range(8)])
    assert batch["pixels"].shape[:2] == (8, int((batch["tokens"] == config.media_token_id).sum(1).max()))
    words = set(nonsense_words("train"))
    text = CopyText(config, block_size=32, world_captions=10, text_fraction=1.0, repeats=0.0)
    item = text[1]
    assert torch.equal(item["labels"][:-1], item["tokens"][1:])
    assert config.media_token_id not in item["tokens"].tolist()
    for ep_text in (_text(config, data[i]["tokens"].tolist()) for i in range(16)):
        if "<image>a " not in ep_text:  # a binding episode, not captions
            for w in {c.split(".")[0][-3:] for c in ep_text.split("<eoc>")}:
                assert w in words


def test_loss_trains_only_resampler_and_gates(model, banks):
    trainable = freeze_for_fewshot(model)
    assert trainable and all(n.startswith(("resampler.", "cross_layers.")) for n in trainable)
    data = FewShotEpisodes(model.config, banks[0], length=8, captions=0.0)
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
    items = [episode_tokens(model.config, ep)[0] for ep in episodes]
    tokens = collate([{"tokens": torch.tensor(t), "labels": torch.tensor(t)} for t in items])["tokens"]
    lm = model.language_model(tokens)
    with gates_closed(model):
        pixels = collate([{"tokens": torch.tensor(t), "labels": torch.tensor(t),
                           "pixels": test.images[[*ep.support_scenes, ep.query_scene]]}
                          for t, ep in zip(items, episodes)])["pixels"]
        torch.testing.assert_close(model(tokens, pixels=pixels), lm)
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
        prompt, _ = episode_tokens(config, ep, answer=False)
        pixels = test.images[[*ep.support_scenes, ep.query_scene]][None]
        out = generate(model, [prompt], GenerationConfig(max_new_tokens=4), pixels=pixels).as_lists()[0]
        want = ByteTokenizer().encode(ep.names[ep.query_kind] + ".")
        assert exact_match(model, test, [ep]) == [out == want]
