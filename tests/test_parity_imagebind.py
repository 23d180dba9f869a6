"""ImageBind against the official model (``imagebind-unofficial``'s ``ImageBindModel``, whose model
files are the official repository's): a tiny random model with every parameter perturbed, its
state dict saved as the official checkpoint is and converted through ``tatlas.load``; every
modality's embedding within 1e-4, clips averaged, drop-path off in eval, and our export back."""

from __future__ import annotations

import importlib.util
import sys
import types
from dataclasses import replace

import pytest
import torch

import tatlas
from tatlas.models.imagebind.config import PRESETS
from tatlas.models.imagebind.convert import (
    convert_state_dict,
    infer_config,
    to_official,
)

pytest.importorskip("einops")
if importlib.util.find_spec("imagebind") is None:
    pytest.skip("imagebind-unofficial is not installed (requirements/reference.txt)", allow_module_level=True)


def _official_module():
    """``imagebind.models.imagebind_model`` imported beside two stubs, removed again after: its
    ``imagebind.data`` (loaders needing torchaudio and pytorchvideo, unused by the model) and
    ``timm.layers`` (timm imports torchvision, which does not import beside torch 2.13; the model
    takes only ``DropPath``, built for drop-path rates above 0, which these tests do not use, and
    ``trunc_normal_``, an initialiser: torch's own stands in)."""
    if "imagebind.models.imagebind_model" in sys.modules:
        return sys.modules["imagebind.models.imagebind_model"]
    layers = types.ModuleType("timm.layers")

    class DropPath(torch.nn.Module):
        def __init__(self, p):
            raise RuntimeError("the timm stub has no DropPath: build the reference with drop-path 0")

    layers.DropPath, layers.trunc_normal_ = DropPath, torch.nn.init.trunc_normal_
    stubs = {"imagebind.data": types.ModuleType("imagebind.data"), "timm": types.ModuleType("timm"),
             "timm.layers": layers}
    saved = {name: sys.modules.get(name) for name in stubs}
    sys.modules.update(stubs)
    try:
        from imagebind.models import imagebind_model
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return imagebind_model


@pytest.fixture(scope="module")
def reference():
    ib = _official_module()
    torch.manual_seed(0)
    model = ib.ImageBindModel(
        out_embed_dim=16, vision_embed_dim=32, vision_num_blocks=1, vision_num_heads=4, text_embed_dim=32,
        text_num_blocks=1, text_num_heads=4, audio_embed_dim=32, audio_num_blocks=1, audio_num_heads=4,
        audio_drop_path=0.0, depth_embed_dim=32, depth_num_blocks=1, depth_num_heads=4, thermal_embed_dim=32,
        thermal_num_blocks=1, thermal_num_heads=4, imu_embed_dim=32, imu_num_blocks=1, imu_num_heads=4,
        imu_drop_path=0.0,
    ).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():  # LayerNorms off 1/0, biases off 0, the text scale off 1/0.07
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
        for name, b in model.named_buffers():
            if name.endswith("log_logit_scale"):
                b.add_(0.1)
    return model


def _inputs(gen: torch.Generator) -> dict[str, torch.Tensor]:
    text = torch.zeros(3, 77, dtype=torch.long)
    for i, n in enumerate((5, 9, 3)):  # <start_of_text> body <end_of_text>, zeros after (the official padding)
        text[i, 0] = 49406
        text[i, 1 : n + 1] = torch.randint(0, 49406, (n,), generator=gen)
        text[i, n + 1] = 49407
    return {
        "vision": torch.randn(2, 3, 224, 224, generator=gen),
        "text": text,
        "audio": torch.randn(2, 3, 1, 128, 204, generator=gen),  # 3 clips each, averaged
        "depth": torch.randn(2, 1, 224, 224, generator=gen),
        "thermal": torch.randn(2, 1, 224, 224, generator=gen),
        "imu": torch.randn(2, 6, 2000, generator=gen),
    }


@pytest.fixture(scope="module")
def loaded(reference, tmp_path_factory):
    path = tmp_path_factory.mktemp("imagebind") / "imagebind_tiny.pth"
    torch.save(reference.state_dict(), path)
    return tatlas.load(path, format="imagebind").eval()


def test_config_inferred_from_the_checkpoint(reference, loaded):
    config = infer_config(reference.state_dict())
    tiny = PRESETS["tiny"]  # the shapes match the tiny preset, so its heads are taken; the scales are read
    assert all(getattr(config, m).heads == getattr(tiny, m).heads == 4 for m in config.modalities)
    assert replace(config, **{m: replace(getattr(config, m), logit_scale=getattr(tiny, m).logit_scale)
                              for m in config.modalities}) == tiny
    assert loaded.config == config
    assert config.text.learnable_scale and config.audio.logit_scale == pytest.approx(20.0 * torch.e**0.1, rel=1e-5)


def test_every_modality_matches(reference, loaded):
    inputs = _inputs(torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = reference(inputs)
        got = loaded(inputs)
    assert set(got) == set(want) == set(inputs)
    for m in inputs:
        assert got[m].shape == want[m].shape, m
        err = (got[m] - want[m]).abs().max().item()
        assert err < 1e-4, (m, err)
        # the embeddings are not trivially equal: each depends on its input
        assert (want[m][0] - want[m][1]).abs().max() > 1e-3, m


def test_video_clips_and_single_modalities(reference, loaded):
    gen = torch.Generator().manual_seed(3)
    video = torch.randn(2, 2, 3, 2, 224, 224, generator=gen)  # [B, clips, 3, T, H, W]
    with torch.no_grad():
        want = reference({"vision": video})["vision"]
        got = loaded.encode("vision", video)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
        imu = torch.randn(1, 6, 2000, generator=gen)
        torch.testing.assert_close(loaded(imu=imu)["imu"], reference({"imu": imu})["imu"], atol=1e-4, rtol=0)
    # unnormalised head output and unit embeddings
    with torch.no_grad():
        raw = loaded.encode("audio", torch.randn(2, 1, 128, 204, generator=gen), normalize=False)
    assert (raw.norm(dim=-1) - 1).abs().max() > 1e-3


def test_export_round_trip(reference, loaded):
    config, state = convert_state_dict(reference.state_dict())
    back = to_official(loaded.state_dict(), config)
    want = reference.state_dict()
    assert set(back) == set(want)
    for k, v in want.items():
        torch.testing.assert_close(back[k], v, atol=0, rtol=0, msg=k)


def test_drop_path_only_in_training(loaded):
    import copy

    model = copy.deepcopy(loaded)
    block = model.encoders["imu"].blocks[0]
    block.drop_path = 0.9
    x = torch.randn(4, 6, 2000, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        model.eval()
        a, b = model.encode("imu", x), model.encode("imu", x)
        torch.testing.assert_close(a, b)
        model.train()
        torch.manual_seed(0)
        c = model.encode("imu", x)
    assert (c - a).abs().max() > 1e-4


def test_bad_inputs_are_refused(loaded):
    with pytest.raises(ValueError, match=r"vision: expected \[B, 3, 224, 224\]"):
        loaded.encode("vision", torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"text: expected \[B, 77\]"):
        loaded.encode("text", torch.zeros(1, 10, dtype=torch.long))
    with pytest.raises(ValueError, match=r"imu: expected \[B, 6, 2000\]"):
        loaded.encode("imu", torch.randn(1, 6, 100))
    with pytest.raises(ValueError, match="unknown modality 'smell'"):
        loaded({"smell": torch.randn(1)})
