"""ImageBind's input preprocessing (Girdhar et al. 2023, "ImageBind: One Embedding Space To Bind
Them All", §3.3 "Encoding modalities"), equal to the official loaders in ``imagebind/data.py``
(``load_and_transform_vision_data``, ``load_and_transform_audio_data``), in torch and numpy only.

- Audio (the paper: 2-second clips at 16 kHz as 128-bin Mel spectrograms): resample to 16 kHz
  (:func:`resample`, torchaudio's windowed-sinc resampler); pick three 2-second clips spread
  evenly over the recording (:func:`clip_spans`, pytorchvideo's ``ConstantClipsPerVideoSampler``
  at the commit ImageBind pins); per clip, subtract its mean, take
  Kaldi filter-bank features (:func:`kaldi_fbank`, torchaudio's ``compliance.kaldi.fbank`` with
  ImageBind's settings), zero-pad or cut to 204 frames, then ``(x + 4.268) / 9.138``
  (:func:`audio_clips`, ``[clips, 1, 128, 204]``).
- Images (:func:`image_pixels`): PIL ``convert("RGB")``, the shorter side bicubic to 224, centre
  crop 224 with torchvision's rounding, to [0, 1], CLIP's mean/std: ``[3, 224, 224]``.
- Depth, thermal, IMU (:func:`depth_pixels`, :func:`thermal_pixels`, :func:`imu_window`): the
  official repository ships no loaders for these; the choices made are stated on each function.

Every function checks its input and raises a one-line ``ValueError`` naming what it expected and
what it got.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ...data.images import open_image
from ..clip.config import CLIP_MEAN, CLIP_STD

SAMPLE_RATE = 16_000  # Hz: every audio clip is resampled to this
AUDIO_MEAN, AUDIO_STD = -4.268, 9.138  # the official loader's statistics of the log-Mel features
NUM_MEL_BINS, TARGET_FRAMES = 128, 204  # 2 s at a 10 ms shift is 198 frames, padded to 204
IMU_CHANNELS, IMU_STEPS = 6, 2000  # accelerometer + gyroscope xyz, 2,000 time steps a window


# ---------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------


def _waveform(waveform: Any, name: str = "waveform") -> Tensor:
    """A mono signal -> float32 ``[S]``; a one-line ``ValueError`` for anything else."""
    x = torch.as_tensor(np.asarray(waveform) if not isinstance(waveform, Tensor) else waveform)
    if x.ndim != 1:
        raise ValueError(f"{name}: expected a mono signal of shape [samples], got shape {list(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected float samples in [-1, 1], got dtype {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"{name}: expected at least one sample, got an empty signal")
    if not torch.isfinite(x).all():
        first = int((~torch.isfinite(x)).nonzero()[0])
        raise ValueError(f"{name}: expected finite samples, got NaN or infinity (the first at sample {first})")
    return x.to(torch.float32)


def _rate(sample_rate: Any, name: str = "sample_rate") -> int:
    if isinstance(sample_rate, bool) or int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"{name}: expected a positive whole number of Hz, got {sample_rate!r}")
    return int(sample_rate)


# ---------------------------------------------------------------------------------------------
# Resampling
# ---------------------------------------------------------------------------------------------


def _sinc_kernel(orig: int, new: int, *, zeros: int, rolloff: float) -> tuple[Tensor, int]:
    """The ``[new, 1, 2 * width + orig]`` polyphase filters of a Hann-windowed sinc low-pass at
    ``rolloff`` times the lower Nyquist rate, ``zeros`` zero crossings each side, for rates already
    divided by their gcd; computed in float32 in the same order as torchaudio."""
    cutoff = min(orig, new) * rolloff
    width = math.ceil(zeros * orig / cutoff)
    taps = torch.arange(-width, width + orig, dtype=torch.float32)[None, None] / orig  # [1, 1, K]
    t = torch.arange(0, -new, -1, dtype=torch.float32)[:, None, None] / new + taps  # [new, 1, K]
    t = (t * cutoff).clamp(-zeros, zeros)
    window = torch.cos(t * math.pi / zeros / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.tensor(1.0), t.sin() / t)
    return sinc * (window * (cutoff / orig)), width


def resample(waveform: Any, orig_rate: int, new_rate: int = SAMPLE_RATE, *,
             zeros: int = 6, rolloff: float = 0.99) -> Tensor:
    """float ``[S]`` at ``orig_rate`` -> float32 ``[ceil(S * new_rate / orig_rate)]`` at ``new_rate``.

    Band-limited interpolation (Smith's windowed-sinc method) as ``torchaudio.functional.resample``
    does it by default (``sinc_interp_hann``, ``lowpass_filter_width=6``, ``rolloff=0.99``): the
    signal is zero-padded, convolved with one filter per output phase at a stride of the reduced
    input rate, and the phases interleaved. Kernel built in float32 in torchaudio's order: equal to
    torchaudio bit for bit 44.1 -> 16 kHz (``tests/test_imagebind_preprocess.py``)."""
    x = _waveform(waveform)
    orig_rate, new_rate = _rate(orig_rate, "orig_rate"), _rate(new_rate, "new_rate")
    if orig_rate == new_rate:
        return x.clone()
    gcd = math.gcd(orig_rate, new_rate)
    orig, new = orig_rate // gcd, new_rate // gcd
    kernel, width = _sinc_kernel(orig, new, zeros=zeros, rolloff=rolloff)
    padded = F.pad(x[None, None], (width, width + orig))  # [1, 1, S + 2 width + orig]
    phases = F.conv1d(padded, kernel.to(x.device), stride=orig)  # [1, new, frames]
    out = phases[0].transpose(0, 1).reshape(-1)  # [frames * new], phases interleaved
    return out[: math.ceil(new * x.numel() / orig)].contiguous()


# ---------------------------------------------------------------------------------------------
# Kaldi filter banks
# ---------------------------------------------------------------------------------------------


def _mel(hz: Any) -> Any:
    """HTK's Mel scale, ``1127 ln(1 + f / 700)`` (Kaldi's ``MelScale``)."""
    return 1127.0 * (1.0 + hz / 700.0).log() if isinstance(hz, Tensor) else 1127.0 * math.log(1.0 + hz / 700.0)


def kaldi_mel_banks(num_mel_bins: int, n_fft: int, sample_rate: int, *,
                    low_freq: float = 20.0, high_freq: float = 0.0) -> Tensor:
    """float32 ``[num_mel_bins, n_fft // 2 + 1]``: Kaldi's triangular filters, equally spaced on
    HTK's Mel scale between ``low_freq`` and ``high_freq`` (``<= 0``: that far below Nyquist), peak
    1, unnormalised; the Nyquist bin gets weight 0 (Kaldi's ``MelBanks``, torchaudio's
    ``get_mel_banks`` without VTLN warping)."""
    if num_mel_bins < 1:
        raise ValueError(f"num_mel_bins: expected at least 1, got {num_mel_bins}")
    nyquist = 0.5 * sample_rate
    high = high_freq if high_freq > 0.0 else high_freq + nyquist
    if not 0.0 <= low_freq < high <= nyquist:
        raise ValueError(f"mel bank edges: expected 0 <= low_freq < high_freq <= {nyquist} Hz, "
                         f"got {low_freq} and {high}")
    mel_low, mel_high = _mel(low_freq), _mel(high)
    delta = (mel_high - mel_low) / (num_mel_bins + 1)
    index = torch.arange(num_mel_bins)[:, None]  # [M, 1]
    left, centre, right = (mel_low + index * delta, mel_low + (index + 1) * delta,
                           mel_low + (index + 2) * delta)  # [M, 1] each
    fft_mel = _mel((sample_rate / n_fft) * torch.arange(n_fft // 2, dtype=torch.float32))[None]  # [1, n_fft / 2]
    up, down = (fft_mel - left) / (centre - left), (right - fft_mel) / (right - centre)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)  # [M, n_fft / 2]
    return F.pad(banks, (0, 1))  # [M, n_fft / 2 + 1]


def kaldi_fbank(waveform: Any, sample_rate: int, *, num_mel_bins: int = NUM_MEL_BINS,
                frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0,
                low_freq: float = 20.0, high_freq: float = 0.0) -> Tensor:
    """float ``[S]`` -> float32 ``[frames, num_mel_bins]`` log Mel filter-bank energies, Kaldi's
    ``compute-fbank-feats`` as ``torchaudio.compliance.kaldi.fbank`` computes it with ImageBind's
    settings (``window_type="hanning"``, ``dither=0``, ``use_energy=False``, ``htk_compat=True``,
    which only matters with energy) and torchaudio's defaults for everything else:

    1. frames of ``frame_length_ms`` every ``frame_shift_ms`` (400 and 160 samples at 16 kHz), only
       whole frames (``snip_edges``): ``1 + (S - 400) // 160`` of them, none if ``S < 400``;
    2. per frame: subtract its mean (``remove_dc_offset``), pre-emphasis ``x[n] - 0.97 x[n - 1]``
       (``x[-1] = x[0]``), a symmetric Hann window, zero-pad to the next power of two (512);
    3. power spectrum ``|rfft|^2`` -> :func:`kaldi_mel_banks` -> ``log(max(e, float32 eps))``.

    The input is not rescaled: Kaldi expects 16-bit integer amplitudes, ImageBind passes floats
    in [-1, 1], as done here."""
    x = _waveform(waveform)
    sample_rate = _rate(sample_rate)
    shift = int(sample_rate * frame_shift_ms * 0.001)
    length = int(sample_rate * frame_length_ms * 0.001)
    if shift < 1 or length < 2:
        raise ValueError(f"frames: expected at least 2 samples a frame and 1 a shift at {sample_rate} Hz, "
                         f"got {length} and {shift}")
    n_fft = 1 << (length - 1).bit_length()
    banks = kaldi_mel_banks(num_mel_bins, n_fft, sample_rate, low_freq=low_freq, high_freq=high_freq).to(x.device)
    if x.numel() < length:
        return x.new_zeros(0, num_mel_bins)
    frames = x.unfold(0, length, shift)  # [T, length]
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)  # [T, length]
    frames = frames - 0.97 * previous
    frames = frames * torch.hann_window(length, periodic=False, dtype=torch.float32, device=x.device)
    power = torch.fft.rfft(F.pad(frames, (0, n_fft - length))).abs().pow(2.0)  # [T, n_fft / 2 + 1]
    energies = power @ banks.T  # [T, M]
    return energies.clamp_min(torch.finfo(torch.float32).eps).log()


# ---------------------------------------------------------------------------------------------
# Audio clips
# ---------------------------------------------------------------------------------------------


def clip_spans(num_samples: int, sample_rate: int, *, clips: int = 3,
               clip_seconds: float = 2.0) -> list[tuple[int, int]]:
    """Sample ranges ``[(start, end)]`` of the clips the official loader takes from a recording of
    ``num_samples`` at ``sample_rate``: ``clip_seconds`` long, starting at ``k * max(0, D - clip) /
    max(clips - 1, 1)`` seconds for ``k = 0 .. clips - 1`` (exact fractions of the float
    duration ``D``, then ``int(seconds * rate)``), as pytorchvideo's
    ``ConstantClipsPerVideoSampler`` does at commit 28fe037 (ImageBind's pin; the PyPI release
    0.1.5 divides by ``clips`` instead and leaves the end of the recording out). A recording
    shorter than a clip gives ``clips`` copies of the whole recording; ``end`` may pass
    ``num_samples`` (the slice stops there)."""
    if clips < 1 or clip_seconds <= 0:
        raise ValueError(f"clips: expected clips >= 1 and clip_seconds > 0, got {clips} and {clip_seconds}")
    duration = num_samples / sample_rate
    clip = Fraction(clip_seconds)
    latest = Fraction(max(duration - clip, 0))
    step = Fraction(latest, max(clips - 1, 1))
    spans = []
    for k in range(clips):
        start = step * k
        spans.append((int(start * sample_rate), int((start + clip) * sample_rate)))
        if step * (k + 1) > latest:  # the sampler's end-of-video rule (never true for k < clips - 1)
            break
    return spans


def clip_mel(clip: Tensor, sample_rate: int = SAMPLE_RATE, *, num_mel_bins: int = NUM_MEL_BINS,
             target_frames: int = TARGET_FRAMES) -> Tensor:
    """One clip float ``[S]`` -> ``[1, num_mel_bins, target_frames]`` (ImageBind's
    ``waveform2melspec``): mean removed, :func:`kaldi_fbank`, transposed, zero-padded at the end or
    cut to ``target_frames``. Not normalised."""
    clip = _waveform(clip, "clip")
    return _padded_fbank(clip - clip.mean(), sample_rate, num_mel_bins, target_frames)


def _padded_fbank(clip: Tensor, sample_rate: int, num_mel_bins: int, target_frames: int) -> Tensor:
    """A mean-free clip ``[S]`` -> ``[1, num_mel_bins, target_frames]``."""
    fbank = kaldi_fbank(clip, sample_rate, num_mel_bins=num_mel_bins).T  # [M, T]
    fbank = F.pad(fbank, (0, max(0, target_frames - fbank.shape[1])))[:, :target_frames]  # [M, target]
    return fbank[None]


def audio_clips(waveform: Any, sample_rate: int, *, clips: int = 3, clip_seconds: float = 2.0,
                num_mel_bins: int = NUM_MEL_BINS, target_frames: int = TARGET_FRAMES,
                mean: float = AUDIO_MEAN, std: float = AUDIO_STD) -> Tensor:
    """A mono recording float ``[S]`` in [-1, 1] at ``sample_rate`` -> the audio encoder's input
    float32 ``[clips, 1, num_mel_bins, target_frames]``, as ``load_and_transform_audio_data``:
    :func:`resample` to 16 kHz, :func:`clip_spans`, :func:`clip_mel` per clip, ``(x - mean) / std``.

    One detail of the official code is kept on purpose: each clip's mean is subtracted *in place*
    from the shared recording, so where clips overlap (any recording shorter than ``clips *
    clip_seconds``) a later clip sees samples already shifted by an earlier clip's mean. Only
    frames that straddle an earlier clip's end change (a constant shift within a frame is removed
    with the frame's DC offset), but in low-energy Mel bins by up to 0.7 after normalisation on the
    test signals of ``tests/goldens/imagebind``, so it is reproduced here. Equal to the official
    output bit for bit on those signals."""
    x = resample(_waveform(waveform), _rate(sample_rate), SAMPLE_RATE)  # [S'] at 16 kHz
    out = []
    for start, end in clip_spans(x.numel(), SAMPLE_RATE, clips=clips, clip_seconds=clip_seconds):
        clip = x[start:end]  # a view: the in-place mean removal below is seen by later clips
        if clip.numel() == 0:
            raise ValueError(f"audio: expected at least one sample in every clip, got an empty clip "
                             f"at samples {start}..{end} of {x.numel()}")
        clip -= clip.mean()
        out.append(_padded_fbank(clip, SAMPLE_RATE, num_mel_bins, target_frames))
    return (torch.stack(out) - mean) / std  # [clips, 1, M, target]


def load_audio_clips(path: str | os.PathLike, **kwargs: Any) -> Tensor:
    """An audio file -> :func:`audio_clips` ``[clips, 1, 128, 204]``. Read with the repository's
    reader (:func:`tatlas.models.whisper.audio.load_audio`: libsndfile, one-line errors naming the
    file) at the file's own rate, then resampled here as torchaudio would. A mono file gives the
    official loader's values; for several channels the official code keeps only the first (after
    subtracting the mean over all channels) while this mixes them to their mean."""
    import soundfile

    from ..whisper.audio import audio_duration, load_audio

    audio_duration(path)  # checks the file: missing, empty, unreadable, no samples
    rate = soundfile.info(str(path)).samplerate
    return audio_clips(load_audio(path, sr=rate), rate, **kwargs)


# ---------------------------------------------------------------------------------------------
# Images, depth, thermal
# ---------------------------------------------------------------------------------------------


def _open(image: Any, name: str):
    """A ``PIL.Image`` as given, or read from a path by the shared reader (:func:`tatlas.data.images.open_image`)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    if isinstance(image, (str, os.PathLike)):
        try:
            return open_image(image)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None
    raise ValueError(f"{name}: expected a path or a PIL.Image, got {type(image).__name__}")


def resize_center_crop(img: Any, size: int) -> Any:
    """``PIL -> PIL``: the shorter side bicubic to ``size`` (the longer ``int(size * long /
    short)``; untouched if already that size), then the centre ``size x size`` crop at offsets
    ``round((H - size) / 2)``, ``round((W - size) / 2)`` (Python's half-to-even ``round``, as
    torchvision's ``Resize(size, BICUBIC)`` + ``CenterCrop(size)``; CLIP's preprocessing floors
    instead, which moves the crop by one pixel when the excess is 3 mod 4)."""
    from PIL import Image

    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_w, new_h = (size, int(size * long / short)) if w <= h else (int(size * long / short), size)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    top, left = round((new_h - size) / 2.0), round((new_w - size) / 2.0)  # half to even
    return img.crop((left, top, left + size, top + size))


def image_pixels(image: Any, *, size: int = 224, mean: Sequence[float] = CLIP_MEAN,
                 std: Sequence[float] = CLIP_STD) -> Tensor:
    """An image (a path or a ``PIL.Image``) -> float32 ``[3, size, size]``, as
    ``load_and_transform_vision_data``: ``convert("RGB")`` (an alpha band is dropped, not
    composited over white as CLIP's preprocessing does), :func:`resize_center_crop`, to [0, 1]
    (``uint8 / 255``), ``(x - mean) / std`` per channel."""
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean/std: expected 3 values each (RGB), got {len(mean)} and {len(std)}")
    img = resize_center_crop(_open(image, "image").convert("RGB"), size)
    pixels = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()  # [3, S, S]
    pixels = pixels.to(torch.float32).div(255)
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return (pixels - m) / s


def _float_map(array: Any, name: str) -> np.ndarray:
    a = np.asarray(array.detach().cpu() if isinstance(array, Tensor) else array)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2 or 0 in a.shape:
        raise ValueError(f"{name}: expected a single-channel map of shape [H, W] or [1, H, W], "
                         f"got shape {list(a.shape)}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{name}: expected float or integer values, got dtype {a.dtype}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: expected finite values, got NaN or infinity")
    return a


def _map_pixels(a: np.ndarray, size: int) -> Tensor:
    """float ``[H, W]`` -> float32 ``[1, size, size]`` through PIL's 32-bit float mode, so the
    resampling filter is the one images get."""
    from PIL import Image

    img = resize_center_crop(Image.fromarray(np.ascontiguousarray(a, dtype=np.float32), mode="F"), size)
    return torch.from_numpy(np.asarray(img, dtype=np.float32).copy())[None]


def depth_pixels(depth: Any, *, size: int = 224, is_disparity: bool = False) -> Tensor:
    """A depth map ``[H, W]`` (or ``[1, H, W]``; metres, 0 or less where missing) -> float32
    ``[1, size, size]`` disparity for the depth encoder.

    The official repository has no depth loader (``imagebind/data.py`` covers vision, text, audio
    and video only); its depth preprocessor takes ``[B, 1, 224, 224]``. The paper trains on
    SUN RGB-D depth converted to disparity (following Omnivore) for scale normalisation, so the
    choice here is: disparity ``1 / depth`` (0 where depth is missing; pass ``is_disparity=True``
    for a map that already is one), then the image geometry (:func:`resize_center_crop`, bicubic
    on 32-bit floats). No further normalisation: the release publishes no depth statistics."""
    a = _float_map(depth, "depth").astype(np.float64)
    if not is_disparity:
        valid = a > 0
        a = np.where(valid, 1.0 / np.where(valid, a, 1.0), 0.0)
    return _map_pixels(a, size)


def thermal_pixels(thermal: Any, *, size: int = 224) -> Tensor:
    """A thermal image -> float32 ``[1, size, size]`` in [0, 1] for the thermal encoder.

    The official repository has no thermal loader; its thermal preprocessor takes ``[B, 1, 224,
    224]`` and the paper trains on LLVIP's 8-bit infrared frames. The choice here applies the
    vision geometry without the RGB statistics: a path or ``PIL.Image`` is converted to 8-bit
    grayscale (``"L"``), :func:`resize_center_crop`, ``/ 255``; an array ``[H, W]`` (uint8, or float
    already in [0, 1]) is resized as 32-bit floats the same way."""
    from PIL import Image

    if isinstance(thermal, (str, os.PathLike, Image.Image)):
        img = resize_center_crop(_open(thermal, "thermal").convert("L"), size)
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())[None].to(torch.float32).div(255)
    a = _float_map(thermal, "thermal")
    return _map_pixels(a / 255.0 if a.dtype == np.uint8 else a, size)


# ---------------------------------------------------------------------------------------------
# IMU
# ---------------------------------------------------------------------------------------------


def imu_window(imu: Any, *, steps: int = IMU_STEPS) -> Tensor:
    """IMU readings float ``[6, T]`` (accelerometer xyz, gyroscope xyz, Ego4D's order) -> float32
    ``[6, steps]``: the first ``steps`` readings, zero-padded at the end when shorter (the rule
    the audio frames follow). The official repository has no IMU loader; its IMU preprocessor
    takes ``[B, 6, 2000]``. Resample to the rate the checkpoint was trained at before calling."""
    x = torch.as_tensor(np.asarray(imu) if not isinstance(imu, Tensor) else imu)
    if x.ndim != 2 or x.shape[0] != IMU_CHANNELS or x.shape[1] == 0:
        raise ValueError(f"imu: expected shape [{IMU_CHANNELS}, T] with T >= 1, got shape {list(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"imu: expected float readings, got dtype {x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError("imu: expected finite readings, got NaN or infinity")
    x = x.to(torch.float32)[:, :steps]
    return F.pad(x, (0, steps - x.shape[1]))
