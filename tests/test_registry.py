"""The contract every registered system meets (it joins these tests by registering), plus the
registry's error messages."""

import pytest
import torch

import tatlas
from tatlas.models import systems

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


@pytest.mark.parametrize("name,preset", TINY)
def test_contract_batched_equals_single(name, preset):
    torch.manual_seed(0)
    model = tatlas.create(name, preset).eval()
    sample = systems()[name].sample_input(model, torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = _float_outputs(model(**sample))
        first = _float_outputs(model(**{k: v[:1] if isinstance(v, torch.Tensor) else v for k, v in sample.items()}))
    for f, o in zip(full, first, strict=True):
        torch.testing.assert_close(f[:1], o, atol=1e-5, rtol=1e-5)


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
