"""The contract every registered system meets (it joins these tests by registering), plus the
registry's error messages."""

import pytest
import torch

import tatlas
from tatlas.generate import GenerationConfig, generate
from tatlas.models import systems
from tatlas.nn import CachedDecoderMixin

SYSTEMS = sorted(systems())
PRESETS = [(s, p) for s in SYSTEMS for p in systems()[s].presets]


def _small(name: str, preset: str) -> bool:
    """A ``tiny*`` preset of under 5M parameters (Whisper's released "tiny" has 39M: not a toy)."""
    model = tatlas.create(name, preset, device="meta")
    return preset.startswith("tiny") and sum(p.numel() for p in model.parameters()) < 5_000_000


TINY = [(s, p) for s, p in PRESETS if p.startswith("tiny") and _small(s, p)]  # every small preset runs the contract
FIRST_TINY = {s: p for s, p in reversed(TINY)}  # one small preset per system


def _float_outputs(out):
    if isinstance(out, torch.Tensor):
        return [out] if out.is_floating_point() else []
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _float_outputs(o)]
    return [t for t in _float_outputs(vars(out))] if hasattr(out, "__dict__") else []


@pytest.mark.parametrize("name,preset", PRESETS)
def test_every_preset_builds_on_meta(name, preset):
    model = tatlas.create(name, preset, device="meta")
    assert all(p.is_meta for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) > 0


def test_building_to_receive_a_checkpoint_imports_no_compiler():
    """Loading builds the model on the meta device first (``tatlas.api._on_meta``); an op there that
    runs torch's Python references (``torch.stack`` on meta did, in ImageGPT's default palette)
    imports ``torch._dynamo`` and sympy: ~1 s of the first load in every process."""
    import subprocess
    import sys

    code = (
        "import sys, tatlas\n"
        "from tatlas.api import _on_meta\n"
        "from tatlas.models import systems\n"
        "for name, system in sorted(systems().items()):\n"
        "    for preset, config in system.presets.items():\n"
        "        _on_meta(system, config)\n"
        "        if 'torch._dynamo' in sys.modules:\n"
        "            sys.exit(f'{name} {preset} imported torch._dynamo')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]


@pytest.mark.parametrize("name,preset", TINY)
def test_contract_forward_backward_shapes(name, preset):
    torch.manual_seed(0)
    model = tatlas.create(name, preset)
    sample = systems()[name].sample_input(model, torch.Generator().manual_seed(0))
    model.train()
    outs = _float_outputs(model(**sample))
    assert outs, f"{name}: forward returned no floating-point output"
    assert all(torch.isfinite(o).all() for o in outs)
    sum(o.float().pow(2).mean() for o in outs).backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"{name}: parameters without gradient: {no_grad}"
    model.eval()
    with torch.no_grad():
        again = _float_outputs(model(**sample))
    assert [o.shape for o in again] == [o.shape for o in outs]
    with torch.no_grad():
        torch.testing.assert_close(again, _float_outputs(model(**sample)))  # deterministic in eval


def _row_views(sample: dict) -> list:
    """The default batch-invariance views: row ``i`` of every tensor input gives row ``i`` of every output."""
    rows = {v.shape[0] for v in sample.values() if isinstance(v, torch.Tensor)}
    assert len(rows) == 1, f"inputs of different batch sizes {rows}: the system must state its batch_views"
    return [({k: v[i : i + 1] if isinstance(v, torch.Tensor) else v for k, v in sample.items()},
             lambda outs, i=i: [o[i : i + 1] for o in outs]) for i in range(rows.pop())]


@pytest.mark.parametrize("name,preset", TINY)
def test_contract_batched_equals_single(name, preset):
    """Every part of a batch (rows, or the system's own views: CLIP's every image-text pair)
    computed alone equals its part of the batched outputs."""
    torch.manual_seed(0)
    system = systems()[name]
    model = tatlas.create(name, preset).eval()
    sample = system.sample_input(model, torch.Generator().manual_seed(0))
    views = (system.batch_views or _row_views)(sample)
    assert len(views) >= 2, f"{name}: the sample must hold a batch of at least two to test batch invariance"
    with torch.no_grad():
        full = _float_outputs(model(**sample))
        for part, select in views:
            for got, want in zip(_float_outputs(model(**part)), select(full), strict=True):
                assert got.shape == want.shape and got.numel() > 0
                torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


DECODERS = [(s, p) for s, p in TINY if isinstance(tatlas.create(s, p, device="meta"), CachedDecoderMixin)]


@pytest.mark.parametrize("name,preset", DECODERS)
@pytest.mark.parametrize("static", [True, False])
def test_contract_cached_decoding_equals_uncached(name, preset, static):
    """Every system that decodes (a :class:`~tatlas.nn.CachedDecoderMixin`): greedy generation
    through its cache gives the tokens of the argmax of uncached forwards over the growing sequence,
    and the cached logits equal the uncached ones."""
    torch.manual_seed(0)
    model = tatlas.create(name, preset).eval()
    sample = systems()[name].sample_input(model, torch.Generator().manual_seed(0))
    prompt, extra = sample["tokens"], {k: v for k, v in sample.items() if k != "tokens"}
    n = 6  # tiny-speech Whisper has 16 text positions; 6 prompt tokens + 6
    with torch.no_grad():
        out = generate(model, prompt, GenerationConfig(max_new_tokens=n, static_cache=static), **extra)
        x = prompt
        for _ in range(n):
            x = torch.cat([x, model(x, **extra)[:, -1].argmax(-1, keepdim=True)], dim=1)
        assert out.tokens.tolist() == x[:, prompt.shape[1]:].tolist()
        cache = model.new_cache(prompt.shape[0], x.shape[1], static=static)
        cached = model.prefill(x[:, :-2], cache, **extra)
        steps = [model.decode_step(x[:, t : t + 1], cache, torch.tensor([t])) for t in (x.shape[1] - 2, x.shape[1] - 1)]
        full = model(x, **extra)
    torch.testing.assert_close(cached, full[:, :-2], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.stack(steps, 1), full[:, -2:], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name,preset", TINY)
def test_contract_save_load_round_trip(name, preset, tmp_path):
    model = tatlas.create(name, preset).eval()
    sample = systems()[name].sample_input(model, torch.Generator().manual_seed(0))
    loaded = tatlas.load(tatlas.save(model, tmp_path / "m.safetensors"), system=name).eval()
    with torch.no_grad():
        torch.testing.assert_close(_float_outputs(loaded(**sample)), _float_outputs(model(**sample)))


@pytest.mark.slow
@pytest.mark.parametrize("name", SYSTEMS)
def test_contract_compiles(name):
    model = tatlas.create(name, FIRST_TINY[name]).eval()
    sample = systems()[name].sample_input(model, torch.Generator().manual_seed(0))
    compiled = torch.compile(model)
    with torch.no_grad():
        torch.testing.assert_close(_float_outputs(compiled(**sample)), _float_outputs(model(**sample)),
                                   atol=1e-4, rtol=1e-4)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="unknown system 'gpt5'; registered systems: .*llm"):
        tatlas.create("gpt5")
    with pytest.raises(ValueError, match="unknown preset 'Tiny' for system 'llm'; valid presets: tiny"):
        tatlas.create("llm", "Tiny")
    with pytest.raises(ValueError, match="bad override"):
        tatlas.create("llm", "tiny", depth=3)


def test_config_validation_is_clear():
    with pytest.raises(ValueError, match=r"heads \(4\) must be divisible by kv_heads \(3\)"):
        tatlas.create("llm", "tiny", kv_heads=3)
    with pytest.raises(ValueError, match="layers must be positive, got 0"):
        tatlas.create("llm", "tiny", layers=0)


def test_bad_tokens_are_named():
    model = tatlas.create("llm", "tiny")
    with pytest.raises(ValueError, match=r"expected an integer tensor \[B, T\], got torch.float32"):
        model(torch.zeros(2, 3))


def test_registries_are_plain_data(monkeypatch):
    """Built-in systems and demos are tuples of records; importing a system module registers nothing;
    a program adds its own through register()/register_demo() (a name once only)."""
    import dataclasses
    import importlib

    import tatlas.demo as demo_module
    import tatlas.models.registry as registry
    from tatlas.demo.spec import Demo
    from tatlas.models._builtin import BUILTIN

    assert [s.name for s in BUILTIN] == ["llm", "imagegpt", "clip", "whisper", "decision_transformer", "evoformer",
                                        "llava", "internvl", "flamingo", "imagebind"]
    before = dict(systems())
    importlib.reload(importlib.import_module("tatlas.models.clip.system"))
    assert systems().keys() == before.keys()
    monkeypatch.setattr(registry, "_ADDED", {})
    mine = dataclasses.replace(systems()["llm"], name="my-llm")
    assert registry.register(mine) is mine and tatlas.get_system("my-llm") is mine
    with pytest.raises(ValueError, match="system 'llm' is registered twice"):
        registry.register(systems()["llm"])
    monkeypatch.setattr(demo_module, "_ADDED", {})
    demo = Demo(system="my-llm", run=lambda options: None)
    demo_module.register_demo(demo)
    assert demo_module.demos()["my-llm"] is demo.run
    with pytest.raises(ValueError, match="a demo for 'moe' is registered twice"):
        demo_module.register_demo(Demo(system="moe", run=lambda options: None))


def test_llm_overrides_keep_derived_sizes_derived():
    """``head_dim`` and ``layer_types`` are stated in every config; an override of the sizes they
    derive from carries them along where they had their derived values, and only there."""
    big = tatlas.create("llm", "tiny", layers=4, dim=128, device="meta").config
    assert (big.head_dim, big.layer_types) == (32, ("full",) * 4)
    windowed = tatlas.create("llm", "tiny", sliding_window=8, device="meta").config
    assert windowed.layer_types == ("sliding", "sliding")
    assert tatlas.create("llm", "tiny", dim=128, head_dim=8, device="meta").config.head_dim == 8
    assert tatlas.create("llm", "Gemma-3-1B", dim=1024, device="meta").config.head_dim == 256  # its own, not 1152 / 4
    with pytest.raises(ValueError, match=r"layer_types: expected 3 entries \(one per layer\)"):
        tatlas.create("llm", "tiny-gemma3-vision", layers=3, device="meta")
    with pytest.raises(ValueError, match=r"dim \(30\) must be divisible by heads \(4\), or give head_dim"):
        tatlas.create("llm", "tiny", dim=30, device="meta")


def test_the_lazy_index_matches_the_records():
    """models/_index.py (which package holds which system, and who owns which checkpoint key) says
    what the SYSTEM records say; loading a checkpoint imports only its owner's package."""
    import subprocess
    import sys

    from tatlas.models._builtin import BUILTIN
    from tatlas.models._index import MODULES, OWNERS

    assert list(MODULES) == [s.name for s in BUILTIN]
    owned = {(table, key): s.name for s in BUILTIN for table in ("hf_model_types", "formats", "ct2_specs")
             for key in getattr(s, table)}
    assert OWNERS == owned
    code = ("import sys, tatlas; from tatlas.models.registry import get_system, owner_of; "
            "assert owner_of('ct2_specs', 'WhisperSpec').name == 'whisper'; get_system('whisper'); "
            "print(sorted(m for m in sys.modules if m.startswith('tatlas.models.') and m.endswith('.system')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['tatlas.models.whisper.system']"
