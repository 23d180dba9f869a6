"""ImageBind preprocessing (``tatlas.models.imagebind.preprocess``) against the official pipeline's
outputs: golden files written by ``scripts/imagebind_goldens.py`` with torchaudio / torchvision /
pytorchvideo (``tests/goldens/imagebind/README.md``). Measured: every audio, fbank, resample and
image value equal bit for bit; the tolerance asserted is 1e-4 absolute (the DESIGN bar)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from tatlas.models.imagebind import preprocess as P

GOLDENS = Path(__file__).parent / "goldens" / "imagebind"
ATOL = 1e-4


def _script():
    spec = importlib.util.spec_from_file_location(
        "imagebind_goldens", Path(__file__).parent.parent / "scripts" / "imagebind_goldens.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # numpy only at import: no torchaudio / torchvision
    return module


GOLDEN = _script()


def _signal(seconds, rate, seed, pcm_sum):
    pcm = GOLDEN.test_signal(seconds, rate, seed)
    assert pcm.astype(np.int64).sum() == pcm_sum  # the regenerated input is the one the goldens saw
    return pcm, torch.from_numpy(pcm.astype(np.float32) / 32768.0)  # as torchaudio.load scales int16


def _close(ours, golden, atol=ATOL):
    ours = np.ascontiguousarray(ours)
    assert ours.shape == golden.shape
    diff = float(np.abs(ours - golden).max())
    assert diff <= atol, f"max abs diff {diff} > {atol}"


@pytest.mark.parametrize("name", list(GOLDEN.AUDIO_CASES))
def test_audio_clips_equal_official(name):
    seconds, rate, seed, stride = GOLDEN.AUDIO_CASES[name]
    g = np.load(GOLDENS / f"{name}.npz")
    _, wave = _signal(seconds, rate, seed, g["pcm_sum"])
    before = wave.clone()
    clips = P.audio_clips(wave, rate)
    assert tuple(clips.shape) == tuple(g["shape"]) == (3, 1, 128, 204) and clips.dtype == torch.float32
    assert torch.equal(wave, before)  # the in-place mean removal works on a copy
    n16 = wave.numel() if rate == 16_000 else int(g["resampled_len"])
    assert P.clip_spans(n16, 16_000) == [tuple(s) for s in g["spans"].tolist()]
    c = clips[:, 0].numpy()  # [3, 128, 204]
    _close(c[:, ::stride], g["clips_bins"])
    _close(c.sum(axis=2), g["clips_sum_frames"], 1e-3)  # every frame, summed over all 128 bins
    _close(c.sum(axis=1), g["clips_sum_bins"], 1e-3)
    if rate != 16_000:
        resampled = P.resample(wave, rate)
        assert resampled.numel() == int(g["resampled_len"])
        _close(resampled.numpy()[::5], g["resampled_every5"])


def test_in_place_mean_removal_matters():
    """Overlapping clips see earlier clips' mean removal (official quirk, kept): without it the
    3 s signal's clips would be off by far more than the tolerance."""
    seconds, rate, seed, stride = GOLDEN.AUDIO_CASES["audio_16k_3s"]
    g = np.load(GOLDENS / "audio_16k_3s.npz")
    _, wave = _signal(seconds, rate, seed, g["pcm_sum"])
    independent = torch.stack([P.clip_mel(wave[a:b]) for a, b in P.clip_spans(wave.numel(), rate)])
    independent = ((independent - P.AUDIO_MEAN) / P.AUDIO_STD)[:, 0].numpy()
    _close(independent[0, ::stride], g["clips_bins"][0])  # the first clip sees nothing earlier
    assert np.abs(independent[1:, ::stride] - g["clips_bins"][1:]).max() > 0.1


@pytest.mark.parametrize("name,seconds,rate,seed", [("fbank_16k", 0.5, 16_000, 4), ("fbank_44k", 0.3, 44_100, 5)])
def test_kaldi_fbank_equals_torchaudio(name, seconds, rate, seed):
    g = np.load(GOLDENS / f"{name}.npz")
    _, wave = _signal(seconds, rate, seed, g["pcm_sum"])
    fbank = P.kaldi_fbank(wave, rate)
    assert fbank.dtype == torch.float32
    _close(fbank.numpy(), g["fbank"])


def test_load_audio_clips_from_wav(tmp_path):
    import soundfile

    seconds, rate, seed, stride = GOLDEN.AUDIO_CASES["audio_44k_2p5s"]
    g = np.load(GOLDENS / "audio_44k_2p5s.npz")
    pcm, _ = _signal(seconds, rate, seed, g["pcm_sum"])
    path = tmp_path / "signal.wav"
    soundfile.write(path, pcm, rate, subtype="PCM_16")
    _close(P.load_audio_clips(path)[:, 0].numpy()[:, ::stride], g["clips_bins"])
    with pytest.raises(ValueError, match="no such audio file"):
        P.load_audio_clips(tmp_path / "missing.wav")


def test_clip_spans_rules():
    # the pinned sampler spreads starts over the whole recording: 0, 2.5, 5 s for 7 s
    assert P.clip_spans(7 * 16_000, 16_000) == [(0, 32_000), (40_000, 72_000), (80_000, 112_000)]
    # shorter than a clip: the whole recording, three times (the slice stops at the end)
    assert P.clip_spans(8_000, 16_000) == [(0, 32_000)] * 3
    assert P.clip_spans(16_000 * 4, 16_000, clips=1) == [(0, 32_000)]


def test_vision_equals_official():
    from PIL import Image

    g = np.load(GOLDENS / "vision.npz")
    with Image.open(GOLDENS / "image.png") as f:
        img = f.copy()
    assert img.size == GOLDEN.test_image().size and np.array_equal(np.asarray(img), np.asarray(GOLDEN.test_image()))
    for tag, im in {"landscape": img, "portrait": img.transpose(Image.Transpose.ROTATE_90)}.items():
        x = P.image_pixels(im)
        assert x.shape == (3, 224, 224) and x.dtype == torch.float32
        x = x.numpy()
        _close(x[:, ::4, ::4], g[f"{tag}_grid"])
        _close(x.sum(axis=2), g[f"{tag}_sum_rows"], 1e-3)
        _close(x.sum(axis=1), g[f"{tag}_sum_cols"], 1e-3)
    # torchvision's half-to-even crop offset: 315 - 224 = 91 columns, 46 cut on the left (not 45)
    shifted = P.image_pixels(img.crop((1, 0, 300, 229)))
    assert not np.allclose(shifted.numpy()[:, ::4, ::4], g["landscape_grid"], atol=ATOL)


def test_image_from_path_and_rgba(tmp_path):
    from PIL import Image

    path = GOLDENS / "image.png"
    rgb = P.image_pixels(path)
    rgba = Image.open(path).convert("RGBA")
    rgba.putalpha(0)  # official convert("RGB") drops alpha (no compositing over white)
    assert torch.equal(P.image_pixels(rgba), rgb)


def test_thermal_and_depth_maps():
    from PIL import Image

    g = np.load(GOLDENS / "vision.npz")
    with Image.open(GOLDENS / "image.png") as f:
        t = P.thermal_pixels(f)
    assert t.shape == (1, 224, 224) and t.dtype == torch.float32
    _close(t.numpy()[:, ::4, ::4], g["thermal_grid"])  # torchvision's Resize + CenterCrop + ToTensor on "L"
    u8 = np.asarray(Image.open(GOLDENS / "image.png").convert("L"))
    assert torch.allclose(P.thermal_pixels(u8), t, atol=1.2 / 255)  # float path ~ 8-bit path (PIL rounds "L" to 8 bits)

    depth = np.full((240, 320), 2.0, dtype=np.float32)
    depth[:10] = 0.0  # missing readings
    d = P.depth_pixels(depth)
    assert d.shape == (1, 224, 224) and d.dtype == torch.float32
    assert torch.allclose(d[:, 112], torch.full((1, 224), 0.5))  # disparity 1 / 2 m
    assert torch.allclose(P.depth_pixels(np.full((240, 320), 0.5), is_disparity=True), torch.full((1, 224, 224), 0.5))


def test_imu_window():
    imu = torch.randn(6, 2500)
    assert torch.equal(P.imu_window(imu), imu[:, :2000])
    short = P.imu_window(imu[:, :700].double())
    assert short.shape == (6, 2000) and short.dtype == torch.float32
    assert torch.equal(short[:, :700], imu[:, :700]) and not short[:, 700:].any()


@pytest.mark.parametrize("call,message", [
    (lambda: P.audio_clips(torch.zeros(2, 16_000), 16_000),
     r"waveform: expected a mono signal of shape \[samples\], got shape \[2, 16000\]"),
    (lambda: P.audio_clips(torch.zeros(0), 16_000), "waveform: expected at least one sample, got an empty signal"),
    (lambda: P.audio_clips(torch.tensor([0.0, float("nan")] * 100), 16_000),
     r"expected finite samples, got NaN or infinity \(the first at sample 1\)"),
    (lambda: P.audio_clips(torch.zeros(100, dtype=torch.int16), 16_000), "expected float samples"),
    (lambda: P.audio_clips(torch.zeros(16_000), 0), "sample_rate: expected a positive whole number of Hz, got 0"),
    (lambda: P.kaldi_fbank(torch.zeros(16_000), 16_000, high_freq=9_000.0), "mel bank edges"),
    (lambda: P.imu_window(torch.zeros(3, 100)), r"imu: expected shape \[6, T\] with T >= 1, got shape \[3, 100\]"),
    (lambda: P.imu_window(torch.full((6, 10), float("nan"))), "imu: expected finite readings"),
    (lambda: P.depth_pixels(np.zeros((3, 8, 8))),
     r"depth: expected a single-channel map of shape \[H, W\] or \[1, H, W\], got shape \[3, 8, 8\]"),
    (lambda: P.thermal_pixels(np.full((8, 8), np.nan)), "thermal: expected finite values"),
    (lambda: P.image_pixels("/nonexistent.png"), "image: /nonexistent.png: no such image file"),
    (lambda: P.image_pixels(np.zeros((8, 8, 3))), "image: expected a path or a PIL.Image, got ndarray"),
])
def test_errors_are_one_line(call, message):
    with pytest.raises(ValueError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


def test_short_audio_gives_padding_not_an_error():
    # shorter than one 25 ms frame: no frames at all, every column is padding
    clips = P.audio_clips(torch.full((100,), 0.1), 16_000)
    assert clips.shape == (3, 1, 128, 204)
    assert torch.allclose(clips, torch.full_like(clips, (0 - P.AUDIO_MEAN) / P.AUDIO_STD))
