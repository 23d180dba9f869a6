"""Checkpoints: round trips with config and tied weights, strict loading that names every problem,
safe reading of foreign files, declarative conversion."""

import json

import pytest
import torch
from safetensors.torch import save_file

import tatlas
from tatlas.io import (
    TRANSPOSE, CheckpointError, CheckpointMismatchError, Fuse, KeyMap, Rename, Split, config_from_dict,
    config_to_dict, interleaved_to_half, load_state_strict, load_torch_file, read_checkpoint, read_tensors,
)
from tatlas.models.llm import LLMConfig
from tatlas.nn import Llama3Scaling


def tiny(**kw):
    return tatlas.create("llm", "tiny", vocab_size=32, dim=16, heads=2, kv_heads=1, mlp_hidden=24, layers=1, **kw)


def test_save_load_round_trip_with_tied_weights(tmp_path, gen):
    model = tiny(tie_embeddings=True, rope_scaling=Llama3Scaling(factor=2.0, original_max_positions=64))
    path = tatlas.save(model, tmp_path / "m.safetensors")
    state, system, config, meta = read_checkpoint(path)
    assert system == "llm" and config["rope_scaling"]["factor"] == 2.0
    assert "lm_head.weight" in json.loads(meta["tatlas.aliases"])  # tied tensor stored once
    loaded = tatlas.load(path)
    assert loaded.config == model.config
    assert loaded.lm_head.weight is loaded.embed.weight, "tying survives loading"
    x = torch.randint(0, 32, (2, 7), generator=gen)
    torch.testing.assert_close(loaded(x), model(x))
    other = tiny(tie_embeddings=True, rope_scaling=Llama3Scaling(factor=2.0, original_max_positions=64))
    tatlas.load_weights(other, path)
    torch.testing.assert_close(other(x), model(x))


def test_strict_loading_names_every_tensor():
    model = tiny()
    state = dict(model.state_dict())
    state.pop("norm.weight")
    state["layers.0.attn.extra"] = torch.zeros(1)
    state["embed.weight"] = torch.zeros(33, 16)
    with pytest.raises(CheckpointMismatchError) as err:
        load_state_strict(model, state)
    msg = str(err.value)
    assert "missing 1: norm.weight" in msg
    assert "unexpected 1: layers.0.attn.extra" in msg
    assert "embed.weight (model [32, 16], checkpoint [33, 16])" in msg
    assert err.value.missing == ["norm.weight"]


def test_checkpoint_of_another_preset_or_system(tmp_path):
    path = tatlas.save(tiny(), tmp_path / "a.safetensors")
    bigger = tatlas.create("llm", "tiny", vocab_size=32, dim=16, heads=2, kv_heads=1, mlp_hidden=24, layers=2)
    with pytest.raises(CheckpointError, match="layers: model 2, checkpoint 1"):
        tatlas.load_weights(bigger, path)
    with pytest.raises(CheckpointError, match="checkpoint is for system 'llm', expected 'clip'"):
        tatlas.load(path, system="clip")


def test_corrupt_and_foreign_files(tmp_path):
    bad = tmp_path / "torn.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00garbage")
    with pytest.raises(CheckpointError, match="torn.safetensors: not a readable safetensors file"):
        tatlas.load(bad)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(CheckpointError, match="without tatlas metadata"):
        tatlas.load(plain)
    with pytest.raises(CheckpointError, match="no such file"):
        tatlas.load(tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError, match="not a tatlas checkpoint"):
        tatlas.load(tmp_path)
    with pytest.raises(ValueError, match="unknown checkpoint format 'nope'"):
        tatlas.load(plain, format="nope")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="model_type 'bert' is not supported; supported: .*llama"):
        tatlas.load(tmp_path / "hf")


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_torch_files_load_without_code(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, good)
    assert torch.equal(read_tensors(good)["w"], torch.ones(2))
    evil = tmp_path / "evil.pt"
    torch.save({"w": _Evil()}, evil)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_torch_file(evil)


def test_sharded_folder(tmp_path):
    save_file({"a": torch.ones(2)}, str(tmp_path / "s1.safetensors"))
    save_file({"b": torch.zeros(3)}, str(tmp_path / "s2.safetensors"))
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}}))
    state = read_tensors(tmp_path)
    assert set(state) == {"a", "b"}


def test_keymap_convert_and_invert(gen):
    src = {
        "blocks.0.q.weight": torch.randn(4, 3, generator=gen), "blocks.0.k.weight": torch.randn(4, 3, generator=gen),
        "blocks.0.v.weight": torch.randn(4, 3, generator=gen), "blocks.0.fc.weight": torch.randn(5, 3, generator=gen),
        "blocks.1.q.weight": torch.randn(4, 3, generator=gen), "blocks.1.k.weight": torch.randn(4, 3, generator=gen),
        "blocks.1.v.weight": torch.randn(4, 3, generator=gen), "blocks.1.fc.weight": torch.randn(5, 3, generator=gen),
        "rope.inv_freq": torch.ones(2),
    }
    km = KeyMap(rules=(
        Fuse(("blocks.{i}.q.weight", "blocks.{i}.k.weight", "blocks.{i}.v.weight"), "layers.{i}.qkv.weight"),
        Rename("blocks.{i}.fc.weight", "layers.{i}.fc.weight", TRANSPOSE),
    ), ignore=("rope.inv_freq",))
    out = km.convert(src)
    assert out["layers.1.qkv.weight"].shape == (12, 3)
    torch.testing.assert_close(out["layers.0.fc.weight"], src["blocks.0.fc.weight"].T)
    back = km.inverted().convert(out)
    assert set(back) == set(src) - {"rope.inv_freq"}
    for k, v in back.items():
        torch.testing.assert_close(v, src[k])
    with pytest.raises(CheckpointError, match="no conversion rule for 1 tensors: stray"):
        km.convert({**src, "stray": torch.zeros(1)})
    split = KeyMap(rules=(Split("w", ("a", "b"), sizes=(1, 3)),)).convert({"w": torch.arange(4.0)})
    assert split["a"].tolist() == [0.0] and split["b"].tolist() == [1.0, 2.0, 3.0]


def test_interleaved_to_half_permutes_rotary_pairs():
    t = torch.arange(8.0)[:, None]  # 2 heads x 4 dims, rows in interleaved order
    tr = interleaved_to_half(2)
    assert tr.forward(t).squeeze().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]
    torch.testing.assert_close(tr.inverse(tr.forward(t)), t)


def test_config_round_trip_and_unknown_fields():
    c = LLMConfig(vocab_size=10, dim=8, layers=1, heads=2, kv_heads=1, head_dim=4, mlp_hidden=8, layer_types=("full",),
                  rope_scaling=Llama3Scaling(factor=4.0))
    assert config_from_dict(LLMConfig, json.loads(json.dumps(config_to_dict(c)))) == c
    with pytest.raises(ValueError, match=r"unknown config fields \['depth'\]"):
        config_from_dict(LLMConfig, {**config_to_dict(c), "depth": 3})


def test_configs_saved_before_head_dim_and_layer_types_were_stated_still_load(tmp_path):
    """Checkpoints written when ``head_dim``/``layer_types`` could be None (derived) load as today's config."""
    import tatlas
    from tatlas.io import read_checkpoint, save_checkpoint

    old = {**config_to_dict(tatlas.create("llm", "tiny").config), "head_dim": None, "layer_types": None}
    assert config_from_dict(LLMConfig, old) == tatlas.create("llm", "tiny").config
    windowed = config_from_dict(LLMConfig, {**old, "sliding_window": 8})
    assert windowed.layer_types == ("sliding", "sliding") and windowed.head_dim == 16
    model = tatlas.create("llm", "tiny")
    state, *_ = read_checkpoint(tatlas.save(model, tmp_path / "now.safetensors"))
    save_checkpoint(tmp_path / "old.safetensors", state, system="llm", config=old)
    loaded = tatlas.load(tmp_path / "old.safetensors")
    assert loaded.config == model.config
    tokens = torch.randint(0, 259, (1, 5))
    torch.testing.assert_close(loaded(tokens), model(tokens))
